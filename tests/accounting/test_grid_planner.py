"""The rebalance planner: initial placement, the rotation sequence, dust, minimum targets."""

from __future__ import annotations

from decimal import Decimal

from accounting.grid import Role
from accounting.grid_funds import GridBook
from accounting.grid_planner import (
    CancelOrder,
    CancelRequest,
    CreateOrder,
    ResizeVirtual,
    RotateOrder,
    apply_action,
    apply_plan,
    dust_orders,
    plan_rebalance,
    should_rebalance,
)
from accounting.grid_records import GridFillOutcome, OrderStatus, Placement, SlotState
from messages import Side
from tests.accounting.test_grid_support import funds_row as row
from tests.accounting.test_grid_support import make_book, make_fill, open_window, order_on


def test_initial_plan_places_the_window_with_the_earmarks() -> None:
    book = make_book()
    before = book.to_state()
    plan = plan_rebalance(book)
    assert book.to_state() == before  # planning is pure
    assert plan == [
        CreateOrder(slot=3, size=800, client_order_id="p1-g3-0", seq=0),
        CreateOrder(slot=2, size=400, client_order_id="p1-g2-1", seq=1),
        CreateOrder(slot=6, size=800, client_order_id="p1-g6-2", seq=2),
        CreateOrder(slot=7, size=400, client_order_id="p1-g7-3", seq=3),
    ]
    requests = apply_plan(book, plan)
    assert [r.client_order_id for r in requests if isinstance(r, Placement)] == [
        "p1-g3-0",
        "p1-g2-1",
        "p1-g6-2",
        "p1-g7-3",
    ]
    assert book.next_seq == 4
    assert plan_rebalance(book) == []  # in-flight orders are neither shortage nor surplus


def slot_view(book: GridBook, index: int) -> tuple[str, int, str | None, bool]:
    slot = book.slots[index]
    return (slot.state.value, slot.size, slot.order_id, slot.in_flight)


def usd(book: GridBook) -> tuple[int, ...]:
    """USD (total, free, committed, virtual, in_flight, cache_funds, available)."""
    r = row(book, "USD")
    return tuple(r[k] for k in ("total", "free", "committed", "virtual", "in_flight",
                                "cache_funds", "available"))  # fmt: skip


def test_rotation_sequence_after_a_full_sell_fill() -> None:
    """The worked example of docs/accounting.md (part 2), step by step."""
    book = make_book()
    open_window(book)
    fill = make_fill(order_on(book, 6), trade_id="t1", qty=800)  # 800 BTS sold for 812 USD
    assert book.apply_fill(fill).full is True
    assert should_rebalance(book, [book.apply_fill(fill)]) is False  # the replay: duplicate
    assert book.boundary == 5  # slot 4 joins the buy side; slot 6 joins the spread
    plan = plan_rebalance(book)
    assert plan == [
        ResizeVirtual(slot=1, size=149),  # the buy ideals follow the new USD total 2312
        ResizeVirtual(slot=0, size=74),
        RotateOrder(order_id="p1-g2-1", slot=4, size=1195, client_order_id="p1-g4-4", seq=4),
        CreateOrder(slot=8, size=200, client_order_id="p1-g8-5", seq=5),
    ]
    steps = [("filled", slot_view(book, 2), slot_view(book, 4), usd(book))]
    apply_action(book, plan[0])
    apply_action(book, plan[1])
    steps.append(("shrunk", slot_view(book, 2), slot_view(book, 4), usd(book)))
    request = apply_action(book, plan[2])
    assert request == CancelRequest(order_id="p1-g2-1", exchange_id="xp1-g2-1")
    assert book.orders["p1-g2-1"].status is OrderStatus.CANCELING
    steps.append(("cancel sent", slot_view(book, 2), slot_view(book, 4), usd(book)))
    outcome = book.confirm_cancel("p1-g2-1")
    assert outcome.placement == Placement(
        client_order_id="p1-g4-4", slot=4, side=Side.BUY, price=Decimal("0.994987"),
        qty=1201, size=1195,
    )  # fmt: skip
    steps.append(("cancel confirmed", slot_view(book, 2), slot_view(book, 4), usd(book)))
    assert book.confirm_placement("p1-g4-4", "x-9") is True
    steps.append(("target confirmed", slot_view(book, 2), slot_view(book, 4), usd(book)))
    #  (step, slot 2 (surplus), slot 4 (target),
    #   USD (total, free, committed, virtual, in_flight, cache, available))
    assert steps == [
        ("filled", ("active", 400, "p1-g2-1", False), ("virtual", 0, None, False),
         (2312, 1112, 1200, 300, 0, 812, 812)),
        ("shrunk", ("active", 400, "p1-g2-1", False), ("virtual", 0, None, False),
         (2312, 1112, 1200, 223, 0, 812, 889)),
        ("cancel sent", ("virtual", 0, None, False), ("virtual", 0, None, False),
         (2312, 1112, 1200, 223, 0, 812, 889)),
        ("cancel confirmed", ("virtual", 0, None, False), ("virtual", 1195, "p1-g4-4", True),
         (2312, 1512, 800, 223, 1195, 812, 94)),
        ("target confirmed", ("virtual", 0, None, False), ("active", 1195, "p1-g4-4", False),
         (2312, 317, 1995, 223, 0, 0, 94)),
    ]  # fmt: skip
    assert book.orders["p1-g4-4"].exchange_id == "x-9"
    assert "p1-g2-1" not in book.orders


