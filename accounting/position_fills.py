"""What one fill does to the books: validated, exact, and computed before anything changes.

:func:`fill_effect` is pure: from a pending order, the position it trades and a fill, it returns
the replacement records and the deltas of the ledger's totals. The ledger applies an effect
only after it was computed in full, so a rejected fill can never leave the books half-changed.

Entry (BUY) fill — the fee is charged in the quote asset, or in the base asset received::

    consumption = cost + fee             # quote fee: capitalised into the cost basis
    consumption = cost                   # base fee: the position receives qty - fee instead
    take        = min(consumption, order.reserved)
    overrun     = consumption - take     # > 0 only if the estimate was too small: halt
    reserved_for_orders    -= take (+ the order's leftover when it completes)
    reserved_for_positions += consumption

Exit (SELL) fill::

    released = pro_rata(position.cost, qty, position.qty)   # the last slice takes the rest
    realized = (cost - fee) - released
    reserved_for_positions -= released
    realized_pnl           += realized
"""

from __future__ import annotations

from dataclasses import dataclass

from accounting.position_records import FillOutcome, PendingOrder, Position
from messages import (
    Fill,
    FundInvariantViolation,
    InvalidFill,
    Market,
    OverFill,
    Side,
    check_units,
    pro_rata,
    trusted,
    trusted_replace,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FillEffect:
    """The change one fill makes; ``None`` records mean "remove".

    Attributes:
        order: the order's replacement, or ``None`` when the fill completes it.
        position: the position's replacement, or ``None`` when an exit closes it (or when an
            entry whose base fee took its whole trade finds no position open).
        orders_delta: change of ``reserved_for_orders``.
        positions_delta: change of ``reserved_for_positions``.
        pnl_delta: change of ``realized_pnl``.
        outcome: what is reported to the caller.
    """

    order: PendingOrder | None
    position: Position | None
    orders_delta: int
    positions_delta: int
    pnl_delta: int
    outcome: FillOutcome


def check_fill(order: PendingOrder, fill: Fill, *, market: Market, quote_symbol: str) -> None:
    """Raise unless ``fill`` can apply to ``order`` (whose id it names).

    Raises:
        InvalidFill: symbol, side or fee asset differ; the cost lies outside the market's
            rounding bounds for qty x price; the price is through the order's limit.
        OverFill: the fill is larger than what remains of the order.
    """
    oid, tid = order.client_order_id, fill.trade_id
    if fill.symbol != order.symbol or fill.side is not order.side:
        raise InvalidFill(
            f"fill {tid} is a {fill.side} of {fill.symbol} but order {oid}"
            f" is a {order.side} of {order.symbol}"
        )
    base_fee = fill.fee_asset == market.base.symbol and order.side is Side.BUY
    if fill.fee_asset != quote_symbol and not base_fee:
        allowed = (
            quote_symbol if order.side is Side.SELL else f"{quote_symbol} or {market.base.symbol}"
        )
        raise InvalidFill(f"fill {tid} charged its fee in {fill.fee_asset}, expected {allowed}")
    if base_fee and fill.fee > fill.qty:
        # Equal is possible: a dust trade whose fee, rounded up, takes all of it (a 1-unit
        # slice at a 0.1 % fee). It happened, so it is booked (see _entry_effect); more than
        # the trade's qty cannot be taken from it.
        raise InvalidFill(f"fill {tid} fee {fill.fee} {fill.fee_asset} exceeds its qty {fill.qty}")
    low, high = market.valid_cost_bounds(fill.qty, fill.price)  # a Fill is valid
    if not low <= fill.cost <= high:
        raise InvalidFill(
            f"fill {tid} cost {fill.cost} is outside [{low}, {high}]"
            f" for qty {fill.qty} at {fill.price}"
        )
    limit = order.limit_price
    if limit is not None:
        through = fill.price > limit if order.side is Side.BUY else fill.price < limit
        if through:
            raise InvalidFill(
                f"fill {tid} price {fill.price} is through the {order.side} limit {limit}"
                f" of order {oid}"
            )
    if fill.qty > order.remaining:
        raise OverFill(f"fill qty {fill.qty} exceeds remaining {order.remaining} of order {oid}")


def fill_effect(
    order: PendingOrder, held: Position | None, fill: Fill, *, market: Market, quote_symbol: str
) -> FillEffect:
    """Validate ``fill`` against ``order`` and compute its effect on the books.

    Args:
        order: the pending order the fill names.
        held: the open position ``order.position_id``, or ``None`` if it is not open (only an
            entry may find it so).
        fill: the exchange trade.
        market: the order's market.
        quote_symbol: the ledger's quote asset; exit fees must be charged in it, entry fees in
            it or in the market's base asset.

    Raises:
        InvalidFill, OverFill: see :func:`check_fill`.
    """
    check_fill(order, fill, market=market, quote_symbol=quote_symbol)
    if order.side is Side.BUY:
        return _entry_effect(order, held, fill, fee_in_base=fill.fee_asset != quote_symbol)
    # Pending exits never promise more than their position holds (checked on reservation and
    # on rebuild), so an exit always finds its position open with at least fill.qty.
    if held is None:
        raise FundInvariantViolation(
            f"exit order {order.client_order_id} is pending but position {order.position_id}"
            " is not open"
        )
    return _exit_effect(order, held, fill)


def _entry_effect(
    order: PendingOrder, held: Position | None, fill: Fill, *, fee_in_base: bool
) -> FillEffect:
    consumption = fill.cost if fee_in_base else fill.cost + fill.fee
    received = fill.qty - fill.fee if fee_in_base else fill.qty
    take = min(consumption, order.reserved)
    filled = order.filled_qty + fill.qty
    completed = filled == order.qty
    released = order.reserved - take if completed else 0
    # Records below come from valid records and a valid fill (check_fill): built trusted.
    # Only the sums can leave the range of an amount; check them as the constructor would.
    to_positions, pnl_delta = consumption, 0
    position: Position | None
    if received == 0:
        # The base fee took the whole trade: nothing to hold, so what it cost is lost at once
        # (a realized loss), and the position, if any, is left as it was.
        position, to_positions, pnl_delta = held, 0, -consumption
    elif held is None:
        position = trusted(
            Position,
            position_id=order.position_id,
            symbol=order.symbol,
            qty=received,
            cost=check_units(consumption, name="cost"),
        )
    else:
        position = trusted_replace(
            held,
            qty=check_units(held.qty + received, name="qty"),
            cost=check_units(held.cost + consumption, name="cost"),
        )
    return FillEffect(
        order=None
        if completed
        else trusted_replace(order, filled_qty=filled, reserved=order.reserved - take),
        position=position,
        orders_delta=-(take + released),
        positions_delta=to_positions,
        pnl_delta=pnl_delta,
        outcome=FillOutcome(
            trade_id=fill.trade_id,
            client_order_id=order.client_order_id,
            applied=True,
            order_completed=completed,
            consumed=consumption,
            released=released,
            overrun=consumption - take,
        ),
    )


def _exit_effect(order: PendingOrder, held: Position, fill: Fill) -> FillEffect:
    released = pro_rata(held.cost, fill.qty, held.qty)
    realized = fill.cost - fill.fee - released
    filled = order.filled_qty + fill.qty
    completed = filled == order.qty
    closed = fill.qty == held.qty
    return FillEffect(
        order=None if completed else trusted_replace(order, filled_qty=filled),
        position=None
        if closed
        else trusted_replace(held, qty=held.qty - fill.qty, cost=held.cost - released),
        orders_delta=0,
        positions_delta=-released,
        pnl_delta=realized,
        outcome=FillOutcome(
            trade_id=fill.trade_id,
            client_order_id=order.client_order_id,
            applied=True,
            order_completed=completed,
            position_closed=closed,
            released=released,
            realized=realized,
        ),
    )
