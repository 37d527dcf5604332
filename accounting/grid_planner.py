"""The rebalance planner: a pure function from a grid book to a list of actions.

:func:`plan_rebalance` never changes the book. Each action it returns is applied with
:func:`apply_action`, which performs only the *book side* of the action (putting a placement in
flight, detaching an order for cancellation, re-earmarking a slot) and tells the caller what to
send to the exchange. Applied in order right after planning, no action of a plan is refused:
the planner tracks the capital each action takes exactly as the book checks it.

Per side, the ``active_orders`` slots nearest the spread should hold orders:

* a free VIRTUAL slot among them (not a pending rotation's target) is a *shortage*;
* an OPEN order beyond them, or on a slot whose role is no longer its side, is a *surplus*
  (role mismatches first, then furthest from the spread first);
* surplus + shortage -> :class:`RotateOrder` (the first surplus whose capital, with what is
  available, gives the target at least ``min_target_ratio`` of its ideal; if none can, the
  shortage is skipped); shortage alone -> :class:`CreateOrder`;
  surplus alone -> :class:`CancelOrder`; dust partials on *both* sides -> :class:`CancelOrder`;
* earmarks above their ideal shrink first, and leftover capital grows the earmarks of the
  virtual slots beyond the window toward their ideal (:class:`ResizeVirtual`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from accounting.grid import exchange_qty, is_dust, min_target
from accounting.grid_funds import GridBook
from accounting.grid_records import GridFillOutcome, GridOrder, OrderStatus, Placement
from messages import InvalidMessage, Side, check_id, check_units


def _slot_index(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidMessage(f"slot must be a non-negative int, got {value!r}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateOrder:
    """Place a new order of ``size`` on a free slot; ``seq`` is the id's sequence number."""

    slot: int
    size: int
    client_order_id: str
    seq: int

    def __post_init__(self) -> None:
        _slot_index(self.slot)
        check_units(self.size, name="size", allow_zero=False)
        check_id(self.client_order_id, name="client_order_id")
        check_units(self.seq, name="seq")


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelOrder:
    """Cancel an OPEN order (a surplus without a shortage, or a dust partial)."""

    order_id: str

    def __post_init__(self) -> None:
        check_id(self.order_id, name="order_id")


@dataclass(frozen=True, slots=True, kw_only=True)
class RotateOrder:
    """Cancel the surplus ``order_id``; once the cancel confirms, place ``size`` on ``slot``."""

    order_id: str
    slot: int
    size: int
    client_order_id: str
    seq: int

    def __post_init__(self) -> None:
        check_id(self.order_id, name="order_id")
        _slot_index(self.slot)
        check_units(self.size, name="size", allow_zero=False)
        check_id(self.client_order_id, name="client_order_id")
        check_units(self.seq, name="seq")


@dataclass(frozen=True, slots=True, kw_only=True)
class ResizeVirtual:
    """Re-earmark a free VIRTUAL slot (book only, nothing is sent)."""

    slot: int
    size: int

    def __post_init__(self) -> None:
        _slot_index(self.slot)
        check_units(self.size, name="size")


Action = CreateOrder | CancelOrder | RotateOrder | ResizeVirtual


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRequest:
    """A cancel to send to the exchange (the book already detached the order)."""

    order_id: str
    exchange_id: str | None


def dust_orders(book: GridBook) -> dict[Side, list[GridOrder]]:
    """Per side, the OPEN partials whose remaining is below ``dust_ratio`` of their ideal."""
    found: dict[Side, list[GridOrder]] = {Side.BUY: [], Side.SELL: []}
    ideals = {side: book.ideal_sizes(side) for side in Side}
    for oid in sorted(book.orders):
        order = book.orders[oid]
        if order.status is not OrderStatus.OPEN or order.slot is None or not order.filled_qty:
            continue
        ideal = ideals[order.side].get(order.slot)
        if ideal is not None and is_dust(order.remaining, ideal, book.config.dust_ratio):
            found[order.side].append(order)
    return found


def should_rebalance(book: GridBook, fill_outcomes: Iterable[GridFillOutcome]) -> bool:
    """True on any full fill, or when *both* sides hold dust (one side alone is not enough)."""
    if any(o.full and not o.duplicate for o in fill_outcomes):
        return True
    dust = dust_orders(book)
    return bool(dust[Side.BUY]) and bool(dust[Side.SELL])


def _surplus(book: GridBook, side: Side, window: Sequence[int]) -> list[GridOrder]:
    """OPEN orders of ``side`` off their side's window: role mismatches first, then furthest."""
    inside = set(window)
    nearest = book.side_slots(Side.SELL).start  # first SELL slot; distances are from the spread
    found = []
    for order in book.orders.values():
        if order.side is not side or order.status is not OrderStatus.OPEN:
            continue
        assert order.slot is not None  # open orders sit on a slot
        mismatch = book.slots[order.slot].role.side is not side
        if mismatch or order.slot not in inside:
            distance = nearest - order.slot if side is Side.BUY else order.slot - nearest
            found.append((not mismatch, -distance, order.order_id, order))
    return [entry[3] for entry in sorted(found)]


@dataclass(slots=True)
class _Draft:
    """A plan under construction: the actions so far, and the capital they leave."""

    headroom: dict[str, int]
    seq: int
    shrinks: list[Action] = field(default_factory=list)
    moves: list[Action] = field(default_factory=list)
    cancels: list[Action] = field(default_factory=list)
    grows: list[Action] = field(default_factory=list)

    def next_id(self, book: GridBook, slot: int) -> tuple[str, int]:
        seq, self.seq = self.seq, self.seq + 1
        return book.client_order_id(slot, seq), seq