def test_pending_rotation_target_is_not_planned_twice() -> None:
    book = make_book()
    open_window(book)
    book.apply_fill(make_fill(order_on(book, 6), trade_id="t1", qty=800))
    for action in plan_rebalance(book):
        if not isinstance(action, CreateOrder):
            apply_action(book, action)
    again = plan_rebalance(book)
    assert all(getattr(a, "slot", None) != 4 for a in again)
    # the 94 USD left after reserving the rotation's need re-earmark the freed slot 2
    assert again == [
        CreateOrder(slot=8, size=200, client_order_id="p1-g8-5", seq=5),
        ResizeVirtual(slot=2, size=94),
    ]


def test_rotation_target_is_clamped_when_the_surplus_filled_meanwhile() -> None:
    book = make_book()
    open_window(book)
    book.apply_fill(make_fill(order_on(book, 6), trade_id="t1", qty=800))
    plan = plan_rebalance(book)
    apply_plan(book, plan)
    surplus = book.orders["p1-g2-1"]  # canceling, 400 USD at 0.975187
    book.apply_fill(make_fill(surplus, trade_id="t2", qty=205, cost=199))  # 199 USD spent
    outcome = book.confirm_cancel("p1-g2-1")
    assert outcome.released == 201
    assert outcome.placement is not None
    # planned 1195; now 0 earmark + available (1112 + 201 - 223 - 0) = 1090 fit
    assert outcome.placement.size == 1090
    assert row(book, "USD")["available"] == 0


def test_rotation_is_dropped_when_its_target_entered_the_spread() -> None:
    book = make_book()
    open_window(book)
    book.apply_fill(make_fill(order_on(book, 6), trade_id="t1", qty=800))
    apply_plan(book, plan_rebalance(book))
    # the new nearest buy (slot 3) fills completely: the spread moves back down over slot 4
    book.apply_fill(make_fill(order_on(book, 3), trade_id="t2", qty=812, cost=799))
    assert book.slots[4].role is Role.SPREAD
    outcome = book.confirm_cancel("p1-g2-1")
    assert (outcome.placement, outcome.rotation_dropped, outcome.released) == (None, 4, 400)
    assert book.pending_rotations == {}


def test_rotation_is_dropped_when_its_surplus_fills_completely() -> None:
    book = make_book()
    open_window(book)
    book.apply_fill(make_fill(order_on(book, 6), trade_id="t1", qty=800))
    apply_plan(book, plan_rebalance(book))
    outcome = book.apply_fill(make_fill(book.orders["p1-g2-1"], trade_id="t2", qty=410))
    assert (outcome.full, outcome.rotation_dropped) == (True, 4)
    assert book.pending_rotations == {}
    assert should_rebalance(book, [outcome]) is True


def partial_to_dust(book: GridBook, slot: int, qty: int, trade_id: str) -> None:
    book.apply_fill(make_fill(order_on(book, slot), trade_id=trade_id, qty=qty))


def test_dust_on_one_side_does_not_rebalance() -> None:
    book = make_book()
    open_window(book)
    partial_to_dust(book, 6, 790, "t1")  # 10 BTS left; ideal now 380: dust below 19
    assert [o.order_id for o in dust_orders(book)[Side.SELL]] == ["p1-g6-2"]
    assert dust_orders(book)[Side.BUY] == []
    assert should_rebalance(book, []) is False
    assert not any(isinstance(a, CancelOrder) for a in plan_rebalance(book))


def test_dust_on_both_sides_rebalances_and_cancels_the_dust() -> None:
    book = make_book()
    open_window(book)
    partial_to_dust(book, 6, 790, "t1")
    partial_to_dust(book, 3, 802, "t2")  # 790 of 800 USD spent: 10 left, ideal ~380
    assert should_rebalance(book, []) is True
    cancels = [a for a in plan_rebalance(book) if isinstance(a, CancelOrder)]
    assert cancels == [CancelOrder(order_id="p1-g3-0"), CancelOrder(order_id="p1-g6-2")]


def test_a_partial_above_the_dust_ratio_is_not_dust() -> None:
    book = make_book()
    open_window(book)
    partial_to_dust(book, 6, 700, "t1")  # 100 BTS left
    partial_to_dust(book, 3, 802, "t2")  # +802 BTS: BTS total 1602, slot 6's ideal 856
    assert book.ideal_size(6) == 856  # 5 % of it is 42.8: 100 is not dust
    assert dust_orders(book)[Side.SELL] == []
    assert should_rebalance(book, []) is False


def test_should_rebalance_on_a_full_fill_only() -> None:
    book = make_book()
    full = GridFillOutcome(trade_id="t", order_id="o", full=True)
    assert should_rebalance(book, [full]) is True
    assert should_rebalance(book, [GridFillOutcome(trade_id="t", order_id="o")]) is False
    duplicate = GridFillOutcome(trade_id="t", order_id="o", full=True, duplicate=True)
    assert should_rebalance(book, [duplicate]) is False


