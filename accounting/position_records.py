"""Records of the position ledger: pending orders, open positions and fill outcomes.

Quantities are ``int`` minor units of a market's base asset; reservations, costs and PnL are
``int`` minor units of the profile's quote asset. Records are immutable values validated on
construction; the ledger replaces them, it never mutates them. A replacement computed from
valid records and a validated fill is built with ``messages.trusted_replace`` (no second
validation on every fill); the ledger's invariant check covers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from messages import (
    InvalidAmount,
    Market,
    Rounding,
    Side,
    check_enum,
    check_id,
    check_price,
    check_ratio,
    check_units,
    fee_for,
)

#: Fee rate the default entry reservation covers (0.1 %, a common taker fee).
DEFAULT_MAX_FEE_RATE = Decimal("0.001")


def entry_estimate(market: Market, qty: int, limit_price: Decimal, max_fee_rate: Decimal) -> int:
    """The default reservation for an entry (BUY) order: its notional plus its largest fee.

    ``ceil(qty * limit) + ceil(ceil(qty * limit) * max_fee_rate)``, in quote minor units. It
    bounds the cost plus fee of any single fill of the whole order at or below the limit price
    with a fee rate of at most ``max_fee_rate``.

    Args:
        market: the market the order trades.
        qty: order quantity, base minor units, > 0.
        limit_price: the order's limit price (quote per base, major units).
        max_fee_rate: the largest fee rate the exchange may charge, e.g. ``Decimal("0.001")``.

    Returns:
        The reservation in quote minor units.
    """
    check_units(qty, name="qty", allow_zero=False)
    check_ratio(max_fee_rate, name="max_fee_rate", low=Decimal(0), high=Decimal(1))
    notional = market.notional(qty, limit_price, Rounding.UP)
    return notional + fee_for(notional, max_fee_rate, Rounding.UP)


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingOrder:
    """An order of the profile that the exchange may still fill.

    Attributes:
        client_order_id: our deterministic client order id; the key fills arrive with.
        symbol: the market symbol, e.g. ``"BTC/USDT"``.
        side: ``Side.BUY`` opens or adds to a position (entry); ``Side.SELL`` reduces it (exit).
        position_id: the position the order opens, adds to or reduces.
        qty: order quantity, base minor units, > 0.
        limit_price: the limit price, or ``None`` for a market order.
        reserved: quote minor units still reserved for the unfilled part (always 0 for exits).
        filled_qty: base minor units filled so far, ``0 <= filled_qty < qty``.
    """

    client_order_id: str
    symbol: str
    side: Side
    position_id: str
    qty: int
    limit_price: Decimal | None
    reserved: int
    filled_qty: int = 0

    def __post_init__(self) -> None:
        check_id(self.client_order_id, name="client_order_id")
        check_id(self.symbol, name="symbol")
        check_enum(self.side, Side, name="side")
        check_id(self.position_id, name="position_id")
        check_units(self.qty, name="qty", allow_zero=False)
        if self.limit_price is not None:
            check_price(self.limit_price, name="limit_price")
        check_units(self.reserved, name="reserved")
        check_units(self.filled_qty, name="filled_qty")
        if self.filled_qty >= self.qty:
            raise InvalidAmount(
                f"order {self.client_order_id} filled_qty {self.filled_qty}"
                f" must be below its qty {self.qty}"
            )
        if self.side is Side.SELL and self.reserved != 0:
            raise InvalidAmount(
                f"exit order {self.client_order_id} reserves no capital, got reserved"
                f" {self.reserved}"
            )

    @property
    def remaining(self) -> int:
        """Base minor units not filled yet."""
        return self.qty - self.filled_qty


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """An open position: what the profile holds of one market, and what it paid for it.

    Attributes:
        position_id: the position's id, chosen by whoever opened it.
        symbol: the market symbol.
        qty: base minor units held, > 0 (a position at 0 is closed and no longer recorded).
        cost: cost basis in quote minor units, entry fees included; this is also exactly what
            the position holds in the ledger's ``reserved_for_positions``.
    """

    position_id: str
    symbol: str
    qty: int
    cost: int

    def __post_init__(self) -> None:
        check_id(self.position_id, name="position_id")
        check_id(self.symbol, name="symbol")
        check_units(self.qty, name="qty", allow_zero=False)
        check_units(self.cost, name="cost")


@dataclass(frozen=True, slots=True, kw_only=True)
class FillOutcome:
    """What one :meth:`PositionLedger.apply_fill` call did to the books.

    Attributes:
        trade_id: the fill's trade id.
        client_order_id: the order the fill named.
        applied: whether the fill changed the books (``False`` only for a duplicate).
        duplicate: the trade id was applied before; nothing changed.
        order_completed: the order is now completely filled and no longer pending.
        position_closed: an exit sold the last of the position; it is no longer open.
        consumed: entry only: cost plus fee moved into the position's cost basis.
        released: quote units freed from a reservation: for an entry, the order's leftover
            reservation when it completes; for an exit, the slice of cost basis sold.
        realized: change of ``realized_pnl`` (exit only): proceeds minus the released basis.
        overrun: entry only: consumption beyond the order's reservation (normally 0; a
            positive overrun halts the profile).
    """

    trade_id: str
    client_order_id: str
    applied: bool
    duplicate: bool = False
    order_completed: bool = False
    position_closed: bool = False
    consumed: int = 0
    released: int = 0
    realized: int = 0
    overrun: int = 0
