"""Stateful property test: the grid book beside a simple independent model.

The model keeps, per asset, ``total``, ``free`` and ``fees_owed`` moved only by what the exchange
would do (a confirmation locks the size, a cancel releases the remaining, a fill moves its
deltas, a settlement pays the fees) and, per order, its side, size, remaining and status.
After every step the book's invariants must hold and its balances, committed and in-flight
capital must equal the model's.
"""

from __future__ import annotations

import dataclasses
import itertools
from decimal import Decimal
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from accounting.grid import worth_in_other_asset
from accounting.grid_funds import GridBook
from accounting.grid_planner import RotateOrder, apply_action, plan_rebalance, should_rebalance
from accounting.grid_records import GridFillOutcome, OrderStatus, Placement
from messages import Fill, InsufficientCapital, InvalidAmount, OverFill, Side
from tests.accounting.test_grid_support import BTS, MARKET, USD, make_book

CENTS = dataclasses.replace(MARKET, base=dataclasses.replace(BTS, precision=2))
#: (config overrides, base total, quote total); budgets are 1500 unless overridden.
VARIANTS: list[tuple[dict[str, Any], int, int]] = [
    ({}, 1500, 1500),
    ({"op_fee": 3, "op_fee_asset": "USD", "fee_reservation_ops": 2}, 1500, 1500),
    ({"op_fee": 2, "op_fee_asset": "base", "weight_ratio": Decimal("0.95"), "active_orders": 3,
      "min_price": Decimal("0.9"), "max_price": Decimal("1.1")}, 1500, 1500),
    ({"market": CENTS, "budget_base": 150000, "op_fee": 1, "increment": Decimal("0.02"),
      "target_spread": Decimal("0.05"), "min_price": Decimal("0.85"),
      "max_price": Decimal("1.15")}, 150000, 1500),
]  # fmt: skip


@dataclasses.dataclass
class ModelOrder:
    side: Side
    size: int
    price: Decimal
    qty: int
    remaining: int
    filled: int = 0
    status: OrderStatus = OrderStatus.IN_FLIGHT


class GridMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book: GridBook
        self.ids = itertools.count()
        self.fills: list[Fill] = []
        self.orders: dict[str, ModelOrder] = {}

    @initialize(variant=st.sampled_from(VARIANTS), extra=st.integers(0, 400), opened=st.booleans())
    def create(self, variant: tuple[dict[str, Any], int, int], extra: int, opened: bool) -> None:
        overrides, base_total, quote_total = variant
        self.total = {"BTS": base_total + extra, "USD": quote_total + 2 * extra}
        self.book = make_book(
            base_total=self.total["BTS"], quote_total=self.total["USD"], **overrides
        )
        self.config = self.book.config
        self.free = dict(self.total)
        self.owed = {"BTS": 0, "USD": 0}
        if opened:  # start from a placed window, as the actor's bootstrap does
            self.rebalance()
            self.exchange_catches_up()

    # ---------------------------------------------------------------- model helpers

    def sold(self, side: Side) -> str:
        return "USD" if side is Side.BUY else "BTS"

    def confirm_in_model(self, oid: str) -> None:
        order = self.orders[oid]
        order.status = OrderStatus.OPEN
        self.free[self.sold(order.side)] -= order.size
        self.owed[self.config.fee_asset.symbol] += self.config.op_fee

    def add_placement(self, placement: Placement) -> None:
        self.orders[placement.client_order_id] = ModelOrder(
            side=placement.side,
            size=placement.size,
            price=placement.price,
            qty=placement.qty,
            remaining=placement.size,
        )

    def ids_with(self, *statuses: OrderStatus) -> list[str]:
        return sorted(oid for oid, o in self.orders.items() if o.status in statuses)

    # ------------------------------------------------------------------------ rules

    @rule(data=st.data())
    def begin_placement(self, data: st.DataObject) -> None:
        book = self.book
        targets = {p.slot for p in book.pending_rotations.values()}
        free = [
            s.index
            for s in book.slots
            if s.is_free and s.role.side is not None and s.index not in targets
        ]
        if not free:
            return
        index = data.draw(st.sampled_from(free), label="slot")
        slot = book.slots[index]
        assert slot.role.side is not None
        available = book.available(self.sold(slot.role.side))
        ideal = book.ideal_size(index)
        size = data.draw(
            st.sampled_from([slot.size, ideal, min(ideal, slot.size + available)])
            | st.integers(1, max(1, 2 * ideal)),
            label="size",
        )
        oid = f"c{next(self.ids)}"
        before = book.to_state()
        try:
            placement = book.begin_placement(index, max(1, size), oid)
        except (InsufficientCapital, InvalidAmount):
            assert book.to_state() == before
            return
        self.add_placement(placement)

    @precondition(lambda self: self.ids_with(OrderStatus.IN_FLIGHT))
    @rule(data=st.data(), accept=st.booleans())
    def confirm_or_reject(self, data: st.DataObject, accept: bool) -> None:
        oid = data.draw(st.sampled_from(self.ids_with(OrderStatus.IN_FLIGHT)), label="order")
        if accept:
            assert self.book.confirm_placement(oid, "x" + oid) is True
            self.confirm_in_model(oid)
        else:
            self.book.reject_placement(oid)
            del self.orders[oid]

    def fill_for(
        self, data: st.DataObject, *, full: bool, leave: int | None = None
    ) -> tuple[str, Fill] | None:
        live = self.ids_with(
            OrderStatus.IN_FLIGHT, OrderStatus.OPEN, OrderStatus.CANCELING, OrderStatus.DUST
        )
        if not live:
            return None
        oid = data.draw(st.sampled_from(live), label="order")
        order = self.orders[oid]
        left = order.qty - order.filled
        if not full and left < 2:
            return None
        if leave is not None:
            qty = left - leave  # e.g. one base unit left: dust where a unit is worth < 1 cent
        else:
            qty = left if full else data.draw(st.integers(1, left - 1), label="qty")
        better = Decimal("-0.001") if order.side is Side.BUY else Decimal("0.001")
        price = data.draw(st.sampled_from([order.price, order.price + better]), label="price")
        low, high = self.config.market.cost_bounds(qty, price)
        cost = data.draw(st.integers(low, high), label="cost")
        gross = qty if order.side is Side.BUY else cost
        fee = data.draw(st.integers(0, min(gross, 3)), label="fee")
        fill = Fill(
            message_id=f"m{len(self.fills)}",
            ts_ns=1,
            trade_id=f"t{next(self.ids)}",
            order_id=self.book.orders[oid].exchange_id or "x" + oid,
            client_order_id=oid,
            symbol=self.config.market.symbol,
            side=order.side,
            qty=qty,
            price=price,
            cost=cost,
            fee=fee,
            fee_asset=(BTS if order.side is Side.BUY else USD).symbol,
        )
        return oid, fill

    def apply_fill_to_both(self, oid: str, fill: Fill) -> GridFillOutcome | None:
        order = self.orders[oid]
        spent = fill.cost if order.side is Side.BUY else fill.qty
        if spent > order.remaining:
            before = self.book.to_state()
            try:
                self.book.apply_fill(fill)
            except OverFill:
                assert self.book.to_state() == before
                return None
            raise AssertionError("an over-costly fill was accepted")
        outcome = self.book.apply_fill(fill)
        if order.status is OrderStatus.IN_FLIGHT:
            assert outcome.implicit_confirm
            self.confirm_in_model(oid)
        received = (fill.qty if order.side is Side.BUY else fill.cost) - fill.fee
        order.remaining -= spent
        order.filled += fill.qty
        self.total[self.sold(order.side)] -= spent
        bought = self.sold(order.side.opposite)
        self.total[bought] += received
        self.free[bought] += received
        if order.status is OrderStatus.DUST:
            # Counted as filled already: a trade of its remainder closes it once all is filled.
            assert (outcome.full, outcome.dust) == (False, False)
            closed = order.filled == order.qty
        else:
            worth = worth_in_other_asset(
                self.config.market, order.side, order.remaining, order.price
            )
            full = order.filled == order.qty or worth == 0
            assert outcome.full == full
            # A worthless remainder still open on the exchange stays committed (DUST).
            assert outcome.dust == (full and order.filled < order.qty)
            if outcome.dust:
                order.status = OrderStatus.DUST
            closed = full and not outcome.dust
        if closed:
            assert outcome.released == order.remaining
            self.free[self.sold(order.side)] += order.remaining
            del self.orders[oid]
        else:
            assert outcome.released == 0
        self.fills.append(fill)
        return outcome

    @rule(data=st.data())
    def partial_fill(self, data: st.DataObject) -> None:
        picked = self.fill_for(data, full=False)
        if picked is not None:
            self.apply_fill_to_both(*picked)

    @rule(data=st.data())
    def fill_all_but_one_unit(self, data: st.DataObject) -> None:
        picked = self.fill_for(data, full=False, leave=1)
        if picked is not None:
            self.apply_fill_to_both(*picked)

    @rule(data=st.data())
    def full_fill(self, data: st.DataObject) -> None:
        picked = self.fill_for(data, full=True)
        if picked is not None:
            self.apply_fill_to_both(*picked)

    @precondition(lambda self: self.fills)
    @rule(data=st.data())
    def duplicate_fill(self, data: st.DataObject) -> None:
        fill = data.draw(st.sampled_from(self.fills), label="fill")
        before = self.book.to_state()
        assert self.book.apply_fill(fill).duplicate is True
        assert self.book.to_state() == before

    @precondition(lambda self: self.ids_with(OrderStatus.OPEN))
    @rule(data=st.data())
    def begin_cancel(self, data: st.DataObject) -> None:
        oid = data.draw(st.sampled_from(self.ids_with(OrderStatus.OPEN)), label="order")
        assert self.book.begin_cancel(oid) is True
        self.orders[oid].status = OrderStatus.CANCELING

    @precondition(lambda self: self.ids_with(OrderStatus.CANCELING))
    @rule(data=st.data())
    def confirm_cancel(self, data: st.DataObject) -> None:
        oid = data.draw(st.sampled_from(self.ids_with(OrderStatus.CANCELING)), label="order")
        self.confirm_cancel_in_both(oid)

    @precondition(lambda self: self.ids_with(OrderStatus.DUST))
    @rule(data=st.data())
    def exchange_cancels_dust(self, data: st.DataObject) -> None:
        oid = data.draw(st.sampled_from(self.ids_with(OrderStatus.DUST)), label="order")
        self.confirm_cancel_in_both(oid)

    def confirm_cancel_in_both(self, oid: str) -> None:
        outcome = self.book.confirm_cancel(oid)
        order = self.orders.pop(oid)
        assert outcome.released == order.remaining
        self.free[self.sold(order.side)] += order.remaining
        if order.status is OrderStatus.DUST:
            assert outcome.placement is None  # counted as filled: no fee, no rotation
            assert self.book.done_orders[oid] == "filled"
            return
        self.owed[self.config.fee_asset.symbol] += self.config.op_fee
        if outcome.placement is not None:
            self.add_placement(outcome.placement)

    @rule()
    def settle_fees(self) -> None:
        settlement = self.book.settle_fees()
        for asset, paid in settlement.paid.items():
            assert paid == self.owed[asset]
            self.total[asset] -= paid
            self.free[asset] -= paid
            self.owed[asset] = 0
        for asset, owed in settlement.deferred.items():
            assert owed == self.owed[asset]

    def apply_planned(self, only_rotations: bool) -> None:
        for action in plan_rebalance(self.book):
            if only_rotations and not isinstance(action, RotateOrder):
                continue
            request = apply_action(self.book, action)  # a fresh plan is never refused
            if isinstance(request, Placement):
                self.add_placement(request)
            elif request is not None:
                self.orders[request.order_id].status = OrderStatus.CANCELING

    @rule()
    def rebalance(self) -> None:
        self.apply_planned(only_rotations=False)

    @rule()
    def exchange_catches_up(self) -> None:
        """Every in-flight placement is accepted and every cancel confirmed (a cancel may put
        a rotation target in flight; it is accepted at the next catch-up)."""
        for oid in self.ids_with(OrderStatus.IN_FLIGHT):
            assert self.book.confirm_placement(oid, "x" + oid) is True
            self.confirm_in_model(oid)
        for oid in self.ids_with(OrderStatus.CANCELING, OrderStatus.DUST):
            self.confirm_cancel_in_both(oid)

    @rule(data=st.data())
    def full_fill_then_rebalance(self, data: st.DataObject) -> None:
        picked = self.fill_for(data, full=True)
        if picked is None:
            return
        outcome = self.apply_fill_to_both(*picked)
        if outcome is not None and should_rebalance(self.book, [outcome]):
            self.rebalance()

    @rule()
    def rotate(self) -> None:
        self.apply_planned(only_rotations=True)

    @rule(data=st.data())
    def resize_virtual(self, data: st.DataObject) -> None:
        book = self.book
        free = [s.index for s in book.slots if s.is_free and s.role.side is not None]
        if not free:
            return
        index = data.draw(st.sampled_from(free), label="slot")
        size = data.draw(st.integers(0, 2 * book.ideal_size(index) + 1), label="size")
        before = book.to_state()
        try:
            book.resize_virtual(index, size)
        except InsufficientCapital:
            assert book.to_state() == before

    @rule()
    def rebuild_from_state(self) -> None:
        rebuilt = GridBook.from_state(self.book.to_state())
        assert rebuilt == self.book
        self.book = rebuilt

    # ------------------------------------------------------------------- invariants

    @invariant()
    def books_hold_and_match_the_model(self) -> None:
        if not hasattr(self, "total"):
            return
        self.book.check_invariants()
        funds = self.book.recalculate_funds()
        for asset in ("BTS", "USD"):
            f = funds[asset]
            assert (f.total, f.free, f.fees_owed) == (
                self.total[asset],
                self.free[asset],
                self.owed[asset],
            )
            orders = [o for o in self.orders.values() if self.sold(o.side) == asset]
            in_flight = sum(o.size for o in orders if o.status is OrderStatus.IN_FLIGHT)
            committed = sum(o.remaining for o in orders if o.status is not OrderStatus.IN_FLIGHT)
            assert (f.in_flight, f.committed) == (in_flight, committed)
            assert sum(self.book.owners()[asset].values()) == f.total
        assert {oid: o.status for oid, o in self.book.orders.items()} == {
            oid: o.status for oid, o in self.orders.items()
        }


GridMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40)
TestGridMachine = GridMachine.TestCase
