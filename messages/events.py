"""Events: facts that happened (past tense). Exchange facts first."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from messages._checks import check_bool, check_code, check_count, check_optional_id, check_text
from messages.base import Message, Side, check_enum, check_id
from messages.errors import InvalidMessage
from messages.money import check_price, check_units


class Liquidity(enum.StrEnum):
    """Whether a fill added (maker) or took (taker) liquidity."""

    MAKER = "maker"
    TAKER = "taker"


@dataclass(frozen=True, slots=True, kw_only=True)
class Fill(Message):
    """One exchange trade against one of our orders (ccxt's trade structure, exact units).

    Attributes:
        trade_id: the exchange's unique trade id; the idempotency key of the fill.
        order_id: the exchange's order id.
        client_order_id: our deterministic client order id for the order.
        symbol: market symbol, e.g. ``"BTC/USDT"``.
        side: side of *our* order.
        qty: filled base quantity, minor units, > 0.
        price: execution price (quote per base, major units).
        cost: quote minor units that changed hands, as the exchange rounded them; must lie
            within ``[floor(qty*price), ceil(qty*price)]``.
        fee: fee charged, minor units of ``fee_asset``, >= 0.
        fee_asset: symbol of the asset the fee was charged in.
        liquidity: maker or taker.
    """

    trade_id: str
    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: int
    price: Decimal
    cost: int
    fee: int
    fee_asset: str
    liquidity: Liquidity = Liquidity.MAKER

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id(self.trade_id, name="trade_id")
        check_id(self.order_id, name="order_id")
        check_id(self.client_order_id, name="client_order_id")
        check_id(self.symbol, name="symbol")
        check_enum(self.side, Side, name="side")
        check_units(self.qty, name="qty", allow_zero=False)
        check_price(self.price)
        check_units(self.cost, name="cost")
        check_units(self.fee, name="fee")
        check_id(self.fee_asset, name="fee_asset")
        check_enum(self.liquidity, Liquidity, name="liquidity")


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderAccepted(Message):
    """The exchange acknowledged one of our orders.

    Attributes:
        profile_id: the owning profile, if the reporter knows it (the exchange does not).
        client_order_id: our order id.
        exchange_order_id: the exchange's order id.
        symbol: market symbol.
        side: buy or sell.
        qty: base quantity, minor units, > 0.
        price: limit price, or ``None`` for a market order.
    """

    profile_id: str | None = None
    client_order_id: str
    exchange_order_id: str
    symbol: str
    side: Side
    qty: int
    price: Decimal | None = None

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_optional_id(self.profile_id, name="profile_id")
        check_id(self.client_order_id, name="client_order_id")
        check_id(self.exchange_order_id, name="exchange_order_id")
        check_id(self.symbol, name="symbol")
        check_enum(self.side, Side, name="side")
        check_units(self.qty, name="qty", allow_zero=False)
        if self.price is not None:
            check_price(self.price)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRejected(Message):
    """The exchange refused one of our orders; nothing of it exists there.

    Attributes:
        profile_id: the owning profile, if the reporter knows it.
        client_order_id: our order id.
        reason: the exchange's explanation, free text.
    """

    profile_id: str | None = None
    client_order_id: str
    reason: str

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_optional_id(self.profile_id, name="profile_id")
        check_id(self.client_order_id, name="client_order_id")
        check_text(self.reason, name="reason")


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCanceled(Message):
    """One of our orders was canceled at the exchange; what it had not filled is released.

    Attributes:
        profile_id: the owning profile, if the reporter knows it.
        client_order_id: our order id.
        exchange_order_id: the exchange's order id.
        remaining: base minor units that were still open when it was canceled, >= 0.
    """

    profile_id: str | None = None
    client_order_id: str
    exchange_order_id: str
    remaining: int

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_optional_id(self.profile_id, name="profile_id")
        check_id(self.client_order_id, name="client_order_id")
        check_id(self.exchange_order_id, name="exchange_order_id")
        check_units(self.remaining, name="remaining")


@dataclass(frozen=True, slots=True, kw_only=True)
class BootstrapStarted(Message):
    """A profile began rebuilding its books; fills for it queue until it completes.

    Attributes:
        profile_id: the profile.
    """

    profile_id: str

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id(self.profile_id, name="profile_id")


@dataclass(frozen=True, slots=True, kw_only=True)
class BootstrapCompleted(Message):
    """A profile finished rebuilding its books and processes fills again.

    Attributes:
        profile_id: the profile.
        replayed: how many journaled fills were replayed, >= 0.
    """

    profile_id: str
    replayed: int

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id(self.profile_id, name="profile_id")
        check_count(self.replayed, name="replayed")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservationRejected(Message):
    """A profile refused to reserve capital for an order or a signal; nothing was reserved.

    Attributes:
        profile_id: the profile.
        client_order_id: the order the reservation was for, if any.
        signal_id: the signal the reservation was for, if any (at least one of the two).
        reason: a reason code, e.g. ``"insufficient_capital"`` (an error's ``reason``).
        needed: minor units the reservation needed, >= 0.
        available: minor units available at the time; negative while the profile is halted.
        detail: a human-readable explanation.
    """

    profile_id: str
    client_order_id: str | None = None
    signal_id: str | None = None
    reason: str
    needed: int
    available: int
    detail: str

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id(self.profile_id, name="profile_id")
        check_optional_id(self.client_order_id, name="client_order_id")
        check_optional_id(self.signal_id, name="signal_id")
        if self.client_order_id is None and self.signal_id is None:
            raise InvalidMessage("ReservationRejected needs a client_order_id or a signal_id")
        check_code(self.reason, name="reason")
        check_units(self.needed, name="needed")
        check_units(self.available, name="available", allow_negative=True)
        check_text(self.detail, name="detail")


@dataclass(frozen=True, slots=True, kw_only=True)
class FillApplied(Message):
    """A profile booked a fill (or recognised it as already booked).

    Attributes:
        profile_id: the profile.
        trade_id: the fill's trade id.
        client_order_id: the order it filled.
        qty: filled base quantity, minor units, > 0.
        duplicate: ``True`` when the trade id was already booked and nothing changed.
    """

    profile_id: str
    trade_id: str
    client_order_id: str
    qty: int
    duplicate: bool

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id(self.profile_id, name="profile_id")
        check_id(self.trade_id, name="trade_id")
        check_id(self.client_order_id, name="client_order_id")
        check_units(self.qty, name="qty", allow_zero=False)
        check_bool(self.duplicate, name="duplicate")


@dataclass(frozen=True, slots=True, kw_only=True)
class FillRejected(Message):
    """A fill could not be booked; the books are unchanged.

    Attributes:
        profile_id: the profile, if the fill could be routed to one.
        trade_id: the fill's trade id.
        reason: a reason code, e.g. ``"over_fill"`` or ``"unknown_order"``.
        detail: a human-readable explanation.
    """

    profile_id: str | None = None
    trade_id: str
    reason: str
    detail: str

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_optional_id(self.profile_id, name="profile_id")
        check_id(self.trade_id, name="trade_id")
        check_code(self.reason, name="reason")
        check_text(self.detail, name="detail")


@dataclass(frozen=True, slots=True, kw_only=True)
class InvariantViolated(Message):
    """A profile's books failed an exact invariant check (a bug); the profile halts.

    Attributes:
        profile_id: the profile.
        detail: what did not add up, e.g. the ``FundInvariantViolation`` message.
    """

    profile_id: str
    detail: str

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id(self.profile_id, name="profile_id")
        check_text(self.detail, name="detail")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLettered(Message):
    """A message crashed its profile ``attempts`` times and was set aside, unapplied.

    Attributes:
        profile_id: the profile it was for.
        seq: its sequence number in that profile's input, >= 0.
        payload_type: the class name of the message, e.g. ``"Fill"``.
        error: the last error it caused.
        attempts: how many times it was tried, > 0.
    """

    profile_id: str
    seq: int
    payload_type: str
    error: str
    attempts: int

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id(self.profile_id, name="profile_id")
        check_count(self.seq, name="seq")
        check_id(self.payload_type, name="payload_type")
        check_text(self.error, name="error")
        check_count(self.attempts, name="attempts", allow_zero=False)