def _fill_window(book: GridBook, side: Side, draft: _Draft, earmark: dict[int, int]) -> None:
    """Rotations and creates for the shortages of ``side``; cancels for unpaired surpluses."""
    cfg, slots = book.config, book.slots
    asset = cfg.asset_sold(side).symbol
    ideals = book.ideal_sizes(side)
    window = list(book.side_slots(side))[: cfg.active_orders]
    surplus = _surplus(book, side, window)
    for i in [slot for slot in window if slot in earmark]:
        ideal, have = ideals[i], earmark[i]
        floor = max(1, min_target(ideal, cfg.min_target_ratio))
        if surplus:
            # the first surplus (in priority order) that can fund the target; else skip
            for order in surplus:
                freed = order.remaining
                size = min(ideal, have + max(0, draft.headroom[asset] + freed))
                if size >= floor and exchange_qty(cfg.market, side, size, slots[i].price):
                    surplus.remove(order)
                    coid, seq = draft.next_id(book, i)
                    draft.moves.append(
                        RotateOrder(order_id=order.order_id, slot=i, size=size,
                                    client_order_id=coid, seq=seq)
                    )  # fmt: skip
                    draft.headroom[asset] -= max(0, size - have - freed)
                    break
            continue
        size = have if have >= floor else min(ideal, have + max(0, draft.headroom[asset]))
        if size >= floor and exchange_qty(cfg.market, side, size, slots[i].price):
            coid, seq = draft.next_id(book, i)
            draft.moves.append(CreateOrder(slot=i, size=size, client_order_id=coid, seq=seq))
            draft.headroom[asset] -= size - have
    draft.cancels += [CancelOrder(order_id=o.order_id) for o in surplus]


def plan_rebalance(book: GridBook) -> list[Action]:
    """The actions that bring each side's window to ``active_orders`` orders (pure).

    Order: shrinks, then rotations/creates, then cancels, then grows; apply them in this order.
    """
    cfg, slots = book.config, book.slots
    draft = _Draft(
        headroom={asset: f.headroom for asset, f in book.recalculate_funds().items()},
        seq=book.next_seq,
    )
    for oid, pending in book.pending_rotations.items():
        # capital the pending rotation's target will take when its cancel confirms
        need = pending.size - slots[pending.slot].size - book.orders[oid].remaining
        draft.headroom[cfg.asset_sold(pending.side).symbol] -= max(0, need)
    targets = {p.slot for p in book.pending_rotations.values()}
    dust = dust_orders(book)
    for side in (Side.BUY, Side.SELL):
        asset = cfg.asset_sold(side).symbol
        ideals = book.ideal_sizes(side)
        ordered = list(book.side_slots(side))
        earmark = {i: slots[i].size for i in ordered if slots[i].is_free and i not in targets}
        for i, have in earmark.items():
            if have > ideals[i]:
                draft.shrinks.append(ResizeVirtual(slot=i, size=ideals[i]))
                draft.headroom[asset] += have - ideals[i]
                earmark[i] = ideals[i]
        _fill_window(book, side, draft, earmark)
        if dust[Side.BUY] and dust[Side.SELL]:
            window = ordered[: cfg.active_orders]
            off_window = {o.order_id for o in _surplus(book, side, window)}
            draft.cancels += [
                CancelOrder(order_id=o.order_id) for o in dust[side] if o.order_id not in off_window
            ]
        for i in [slot for slot in ordered[cfg.active_orders :] if slot in earmark]:
            grow = min(ideals[i] - earmark[i], draft.headroom[asset])
            if grow > 0:
                draft.grows.append(ResizeVirtual(slot=i, size=earmark[i] + grow))
                draft.headroom[asset] -= grow
    return draft.shrinks + draft.moves + draft.cancels + draft.grows


def apply_action(book: GridBook, action: Action) -> Placement | CancelRequest | None:
    """Apply the book side of one action; return what to send to the exchange, if anything.

    CreateOrder -> the Placement to send. CancelOrder/RotateOrder -> the CancelRequest to send
    (None if the order was already canceling or closed). ResizeVirtual -> None.
    """
    match action:
        case CreateOrder(slot=slot, size=size, client_order_id=coid, seq=seq):
            return book.begin_placement(slot, size, coid, seq=seq)
        case CancelOrder(order_id=oid):
            exchange_id = book.orders[oid].exchange_id if oid in book.orders else None
            return (
                CancelRequest(order_id=oid, exchange_id=exchange_id)
                if book.begin_cancel(oid)
                else None
            )
        case RotateOrder(order_id=oid, slot=slot, size=size, client_order_id=coid, seq=seq):
            exchange_id = book.orders[oid].exchange_id if oid in book.orders else None
            started = book.begin_rotation(oid, slot, size, coid, seq=seq)
            return CancelRequest(order_id=oid, exchange_id=exchange_id) if started else None
        case ResizeVirtual(slot=slot, size=size):
            book.resize_virtual(slot, size)
            return None
    raise InvalidMessage(f"not a grid action: {action!r}")


def apply_plan(book: GridBook, actions: Iterable[Action]) -> list[Placement | CancelRequest]:
    """Apply every action in order; return the exchange requests to send, in order."""
    requests = []
    for action in actions:
        request = apply_action(book, action)
        if request is not None:
            requests.append(request)
    return requests
