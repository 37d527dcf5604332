"""The ledger's hot-path shortcuts promise the same answers as the plain versions they replace.

The one-pass invariant check agrees with the full report; the sorted id set lists exactly
``sorted(set(ids))`` whatever order ids arrive in; fills built with trusted records book the same
numbers and still refuse a sum beyond the largest amount; snapshots do not depend on the order
trade ids were applied in.
"""

from __future__ import annotations

import dataclasses
import random
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accounting.position import PendingOrder, Position, PositionLedger
from accounting.position_checks import books_add_up, invariant_problems
from accounting.sorted_ids import SortedIds
from messages import MAX_UNITS, InvalidAmount, Rounding
from tests.accounting.test_position import (
    BTC_USDT,
    SELL,
    fill,
    make_book,
    new_ledger,
    reserve,
)


def _agree(ledger: PositionLedger) -> bool:
    totals = ledger._totals()
    fast = books_add_up(
        totals=(
            totals["allocated_capital"],
            totals["reserved_for_orders"],
            totals["reserved_for_positions"],
            totals["fees_paid"],
            totals["available"],
        ),
        halted=ledger.halted,
        orders=ledger._orders,
        positions=ledger._positions,
    )
    full = invariant_problems(
        totals=totals, halted=ledger.halted, orders=ledger._orders, positions=ledger._positions
    )
    assert fast == (not full), full
    return fast


@given(
    field=st.sampled_from(
        [
            "_allocated",
            "_reserved_for_orders",
            "_reserved_for_positions",
            "_realized_pnl",
            "_fees_paid",
        ]
    ),
    delta=st.integers(-200_000, 200_000),
    halted=st.booleans(),
)
def test_one_pass_check_agrees_with_the_full_report_on_corrupt_totals(field, delta, halted):
    ledger = make_book()
    assert _agree(ledger)
    setattr(ledger, field, getattr(ledger, field) + delta)
    if halted:
        ledger.halt("test")
    _agree(ledger)


@given(
    target=st.sampled_from(["e-2", "x-1", "pos-1"]),
    name=st.sampled_from(["qty", "filled_qty", "reserved", "cost"]),
    value=st.integers(-2, 1_200_000),
)
def test_one_pass_check_agrees_with_the_full_report_on_corrupt_records(target, name, value):
    ledger = make_book()
    record = ledger.positions[target] if target.startswith("pos") else ledger.orders[target]
    if not hasattr(record, name):
        return
    object.__setattr__(record, name, value)
    _agree(ledger)


def test_one_pass_check_sees_exits_of_a_position_that_is_not_open():
    ledger = make_book()
    del ledger._positions["pos-1"]
    ledger._reserved_for_positions = 0
    assert not _agree(ledger)


@given(st.lists(st.lists(st.text(min_size=1, max_size=4), max_size=12), max_size=8))
def test_sorted_ids_list_exactly_the_sorted_set_after_any_arrivals(batches):
    ids = SortedIds()
    seen: set[str] = set()
    for batch in batches:
        for item in batch:
            ids.add(item)
        seen.update(batch)
        assert ids.to_list() == sorted(seen)
        assert len(ids) == len(seen)
        assert all(item in ids for item in seen)
    assert list(ids) == sorted(seen)
    assert ids.as_set() == seen


def test_sorted_ids_merge_few_new_ids_into_a_long_history():
    history = [f"t{n}" for n in range(1000)]  # unpadded: lexicographic order interleaves
    ids = SortedIds(history)
    new = [f"t{n}" for n in (1000, 5, 20000, 1999)]
    ids.update(new)
    ids.add("t5")  # known: kept once
    assert ids.to_list() == sorted({*history, *new})
    returned = ids.to_list()
    returned.append("zzz")  # a snapshot is a copy
    assert "zzz" not in ids.to_list()


