"""Commands: requests to do something (imperative). Each may be refused with an event.

Quantities are ``int`` minor units (``qty`` in base units, ``estimate`` and budgets in the units
their field names); prices and grid ratios are exact ``Decimal``. Nothing here imports
``accounting``: a command carries plain values and the receiver builds its own state from them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from messages._checks import check_count, check_optional_id
from messages.base import Message, Side, check_enum, check_id
from messages.errors import InvalidAmount, InvalidMessage
from messages.money import check_price, check_units


class OrderType(enum.StrEnum):
    """Order type, spelled as ccxt spells it."""

    LIMIT = "limit"
    MARKET = "market"


def _check_optional_price(value: object, *, name: str) -> Decimal | None:
    return None if value is None else check_price(value, name=name)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenPosition(Message):
    """A signal to open (buy into) a position.

    Attributes:
        profile_id: the profile that trades.
        signal_id: the signal's id; with ``profile_id`` it keys the deterministic order id.
        symbol: market symbol, e.g. ``"BTC/USDT"``.
        position_id: the position this entry opens.
        qty: base quantity to buy, minor units, > 0.
        limit_price: limit price, or ``None`` for a market order.
        estimate: quote minor units to reserve (> 0), or ``None`` to let the receiver derive
            it (``qty * limit_price`` rounded up, or from its last price for a market entry).
    """

    profile_id: str
    signal_id: str
    symbol: str
    position_id: str
    qty: int
    limit_price: Decimal | None = None
    estimate: int | None = None

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id(self.profile_id, name="profile_id")
        check_id(self.signal_id, name="signal_id")
        check_id(self.symbol, name="symbol")
        check_id(self.position_id, name="position_id")
        check_units(self.qty, name="qty", allow_zero=False)
        _check_optional_price(self.limit_price, name="limit_price")
        if self.estimate is not None:
            check_units(self.estimate, name="estimate", allow_zero=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClosePosition(Message):
    """A signal to close (sell out of) all or part of a position.

    Attributes:
        profile_id: the profile that trades.
        signal_id: the signal's id.
        symbol: market symbol.
        position_id: the position to reduce.
        qty: base quantity to sell, minor units, > 0; ``None`` closes all of it.
        limit_price: limit price, or ``None`` for a market order.
    """

    profile_id: str
    signal_id: str
    symbol: str
    position_id: str
    qty: int | None = None
    limit_price: Decimal | None = None

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id(self.profile_id, name="profile_id")
        check_id(self.signal_id, name="signal_id")
        check_id(self.symbol, name="symbol")
        check_id(self.position_id, name="position_id")
        if self.qty is not None:
            check_units(self.qty, name="qty", allow_zero=False)
        _check_optional_price(self.limit_price, name="limit_price")


@dataclass(frozen=True, slots=True, kw_only=True)
class StartGrid(Message):
    """Start a grid on one market for a profile, with exact parameters.

    Levels are geometric around ``center_price`` with ratio ``increment`` between
    ``min_price`` and ``max_price``. Rules that need the grid maths (e.g. the spread being wide
    enough for the increment) are the grid's to check: it raises ``InvalidConfig``.

    Attributes:
        profile_id: the grid's profile.
        symbol: market symbol.
        center_price: price the grid is laid out around; within ``[min_price, max_price]``.
        increment: ratio between neighbouring levels, e.g. ``Decimal("0.01")``; in (0, 1).
        target_spread: ratio between the best buy and the best sell, > 0.
        min_price: lowest level, < ``max_price``.
        max_price: highest level.
        active_orders: how many slots per side are placed on the exchange, > 0.
        budget_base: base minor units committed to the sell side, >= 0.
        budget_quote: quote minor units committed to the buy side, >= 0 (not both 0).
    """

    profile_id: str
    symbol: str
    center_price: Decimal
    increment: Decimal
    target_spread: Decimal
    min_price: Decimal
    max_price: Decimal
    active_orders: int
    budget_base: int
    budget_quote: int

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id(self.profile_id, name="profile_id")
        check_id(self.symbol, name="symbol")
        check_price(self.center_price, name="center_price")
        check_price(self.increment, name="increment")
        if self.increment >= 1:
            raise InvalidAmount(f"increment must be below 1, got {self.increment}")
        check_price(self.target_spread, name="target_spread")
        check_price(self.min_price, name="min_price")
        check_price(self.max_price, name="max_price")
        if self.min_price >= self.max_price:
            raise InvalidMessage(
                f"min_price {self.min_price} must be below max_price {self.max_price}"
            )
        if not self.min_price <= self.center_price <= self.max_price:
            raise InvalidMessage(
                f"center_price {self.center_price} must lie within"
                f" [{self.min_price}, {self.max_price}]"
            )
        check_count(self.active_orders, name="active_orders", allow_zero=False)
        check_units(self.budget_base, name="budget_base")
        check_units(self.budget_quote, name="budget_quote")
        if self.budget_base == 0 and self.budget_quote == 0:
            raise InvalidAmount("budget_base and budget_quote are both 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaceOrder(Message):
    """Place one order on the exchange.

    Attributes:
        profile_id: the profile that owns the order.
        client_order_id: our deterministic order id (idempotency key at the exchange).
        symbol: market symbol.
        side: buy or sell.
        qty: base quantity, minor units, > 0.
        price: limit price; required for a limit order, ``None`` for a market order.
        order_type: limit or market.
    """

    profile_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: int
    price: Decimal | None
    order_type: OrderType

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id(self.profile_id, name="profile_id")
        check_id(self.client_order_id, name="client_order_id")
        check_id(self.symbol, name="symbol")
        check_enum(self.side, Side, name="side")
        check_units(self.qty, name="qty", allow_zero=False)
        _check_optional_price(self.price, name="price")
        check_enum(self.order_type, OrderType, name="order_type")
        if self.order_type is OrderType.LIMIT and self.price is None:
            raise InvalidMessage("a limit order needs a price, got None")
        if self.order_type is OrderType.MARKET and self.price is not None:
            raise InvalidMessage(f"a market order takes no price, got {self.price}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelOrder(Message):
    """Cancel one of a profile's orders.

    Attributes:
        profile_id: the profile that owns the order.
        client_order_id: our order id.
        exchange_order_id: the exchange's id, if it has acknowledged the order.
    """

    profile_id: str
    client_order_id: str
    exchange_order_id: str | None = None

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id(self.profile_id, name="profile_id")
        check_id(self.client_order_id, name="client_order_id")
        check_optional_id(self.exchange_order_id, name="exchange_order_id")


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceTick(Message):
    """Apply a new market price (market-wide: it concerns no single profile).

    Attributes:
        symbol: market symbol.
        price: the last price, quote per base, major units.
    """

    symbol: str
    price: Decimal

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id(self.symbol, name="symbol")
        check_price(self.price)


@dataclass(frozen=True, slots=True, kw_only=True)
class CrashProfile(Message):
    """Make a profile's actor crash, for recovery drills.

    Attributes:
        profile_id: the profile to crash.
    """

    profile_id: str

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id(self.profile_id, name="profile_id")
