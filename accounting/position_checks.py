"""Whole-book checks of the position ledger: a consistent set of records, and exact totals.

:func:`check_book` guards the doors through which records enter in bulk (restart rebuild and
snapshot decode); :func:`invariant_problems` lists every way the ledger's books fail to add up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from accounting.position_records import PendingOrder, Position
from messages import InvalidMessage, Market, Side


def check_book(
    orders: Sequence[PendingOrder], positions: Sequence[Position], markets: Mapping[str, Market]
) -> None:
    """Raise unless ``orders`` and ``positions`` can be the books of a profile on ``markets``.

    Raises:
        InvalidMessage: an item is not a record, an id repeats, a symbol is not a market, an
            order's position trades another symbol, or an exit names a position that is not
            open or, with the other exits of that position, promises more than it holds.
    """
    for order in orders:
        if not isinstance(order, PendingOrder):
            raise InvalidMessage(f"pending orders must be PendingOrder records, got {order!r}")
    for position in positions:
        if not isinstance(position, Position):
            raise InvalidMessage(f"open positions must be Position records, got {position!r}")
    _unique("order", [o.client_order_id for o in orders])
    _unique("position", [p.position_id for p in positions])
    symbols: dict[str, str] = {}
    records: list[PendingOrder | Position] = [*positions, *orders]
    for record in records:
        if record.symbol not in markets:
            raise InvalidMessage(f"symbol {record.symbol!r} is not a market of the profile")
        held = symbols.setdefault(record.position_id, record.symbol)
        if held != record.symbol:
            raise InvalidMessage(
                f"position {record.position_id} trades {held}, not {record.symbol}"
            )
    by_id = {p.position_id: p for p in positions}
    for position_id, qty in sorted(_exit_qty(orders).items()):
        held_qty = by_id[position_id].qty if position_id in by_id else 0
        if qty > held_qty:
            raise InvalidMessage(
                f"pending exits of position {position_id} sell {qty} but it holds {held_qty}"
            )


def invariant_problems(
    *,
    totals: Mapping[str, int],
    halted: bool,
    orders: Mapping[str, PendingOrder],
    positions: Mapping[str, Position],
) -> list[str]:
    """Every way the books fail to add up; empty when they do.

    Args:
        totals: the ledger's components and ``available``, by name.
        halted: whether the profile is halted (then ``available`` may be negative).
        orders: pending orders by client order id.
        positions: open positions by position id.
    """
    problems = [
        f"{name} is negative"
        for name, value in totals.items()
        if name not in {"realized_pnl", "available"} and value < 0
    ]
    order_sum = sum(o.reserved for o in orders.values())
    if totals["reserved_for_orders"] != order_sum:
        problems.append(f"reserved_for_orders is not the {order_sum} reserved by orders")
    position_sum = sum(p.cost for p in positions.values())
    if totals["reserved_for_positions"] != position_sum:
        problems.append(f"reserved_for_positions is not the {position_sum} cost of positions")
    if totals["available"] < 0 and not halted:
        problems.append("available is negative but the profile is not halted")
    for oid, order in sorted(orders.items()):
        if order.filled_qty >= order.qty or order.reserved < 0:
            problems.append(
                f"order {oid} has filled_qty {order.filled_qty} of qty {order.qty}"
                f" and reserved {order.reserved}"
            )
    for pid, position in sorted(positions.items()):
        if position.qty <= 0:
            problems.append(f"position {pid} has qty {position.qty}")
    for pid, qty in sorted(_exit_qty(orders.values()).items()):
        held = positions[pid].qty if pid in positions else 0
        if qty > held:
            problems.append(f"pending exits of position {pid} sell {qty} but it holds {held}")
    return problems


def books_add_up(
    *,
    totals: tuple[int, int, int, int, int],
    halted: bool,
    orders: Mapping[str, PendingOrder],
    positions: Mapping[str, Position],
) -> bool:
    """Whether :func:`invariant_problems` would find nothing: one pass, no report built.

    The check that runs after every message, so it allocates nothing while the books add up
    and leaves the report to :func:`invariant_problems` when they do not. The two must agree
    (``tests/accounting/test_position_fast_paths.py``).

    Args:
        totals: ``allocated_capital``, ``reserved_for_orders``, ``reserved_for_positions``,
            ``fees_paid`` and ``available``, in that order.
        halted: whether the profile is halted (then ``available`` may be negative).
        orders: pending orders by client order id.
        positions: open positions by position id.
    """
    allocated, for_orders, for_positions, fees_paid, available = totals
    if allocated < 0 or for_orders < 0 or for_positions < 0 or fees_paid < 0:
        return False
    if available < 0 and not halted:
        return False
    reserved = 0
    exits: dict[str, int] | None = None
    for order in orders.values():
        if order.filled_qty >= order.qty or order.reserved < 0:
            return False
        reserved += order.reserved
        if order.side is Side.SELL:
            exits = {} if exits is None else exits
            exits[order.position_id] = exits.get(order.position_id, 0) + order.remaining
    if reserved != for_orders:
        return False
    cost = 0
    for position in positions.values():
        if position.qty <= 0:
            return False
        cost += position.cost
    if cost != for_positions:
        return False
    if exits is not None:
        for position_id, qty in exits.items():
            held = positions.get(position_id)
            if qty > (0 if held is None else held.qty):
                return False
    return True


def _unique(kind: str, ids: list[str]) -> None:
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        raise InvalidMessage(f"{kind} ids repeat: {repeated}")


def _exit_qty(orders: Iterable[PendingOrder]) -> Counter[str]:
    """Remaining qty of pending exits, by position id."""
    exits = Counter[str]()
    for order in orders:
        if order.side is Side.SELL:
            exits[order.position_id] += order.remaining
    return exits