@given(
    st.lists(st.text(min_size=1, max_size=3), max_size=10),
    st.lists(st.text(min_size=1, max_size=3), max_size=10),
)
def test_sorted_ids_truncate_forgets_exactly_what_was_added_since_a_size(listed, added):
    ids = SortedIds(["base"])
    ids.update(listed)
    before = ids.to_list()  # a snapshot: everything so far is listed
    size = len(ids)
    ids.update(added)
    ids.truncate(size)  # the rollback of an operation that added ``added``
    assert ids.to_list() == before
    assert ids.as_set() == set(before)
    assert all(item in ids for item in before)
    assert [item for item in set(added) - set(before) if item in ids] == []


def test_sorted_ids_cannot_forget_what_a_snapshot_listed_already():
    ids = SortedIds(["a"])
    ids.add("b")
    ids.to_list()
    ids.add("c")
    with pytest.raises(RuntimeError, match="cannot forget 2 ids"):
        ids.truncate(1)
    ids.truncate(2)
    assert ids.to_list() == ["a", "b"]


def test_snapshot_lists_trade_ids_sorted_whatever_order_they_were_applied_in():
    states = []
    for order in ([1, 2, 3, 4], [4, 2, 3, 1]):
        ledger = new_ledger()
        reserve(ledger, "e-1", qty=1_000_000)
        for n in order:
            ledger.apply_fill(fill(f"t-{n}", "e-1", 100_000, "30000", 3_000, 3))
        states.append(ledger.to_state())
    assert states[0] == states[1]
    assert states[0]["applied_trade_ids"] == ["t-1", "t-2", "t-3", "t-4"]


def test_from_state_accepts_ids_in_any_order_and_lists_them_sorted():
    ledger = make_book()
    state = ledger.to_state()
    state["applied_trade_ids"] = list(reversed(state["applied_trade_ids"]))
    restored = PositionLedger.from_state(state)
    assert restored == ledger
    restored.apply_fill(fill("t-0", "e-2", 50_000, "30000", 1_500, 1))
    assert restored.to_state()["applied_trade_ids"] == ["t-0", "t-1", "t-2"]
    assert restored.apply_fill(fill("t-1", "e-2", 1, "30000", 1, 0)).duplicate


def test_trusted_records_of_a_fill_are_the_records_the_constructor_builds():
    ledger = make_book()
    ledger.apply_fill(fill("t-3", "e-2", 50_000, "30000", 1_500, 1))
    ledger.apply_fill(fill("t-4", "x-1", 100_000, "31000", 3_100, 3, side=SELL))
    records: list[PendingOrder | Position] = [*ledger.orders.values(), *ledger.positions.values()]
    for record in records:
        fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
        assert type(record)(**fields) == record
    assert PositionLedger.from_state(ledger.to_state()) == ledger
    ledger.check_invariants()


def test_an_entry_fill_that_would_grow_a_position_beyond_the_largest_amount_is_refused():
    ledger = new_ledger(allocated=MAX_UNITS)
    first, second = MAX_UNITS // 4, MAX_UNITS
    reserve(ledger, "e-1", qty=first, limit="1", estimate=MAX_UNITS // 2)
    reserve(ledger, "e-2", qty=second, limit="1", estimate=1)
    cost = BTC_USDT.notional(first, D("1"), Rounding.UP)
    ledger.apply_fill(fill("t-1", "e-1", first, "1", cost, 0, fee_asset="BTC"))
    before = ledger.to_state()
    cost = BTC_USDT.notional(second, D("1"), Rounding.UP)
    message = f"qty {first + second} exceeds the largest amount {MAX_UNITS}"
    with pytest.raises(InvalidAmount, match=f"^{message}$"):
        ledger.apply_fill(fill("t-2", "e-2", second, "1", cost, 0, fee_asset="BTC"))
    assert ledger.to_state() == before


def test_cost_bounds_are_the_floor_and_ceiling_notionals():
    rng = random.Random(7)
    for _ in range(500):
        qty = rng.randrange(0, 10**12)
        price = D(rng.randrange(1, 10**9)).scaleb(-rng.randrange(0, 9))
        assert BTC_USDT.cost_bounds(qty, price) == (
            BTC_USDT.notional(qty, price, Rounding.DOWN),
            BTC_USDT.notional(qty, price, Rounding.UP),
        )
