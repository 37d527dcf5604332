"""Grid book funds: the seed's worked examples, the order lifecycle, fills, fees, invariants."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from accounting.grid import Role
from accounting.grid_funds import GridBook
from accounting.grid_records import AssetFunds, Balance, OrderStatus, SlotState
from messages import FundInvariantViolation, StateError
from tests.accounting.test_grid_support import (
    BTS,
    MARKET,
    make_book,
    make_fill,
    open_window,
    order_on,
)
from tests.accounting.test_grid_support import funds_row as row


def funds(**parts: int) -> AssetFunds:
    zero = {"total": 0, "free": 0, "committed": 0, "virtual": 0, "in_flight": 0, "cache_funds": 0}
    zero.update(fees_owed=0, fee_reservation=0)
    return AssetFunds(asset="BTS", **{**zero, **parts})


@pytest.mark.parametrize(
    ("parts", "available"),
    [
        # seed 001: ChainFree 1000, CacheFunds 100, Virtual 0 -> 1000, not 900
        ({"total": 1000, "free": 1000, "cache_funds": 100}, 1000),
        ({"total": 1000, "free": 1000, "virtual": 200}, 800),
        (
            {"total": 1000, "free": 1000, "virtual": 200, "in_flight": 100, "fees_owed": 10},
            690,
        ),
        (
            {
                "total": 1000,
                "free": 1000,
                "virtual": 200,
                "in_flight": 100,
                "fees_owed": 10,
                "fee_reservation": 20,
                "cache_funds": 500,
            },
            670,
        ),
        ({"total": 100, "free": 100, "virtual": 90, "fees_owed": 20}, 0),  # clamped at 0
    ],
)
def test_available_formula_never_subtracts_cache_funds(
    parts: dict[str, int], available: int
) -> None:
    assert funds(**parts).available == available


def test_seed_cache_funds_example_on_a_book() -> None:
    book = make_book(quote_total=900, budget_quote=900)
    for slot in range(4):
        book.resize_virtual(slot, 0)  # no buy earmarks: quote virtual 0
    book.begin_placement(6, 800, "s1")
    book.confirm_placement("s1", "x1")
    # sell 99 BTS at 1.015037: notional 100.49, the exchange says cost 100
    book.apply_fill(make_fill(book.orders["s1"], trade_id="t1", qty=99, cost=100))
    usd = row(book, "USD")
    assert (usd["free"], usd["cache_funds"], usd["virtual"]) == (1000, 100, 0)
    assert usd["available"] == 1000  # the 100 of cache funds are part of the 1000


def test_sell_fill_proceeds_go_to_total_free_and_cache() -> None:
    book = make_book()
    open_window(book)
    before_usd, before_bts = row(book, "USD"), row(book, "BTS")
    order = order_on(book, 6)  # sell 800 BTS at 1.015037
    outcome = book.apply_fill(make_fill(order, trade_id="t1", qty=300, cost=305, fee=2))
    assert (outcome.full, outcome.spent, outcome.received) == (False, 300, 303)
    usd, bts = row(book, "USD"), row(book, "BTS")
    assert {k: usd[k] - before_usd[k] for k in usd} == {
        "total": 303, "free": 303, "cache_funds": 303, "available": 303, "committed": 0,
        "virtual": 0, "in_flight": 0, "fees_owed": 0, "fee_reservation": 0,
    }  # fmt: skip
    assert {k: bts[k] - before_bts[k] for k in bts} == {
        "total": -300, "committed": -300, "free": 0, "cache_funds": 0, "available": 0,
        "virtual": 0, "in_flight": 0, "fees_owed": 0, "fee_reservation": 0,
    }  # fmt: skip
    slot = book.slots[6]
    assert (slot.state, slot.size, slot.order_id) == (SlotState.PARTIAL, 500, order.order_id)
    assert book.orders[order.order_id].remaining == 500


def test_buy_fill_spends_committed_quote_and_credits_base() -> None:
    book = make_book()
    open_window(book)
    order = order_on(book, 3)  # buy: 800 USD at 0.985038 = 812 BTS
    outcome = book.apply_fill(make_fill(order, trade_id="t1", qty=406, cost=400, fee=1))
    assert (outcome.spent, outcome.received) == (400, 405)
    assert row(book, "USD") | {} == {
        "total": 1100, "free": 300, "committed": 800, "virtual": 300, "in_flight": 0,
        "cache_funds": 0, "fees_owed": 0, "fee_reservation": 0, "available": 0,
    }  # fmt: skip
    assert row(book, "BTS")["cache_funds"] == 405
    assert book.orders[order.order_id].filled_qty == 406


def test_placement_lifecycle_every_component_at_every_step() -> None:
    book = make_book(op_fee=1, op_fee_asset="USD")
    steps = []
    placement = book.begin_placement(3, 800, "b1")
    steps.append(("begin", row(book, "USD"), book.slots[3].in_flight))
    assert (placement.side.value, placement.qty, placement.price) == (
        "buy",
        812,
        Decimal("0.985038"),
    )
    assert book.confirm_placement("b1", "x1") is True
    steps.append(("confirm", row(book, "USD"), book.slots[3].in_flight))
    assert book.confirm_placement("b1", "x1") is False  # a repeated ack changes nothing
    base = {"total": 1500, "cache_funds": 0, "fee_reservation": 0}
    assert steps == [
        ("begin", {**base, "free": 1500, "committed": 0, "virtual": 700, "in_flight": 800,
                   "fees_owed": 0, "available": 0}, True),
        ("confirm", {**base, "free": 700, "committed": 800, "virtual": 700, "in_flight": 0,
                     "fees_owed": 1, "available": 0}, False),
    ]  # fmt: skip
    slot = book.slots[3]
    assert (slot.state, slot.order_id, slot.size) == (SlotState.ACTIVE, "b1", 800)
    assert book.orders["b1"].exchange_id == "x1"


def test_placement_may_shrink_or_grow_the_earmark_within_available() -> None:
    book = make_book(quote_total=1600)  # 100 USD unallocated
    book.begin_placement(3, 900, "b1")  # earmark 800 + 100 available
    assert row(book, "USD")["available"] == 0
    book.begin_placement(2, 300, "b2")  # earmark 400 -> 300: 100 back to available
    assert row(book, "USD")["available"] == 100
    assert row(book, "USD")["in_flight"] == 1200


def test_reject_placement_restores_the_earmark() -> None:
    book = make_book()
    before = book.to_state()
    book.begin_placement(3, 800, "b1")
    book.reject_placement("b1")
    assert book.slots[3] == GridBook.from_state(before).slots[3]
    assert book.done_orders == {"b1": "rejected"}
    assert row(book, "USD")["virtual"] == 1500


def test_cache_funds_are_consumed_first_when_a_placement_confirms() -> None:
    book = make_book()
    open_window(book)
    book.apply_fill(make_fill(order_on(book, 3), trade_id="t1", qty=406, cost=400))
    assert row(book, "BTS")["cache_funds"] == 406
    book.begin_placement(8, 300, "s8")  # earmark 200 + 100 of the proceeds
    book.confirm_placement("s8", "x8")
    bts = row(book, "BTS")
    # free 406 = 100 (slot 9's earmark) + 306 available; 106 of it came from the fill
    assert (bts["cache_funds"], bts["free"], bts["virtual"], bts["available"]) == (
        106,
        406,
        100,
        306,
    )


def test_fill_before_ack_confirms_implicitly() -> None:
    book = make_book(op_fee=1, op_fee_asset="BTS")
    book.begin_placement(6, 800, "s1")
    fill = make_fill(book.orders["s1"], trade_id="t1", qty=100, order_id="ex-77")
    outcome = book.apply_fill(fill)
    assert outcome.implicit_confirm is True
    order = book.orders["s1"]
    assert (order.status, order.exchange_id, order.remaining) == (OrderStatus.OPEN, "ex-77", 700)
    bts = row(book, "BTS")
    assert (bts["free"], bts["committed"], bts["in_flight"], bts["fees_owed"]) == (700, 700, 0, 1)
    assert book.confirm_placement("s1", "ex-77") is False  # the late ack is a no-op
    with pytest.raises(StateError, match=r"^order s1 is already confirmed as ex-77, got ex-78$"):
        book.confirm_placement("s1", "ex-78")


def test_cancel_detaches_the_slot_then_releases_on_confirm() -> None:
    book = make_book(op_fee=2, op_fee_asset="USD")
    open_window(book)
    order = order_on(book, 2)  # buy 400 USD
    assert book.begin_cancel(order.order_id) is True
    slot = book.slots[2]
    assert (slot.state, slot.size, slot.order_id) == (SlotState.VIRTUAL, 0, None)
    assert book.orders[order.order_id].status is OrderStatus.CANCELING
    usd = row(book, "USD")
    assert (usd["committed"], usd["free"], usd["virtual"]) == (1200, 300, 300)
    assert book.begin_cancel(order.order_id) is False  # already canceling
    outcome = book.confirm_cancel(order.order_id)
    assert (outcome.released, outcome.placement, outcome.noop) == (400, None, False)
    usd = row(book, "USD")
    # 5 operations (4 placements, 1 cancel) at 2 USD each are owed
    assert (usd["committed"], usd["free"], usd["fees_owed"], usd["available"]) == (
        800,
        700,
        10,
        390,
    )
    assert book.confirm_cancel(order.order_id).noop is True
    assert book.begin_cancel(order.order_id) is False


def test_fill_on_a_canceling_order_applies_to_the_order() -> None:
    book = make_book()
    open_window(book)
    order = order_on(book, 7)  # sell 400 BTS at 1.025188
    book.begin_cancel(order.order_id)
    outcome = book.apply_fill(make_fill(order, trade_id="t1", qty=400))
    assert (outcome.full, outcome.slot) == (True, None)
    assert order.order_id not in book.orders
    assert book.slots[7].order_id is None
    assert book.boundary == 5  # a full sell fill moves the spread up
    assert book.confirm_cancel(order.order_id).noop is True  # the cancel lost the race


def test_full_sell_fill_moves_the_boundary_up() -> None:
    book = make_book()
    open_window(book)
    book.apply_fill(make_fill(order_on(book, 6), trade_id="t1", qty=800))
    assert book.boundary == 5
    assert [s.role for s in book.slots][3:8] == [Role.BUY, Role.BUY, Role.SPREAD, Role.SPREAD,
                                                Role.SELL]  # fmt: skip
    assert (book.slots[6].state, book.slots[6].size, book.slots[6].order_id) == (
        SlotState.VIRTUAL,
        0,
        None,
    )
    assert book.done_orders == {"p1-g6-2": "filled"}


def test_full_buy_fill_moves_the_boundary_down_and_the_new_spread_slot_drops_its_earmark() -> None:
    book = make_book()
    book.begin_placement(0, 100, "b0")  # the furthest buy slot
    book.confirm_placement("b0", "x0")
    book.apply_fill(make_fill(book.orders["b0"], trade_id="t1", qty=104))  # 104 * 0.955781 = 99.4
    assert book.boundary == 3
    assert book.slots[3].role is Role.SPREAD
    assert book.slots[3].size == 0  # its 800 USD earmark is released
    assert book.slots[5].role is Role.SELL
    usd = row(book, "USD")
    assert (usd["total"], usd["free"], usd["virtual"], usd["available"]) == (1401, 1401, 600, 801)


def test_boundary_is_clamped_at_the_grid_edge() -> None:
    book = make_book()
    for n, slot in enumerate((6, 7, 8, 9)):
        size = book.slots[slot].size
        book.begin_placement(slot, size, f"s{n}")
        book.confirm_placement(f"s{n}", f"x{n}")
    for n in range(4):
        book.apply_fill(
            make_fill(book.orders[f"s{n}"], trade_id=f"t{n}", qty=book.orders[f"s{n}"].qty)
        )
    assert book.boundary == 8  # 4 -> 8 = n - gap, no further
    assert [s.role for s in book.slots][-2:] == [Role.SPREAD, Role.SPREAD]


def place(book: GridBook, slot: int, size: int, order_id: str) -> None:
    book.begin_placement(slot, size, order_id)
    book.confirm_placement(order_id, "x" + order_id)


def test_buy_remainder_that_buys_nothing_counts_as_full() -> None:
    book = make_book(
        quote_total=15000,
        budget_quote=15000,
        center_price=Decimal("100"),
        min_price=Decimal("95"),
        max_price=Decimal("105"),
    )
    assert book.slots[3].price == Decimal("98.503756")
    place(book, 3, 986, "b3")  # 986 USD buys 10 BTS: ceil(985.04) = 986
    assert book.orders["b3"].qty == 10
    first = book.apply_fill(make_fill(book.orders["b3"], trade_id="t1", qty=5, cost=493))
    assert (first.full, book.orders["b3"].remaining) == (False, 493)
    # 4 more at ceil(394.02) = 395: 98 USD left, less than one BTS at 98.503756 -> full
    second = book.apply_fill(make_fill(book.orders["b3"], trade_id="t2", qty=4, cost=395))
    assert (second.full, second.dust, second.released) == (True, True, 0)
    assert book.slots[3].order_id is None  # the slot is free: the grid moves on
    # 1 BTS is still open on the exchange: its 98 USD stay committed until the exchange's
    # answer to our cancel says it filled nothing more.
    assert (book.orders["b3"].status, book.orders["b3"].remaining) == (OrderStatus.DUST, 98)
    usd = row(book, "USD")
    assert (usd["total"], usd["free"], usd["committed"]) == (15000 - 888, 15000 - 888 - 98, 98)
    assert book.confirm_cancel("b3").released == 98
    assert "b3" not in book.orders
    assert book.done_orders["b3"] == "filled"
    usd = row(book, "USD")
    assert (usd["total"], usd["free"], usd["committed"]) == (15000 - 888, 15000 - 888, 0)


def test_sell_remainder_worth_nothing_counts_as_full() -> None:
    cents = dataclasses.replace(BTS, precision=2)  # 1 unit = 0.01 BTS
    book = make_book(market=dataclasses.replace(MARKET, base=cents))
    place(book, 6, 250, "s6")  # 2.50 BTS at 1.015037
    # 2.00 BTS sold for 2.03 -> 2 USD; 0.50 BTS left is worth 0.5075 USD -> 0: full
    outcome = book.apply_fill(make_fill(book.orders["s6"], trade_id="t1", qty=200, cost=2))
    assert (outcome.full, outcome.dust, outcome.released, outcome.received) == (True, True, 0, 2)
    assert book.boundary == 5
    bts = row(book, "BTS")
    assert (bts["total"], bts["free"], bts["committed"]) == (1300, 1250, 50)  # 0.50 BTS open
    assert book.confirm_cancel("s6").released == 50
    bts = row(book, "BTS")
    assert (bts["total"], bts["free"], bts["committed"]) == (1300, 1300, 0)
    assert book.boundary == 5


def test_a_dust_remainder_the_exchange_fills_is_booked_and_closes_its_order() -> None:
    cents = dataclasses.replace(BTS, precision=2)
    book = make_book(market=dataclasses.replace(MARKET, base=cents))
    place(book, 6, 250, "s6")
    assert book.apply_fill(make_fill(book.orders["s6"], trade_id="t1", qty=200, cost=2)).dust
    boundary = book.boundary
    # The exchange fills the 0.50 BTS before our cancel lands: it leaves the account, and its
    # 0.5075 USD (cumulative rounding may give the piece 0 or 1 cent) arrive.
    late = book.apply_fill(make_fill(book.orders["s6"], trade_id="t2", qty=50, cost=1))
    assert (late.full, late.dust, late.spent, late.received, late.released) == (
        False, False, 50, 1, 0,
    )  # fmt: skip
    assert "s6" not in book.orders
    assert book.done_orders["s6"] == "filled"
    assert book.boundary == boundary  # counted as filled once, at the first trade
    bts = row(book, "BTS")
    assert (bts["total"], bts["free"], bts["committed"]) == (1250, 1250, 0)
    assert book.confirm_cancel("s6").noop  # the cancel's answer comes after: nothing left


def test_duplicate_trade_id_is_a_reported_no_op() -> None:
    book = make_book()
    open_window(book)
    fill = make_fill(order_on(book, 6), trade_id="t1", qty=100)
    assert book.apply_fill(fill).duplicate is False
    before = book.to_state()
    outcome = book.apply_fill(fill)
    assert (outcome.duplicate, outcome.spent, outcome.received) == (True, 0, 0)
    assert book.to_state() == before


def test_fees_accrue_settle_and_defer() -> None:
    book = make_book(op_fee=5, op_fee_asset="USD", fee_reservation_ops=2)
    book.begin_placement(3, 800, "b1")
    book.confirm_placement("b1", "x1")
    # everything else is earmarked: free 700 = virtual 700, so the 5 owed cannot be paid
    before = book.to_state()
    settlement = book.settle_fees()
    assert (settlement.paid, settlement.deferred) == ({}, {"USD": 5})
    assert book.to_state() == before
    book.resize_virtual(0, 80)  # release 20 USD: 20 - reservation 10 >= 5 owed
    settlement = book.settle_fees()
    assert (settlement.paid, settlement.deferred) == ({"USD": 5}, {})
    usd = row(book, "USD")
    assert (usd["total"], usd["free"], usd["fees_owed"], usd["available"]) == (1495, 695, 0, 5)
    assert book.settle_fees().paid == {}  # nothing owed


def test_cache_funds_are_clamped_to_free_after_settlement() -> None:
    book = make_book(op_fee=10, op_fee_asset="BTS")
    open_window(book)  # 4 confirmations: 40 BTS owed
    book.apply_fill(make_fill(order_on(book, 2), trade_id="t1", qty=50, cost=48))  # +50 BTS
    for slot in (8, 9, 0, 1):
        if book.slots[slot].role is not Role.SPREAD:
            book.resize_virtual(slot, 0)
    assert row(book, "BTS")["cache_funds"] == 50
    book.settle_fees()
    bts = row(book, "BTS")
    assert (bts["free"], bts["cache_funds"], bts["fees_owed"]) == (310, 50, 0)
    book.begin_placement(8, 300, "s8")
    book.confirm_placement("s8", "x8")  # consumes the 50 of cache first; +10 owed
    assert row(book, "BTS")["cache_funds"] == 0


def test_owners_partition_total_exactly() -> None:
    book = make_book(quote_total=1600, op_fee=7, op_fee_asset="USD", fee_reservation_ops=3)
    place(book, 3, 800, "b3")
    place(book, 2, 400, "b2")
    # free 400 - virtual 300 = 100 spare: 14 owed and 21 reserved are covered, 65 unallocated
    owners = book.owners()
    assert owners["USD"] == {
        "committed": 1200, "virtual": 300, "in_flight": 0, "fees_owed": 14,
        "fee_reservation": 21, "unallocated": 65,
    }  # fmt: skip
    assert owners["BTS"] == {
        "committed": 0, "virtual": 1500, "in_flight": 0, "fees_owed": 0,
        "fee_reservation": 0, "unallocated": 0,
    }  # fmt: skip
    for asset, parts in owners.items():
        assert sum(parts.values()) == book.balances[asset].total


def test_owners_count_only_the_covered_part_of_fees() -> None:
    book = make_book(op_fee=7, op_fee_asset="USD", fee_reservation_ops=3)
    place(book, 3, 800, "b3")
    place(book, 2, 400, "b2")  # 14 owed, 21 reserved, nothing spare: free 300 = virtual 300
    assert book.owners()["USD"] == {
        "committed": 1200, "virtual": 300, "in_flight": 0, "fees_owed": 0,
        "fee_reservation": 0, "unallocated": 0,
    }  # fmt: skip
    assert row(book, "USD")["fees_owed"] == 14


def test_check_invariants_names_profile_asset_and_every_component() -> None:
    book = make_book()
    book._balances["USD"] = Balance(total=1499, free=1500)  # a bug: one unit vanished
    message = (
        r"^grid profile p1 breaks its invariants: asset USD: total != free \+ committed,"
        r" owners \{'committed': 0, 'virtual': 1500, 'in_flight': 0, 'fees_owed': 0,"
        r" 'fee_reservation': 0, 'unallocated': -1\} do not sum to total \(total=1499 free=1500"
        r" committed=0 virtual=1500 in_flight=0 cache_funds=0 fees_owed=0 fee_reservation=0"
        r" available=0\)$"
    )
    with pytest.raises(FundInvariantViolation, match=message):
        book.check_invariants()


def test_check_invariants_catches_a_spread_slot_holding_an_earmark() -> None:
    book = make_book()
    book._slots[4] = dataclasses.replace(book.slots[4], size=5)
    with pytest.raises(FundInvariantViolation, match=r"spread slot 4 is VIRTUAL with size 5"):
        book.check_invariants()


def test_an_operation_on_a_broken_book_raises_and_changes_nothing() -> None:
    book = make_book()
    book._balances["BTS"] = Balance(total=1500, free=1501)
    before = book.to_state()
    with pytest.raises(FundInvariantViolation):
        book.resize_virtual(9, 50)
    assert book.to_state() == before


def test_a_fill_refused_by_the_invariant_check_leaves_no_trace() -> None:
    book = make_book()
    open_window(book)
    usd = book.balances["USD"]
    book._balances["USD"] = dataclasses.replace(usd, total=usd.total + 1)  # a bug elsewhere
    before = book.to_state()
    fill = make_fill(order_on(book, 6), trade_id="t1", qty=800)  # full: closes an order
    with pytest.raises(FundInvariantViolation):
        book.apply_fill(fill)
    assert book.to_state() == before
    assert "t1" not in book.trade_ids
    assert book.done_orders == {}
