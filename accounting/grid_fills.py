"""Validation and effect of one fill on one grid order: pure functions of records.

The book (:mod:`accounting.grid_funds`) handles duplicates, unknown orders and the implicit
confirmation of an in-flight order, then asks here whether the fill fits its order and what it
changes. Nothing here mutates anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from accounting.grid import worth_in_other_asset
from accounting.grid_records import GridOrder
from messages import Fill, InvalidFill, Market, OverFill, Side, trusted_replace


@dataclass(frozen=True, slots=True, kw_only=True)
class FillEffect:
    """What one fill does to its order and to the two balances.

    Attributes:
        order: the order after the fill (its remaining and filled quantity reduced).
        full: the order is done: nothing left to fill, or the remainder rounds to zero.
        spent: units of the sold asset that left ``total`` (and the order's remaining).
        received: net proceeds in the bought asset, into ``total``, ``free`` and cache funds.
        released: a full order's leftover in the sold asset, returned to ``free``.
    """

    order: GridOrder
    full: bool
    spent: int
    received: int
    released: int


def check_fill(order: GridOrder, fill: Fill, market: Market) -> None:
    """Raise InvalidFill or OverFill if ``fill`` cannot apply to ``order``."""
    tid, oid = fill.trade_id, order.order_id
    if fill.symbol != market.symbol:
        raise InvalidFill(f"fill {tid} is for {fill.symbol}, order {oid} trades {market.symbol}")
    if fill.side is not order.side:
        raise InvalidFill(f"fill {tid} is a {fill.side} fill, order {oid} is a {order.side} order")
    if order.exchange_id is not None and fill.order_id != order.exchange_id:
        raise InvalidFill(
            f"fill {tid} names exchange order {fill.order_id}, order {oid} is {order.exchange_id}"
        )
    bought = market.base if order.side is Side.BUY else market.quote
    if fill.fee > 0 and fill.fee_asset != bought.symbol:
        raise InvalidFill(
            f"fill {tid} charges its fee in {fill.fee_asset}, expected {bought.symbol},"
            f" the asset the {order.side} order receives"
        )
    if order.side is Side.BUY and fill.price > order.price:
        raise InvalidFill(f"fill {tid} price {fill.price} is above the buy limit {order.price}")
    if order.side is Side.SELL and fill.price < order.price:
        raise InvalidFill(f"fill {tid} price {fill.price} is below the sell limit {order.price}")
    low, high = market.valid_cost_bounds(fill.qty, fill.price)  # a Fill is valid
    if not low <= fill.cost <= high:
        raise InvalidFill(
            f"fill {tid} cost {fill.cost} is outside [{low}, {high}] for qty {fill.qty}"
            f" at {fill.price}"
        )
    if fill.qty > order.qty_left:
        raise OverFill(f"fill qty {fill.qty} exceeds remaining {order.qty_left} of order {oid}")
    if order.side is Side.BUY and fill.cost > order.remaining:
        raise OverFill(f"fill cost {fill.cost} exceeds remaining {order.remaining} of order {oid}")
    gross = fill.qty if order.side is Side.BUY else fill.cost
    if fill.fee > gross:
        raise InvalidFill(f"fill {tid} fee {fill.fee} exceeds the {gross} {bought.symbol} received")


def fill_effect(order: GridOrder, fill: Fill, market: Market) -> FillEffect:
    """The effect of a fill that passed :func:`check_fill`.

    BUY (sells quote): ``cost`` quote leaves, ``qty - fee`` base arrives. SELL (sells base):
    ``qty`` base leaves, ``cost - fee`` quote arrives. A remainder worth less than one unit of
    the other asset at the order's price counts as full and is released.
    """
    if order.side is Side.BUY:
        spent, received = fill.cost, fill.qty - fill.fee
    else:
        spent, received = fill.qty, fill.cost - fill.fee
    # check_fill keeps both within the order's bounds; the book's invariants check the rest.
    after = trusted_replace(
        order, remaining=order.remaining - spent, filled_qty=order.filled_qty + fill.qty
    )
    full = (
        after.qty_left == 0
        or worth_in_other_asset(market, order.side, after.remaining, order.price) == 0
    )
    return FillEffect(
        order=after,
        full=full,
        spent=spent,
        received=received,
        released=after.remaining if full else 0,
    )