def test_create_below_ten_percent_of_ideal_is_skipped() -> None:
    book = make_book()
    open_window(book)
    book.begin_cancel("p1-g2-1")  # slot 2 (ideal 400) is empty; its capital still committed
    book.resize_virtual(0, 61)  # 39 USD available: below 10 % of 400
    assert plan_rebalance(book) == [ResizeVirtual(slot=0, size=100)]  # the 39 re-earmarked
    book.resize_virtual(0, 60)  # 40 USD available: exactly 10 %
    assert plan_rebalance(book) == [CreateOrder(slot=2, size=40, client_order_id="p1-g2-4", seq=4)]


def test_rotation_below_the_minimum_target_is_skipped_and_the_surplus_canceled() -> None:
    book = make_book(min_target_ratio=Decimal("0.5"))
    book.resize_virtual(2, 0)  # slot 2 (window, ideal 400, minimum 200) is empty
    book.begin_placement(1, 600, "soak")  # in flight: takes the 400, neither surplus nor short
    for slot, size, oid in ((3, 800, "near"), (0, 100, "far")):
        book.begin_placement(slot, size, oid)
        book.confirm_placement(oid, "x" + oid)
    plan = plan_rebalance(book)
    # the only surplus ("far", 100 USD) and 0 available give slot 2 at most 100 < 200
    assert not any(getattr(a, "slot", None) == 2 for a in plan)
    assert CancelOrder(order_id="far") in plan


def test_surplus_on_a_slot_that_left_its_side_is_rotated_first() -> None:
    book = make_book(active_orders=1)
    for slot, oid in ((3, "near"), (2, "far"), (6, "sell")):
        book.begin_placement(slot, book.slots[slot].size, oid)
        book.confirm_placement(oid, "x" + oid)
    book.apply_fill(make_fill(book.orders["sell"], trade_id="t1", qty=800))
    book.apply_fill(make_fill(book.orders["far"], trade_id="t2", qty=100))  # partial buy
    book.apply_fill(make_fill(book.orders["near"], trade_id="t3", qty=812, cost=799))
    assert book.boundary == 4  # up one, down one
    plan = plan_rebalance(book)
    rotations = [a for a in plan if isinstance(a, RotateOrder)]
    assert [r.order_id for r in rotations] == ["far"]
    assert rotations[0].slot == 3


def test_apply_plan_never_refuses_a_fresh_plan_and_keeps_the_books() -> None:
    book = make_book(op_fee=3, op_fee_asset="USD", fee_reservation_ops=2, quote_total=1600)
    open_window(book)
    book.apply_fill(make_fill(order_on(book, 6), trade_id="t1", qty=800))
    book.apply_fill(make_fill(order_on(book, 3), trade_id="t2", qty=300))
    apply_plan(book, plan_rebalance(book))
    book.check_invariants()
    assert book.slots[4].role is Role.BUY
    assert book.slots[3].state is SlotState.PARTIAL


def over_ideal_book() -> GridBook:
    """Buy orders 1000 (slot 3) and 400 (slot 2), slot 1 unearmarked; then the sell at slot 6
    fills: the buy ideals become 1195, 596, 298, 149, 74 and slot 3 is 404 over its ideal."""
    book = make_book()
    book.resize_virtual(1, 0)
    for slot, size, oid in ((3, 1000, "big"), (2, 400, "far"), (6, 800, "sell")):
        book.begin_placement(slot, size, oid)
        book.confirm_placement(oid, "x" + oid)
    book.apply_fill(make_fill(book.orders["sell"], trade_id="t1", qty=800))  # +812 USD
    return book


def test_capital_a_rotation_needs_is_held_back_from_the_grows() -> None:
    book = over_ideal_book()
    plan = plan_rebalance(book)
    # 812 headroom + 26 shrunk from slot 0; the rotation to slot 4 needs 1195 - 400 = 795;
    # only the 43 left may grow slot 1 (ideal 149)
    assert plan == [
        ResizeVirtual(slot=0, size=74),
        RotateOrder(order_id="far", slot=4, size=1195, client_order_id="p1-g4-0", seq=0),
        CreateOrder(slot=7, size=400, client_order_id="p1-g7-1", seq=1),
        CreateOrder(slot=8, size=200, client_order_id="p1-g8-2", seq=2),
        ResizeVirtual(slot=1, size=43),
    ]
    apply_plan(book, plan)
    outcome = book.confirm_cancel("far")
    assert outcome.placement is not None
    assert outcome.placement.size == 1195  # the grows left it all its capital
    assert row(book, "USD")["available"] == 0


def test_a_pending_rotation_holds_its_capital_back_from_later_plans() -> None:
    book = over_ideal_book()
    plan = plan_rebalance(book)
    apply_action(book, plan[0])
    apply_action(book, plan[1])  # the rotation is pending: "far" is canceling
    later = plan_rebalance(book)
    assert [a for a in later if isinstance(a, ResizeVirtual)] == [ResizeVirtual(slot=2, size=43)]
