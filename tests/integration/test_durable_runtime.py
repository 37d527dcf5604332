"""Durable mode across restarts: every fill applied exactly once, on Redis, SQLite and memory.

A "restart" here stops one runtime and starts a new one on a new handle to the same stored data
and the same exchange, at points where messages are still in flight (submitted, not drained).
Killing the process instead is ``test_durable_runtime_kill.py``; store outages and takeovers are
``test_durable_runtime_outage.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from accounting import GridBook, OrderStatus, PositionLedger
from actors.journal import dedupe_key, pack_entry
from actors.supervisor import Status
from capflow.run_setup import MARKET
from exchange import Exchange, SimulatedExchange, trade_to_fill
from messages import CorruptSnapshot, Fill
from persistence import JournalStore
from tests.actors.test_durable_world import (
    HOLDER,
    POSITION,
    SCRIPT,
    AppliedFills,
    LossyExchange,
    Runtimes,
    check_against_exchange,
    check_orders,
    durable_runtime,
    new_exchange,
    open_signal,
    owner_of,
    reference,
    run_phase,
    states,
)
from tests.persistence.backends import Backend, MemoryBackend, RedisBackend, SqliteBackend

pytestmark = pytest.mark.integration


BACKENDS = ["memory", "sqlite", "redis"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made: Backend
    if request.param == "memory":
        made = MemoryBackend()
    elif request.param == "sqlite":
        made = SqliteBackend(tmp_path)
    else:
        made = RedisBackend(request.getfixturevalue("redis_url"))
    yield made
    made.close()


@pytest.fixture
def runtimes() -> Iterator[Runtimes]:
    started = Runtimes()
    yield started
    started.stop_all()


# -- restarts --------------------------------------------------------------------------------------


EVERY_PHASE = set(range(len(SCRIPT)))


@pytest.mark.parametrize(
    ("backend", "restart_after"),
    [
        pytest.param("memory", {5}, id="memory-once"),
        pytest.param("sqlite", {3, 8}, id="sqlite-twice"),
        pytest.param("redis", {4, 7, 9}, id="redis-three-times"),
        pytest.param("redis", EVERY_PHASE, id="redis-after-every-phase"),
    ],
    indirect=["backend"],
)
def test_restarts_mid_flight_end_with_the_books_of_a_run_without_restarts(
    backend: Backend, runtimes: Runtimes, restart_after: set[int]
) -> None:
    expected = reference()
    exchange = new_exchange()
    applied = AppliedFills()
    store = backend.open()
    runtime = runtimes.start(durable_runtime(exchange, applied.sink(), store))
    runtime.drain()
    for i, phase in enumerate(SCRIPT):
        run_phase(phase, runtime, exchange)
        if i in restart_after:
            runtime.stop()  # with this phase's messages journaled but not (all) applied
            store = backend.open()
            runtime = runtimes.start(durable_runtime(exchange, applied.sink(), store))
        runtime.drain()

    assert runtime.books() == expected.books
    assert states(store) == expected.states
    assert exchange.fetch_my_trades() == expected.trades
    check_against_exchange(states(store), exchange.fetch_my_trades())
    check_orders(states(store), exchange)
    # No event twice over all incarnations. (Not "exactly once": a stop loses the events of
    # its last commits, see tests/actors/test_durable_events.py.)
    assert applied.twice() == []
    assert set(applied.counts) <= {(owner_of(t["clientOrderId"]), t["id"]) for t in expected.trades}
    for partition in range(backend.layout.partitions):
        assert store.pending_count(partition) == 0

    # One more restart, on data that is complete: nothing changes, nothing is published.
    runtime.stop()
    again = AppliedFills()
    store = backend.open()
    runtime = runtimes.start(durable_runtime(exchange, again.sink(), store))
    runtime.drain()
    assert runtime.books() == expected.books
    assert states(store) == expected.states
    assert again.counts == {}


# -- orders in doubt at the crash ------------------------------------------------------------------


def in_doubt(
    backend: Backend, runtimes: Runtimes, lose: str
) -> tuple[SimulatedExchange, dict[str, dict[str, Any]]]:
    """A runtime whose order requests (or their replies) are all lost, stopped with its orders
    in doubt: the grid's initial placements in flight, two position orders unconfirmed.

    Returns the exchange and the committed states the runtime left.
    """
    exchange = new_exchange()
    lossy = LossyExchange(exchange)
    lossy.lose = lose
    store = backend.open()
    runtime = runtimes.start(durable_runtime(cast(Exchange, lossy), AppliedFills().sink(), store))
    runtime.submit(open_signal("s1", "x", "29900"), open_signal("s1", "y", "29800"))
    runtime.drain()
    runtime.stop()
    left = states(store)
    assert [o["client_order_id"] for o in left["s1"]["orders"]] == ["cf-s1-x", "cf-s1-y"]
    grid = GridBook.from_state(left["g1"]["book"])
    assert grid.orders
    assert {o.status for o in grid.orders.values()} == {OrderStatus.IN_FLIGHT}
    return exchange, left


def test_orders_whose_replies_were_lost_are_adopted_with_their_fills_on_restart(
    backend: Backend, runtimes: Runtimes
) -> None:
    exchange, before = in_doubt(backend, runtimes, "reply")
    grid_orders = sorted(GridBook.from_state(before["g1"]["book"]).orders)
    # While the process is down, the orders trade; the feed's copies of the trades are lost.
    for price in ("29790", "29700", "29600"):
        exchange.advance(Decimal(price), MARKET.symbol)
    exchange.drain_fills()
    mine = {cid: exchange.fetch_order(cid) for cid in ("cf-s1-x", "cf-s1-y")}
    assert all(order["trades"] for order in mine.values())

    applied = AppliedFills()
    store = backend.open()
    runtime = runtimes.start(durable_runtime(exchange, applied.sink(), store))
    runtime.drain()

    # Position: the books as they were, plus each order's trades once; a closed order's rest
    # released.
    ledger = PositionLedger.from_state(before["s1"])
    for cid, order in sorted(mine.items()):
        for trade in order["trades"]:
            ledger.apply_fill(trade_to_fill(trade))
        if order["status"] != "open" and cid in ledger.orders:
            ledger.cancel_order(cid)
    after = states(store)
    assert after["s1"] == ledger.to_state()
    # Grid: every placement confirmed under the exchange's id, every trade applied once.
    book = GridBook.from_state(after["g1"]["book"])
    for cid in grid_orders:
        placed = book.orders.get(cid)
        if placed is not None:
            assert placed.status is not OrderStatus.IN_FLIGHT
            assert placed.exchange_id == exchange.fetch_order(cid)["id"]
    check_against_exchange(after, exchange.fetch_my_trades())
    check_orders(after, exchange)
    assert {t for (pid, t) in applied.counts if pid == "s1"} == {
        t["id"] for order in mine.values() for t in order["trades"]
    }
    assert applied.twice() == []


def test_reservations_of_orders_the_exchange_never_received_are_released_on_restart(
    backend: Backend, runtimes: Runtimes
) -> None:
    exchange, before = in_doubt(backend, runtimes, "request")
    assert exchange.fetch_open_orders() == []

    store = backend.open()
    runtime = runtimes.start(durable_runtime(exchange, AppliedFills().sink(), store))
    runtime.drain()

    ledger = PositionLedger.from_state(before["s1"])
    for cid in ("cf-s1-x", "cf-s1-y"):
        ledger.cancel_order(cid)
    book = GridBook.from_state(before["g1"]["book"])
    for cid in sorted(book.orders):
        book.reject_placement(cid)
    after = states(store)
    assert after["s1"] == ledger.to_state()
    assert after["s1"]["reserved_for_orders"] == 0
    assert after["g1"]["book"] == book.to_state()
    assert runtime.books()["s1"]["available"] == ledger.available == POSITION.allocated_capital
    assert exchange.fetch_open_orders() == []  # and nothing was sent behind our back
    check_orders(after, exchange)


# -- pending journal entries -----------------------------------------------------------------------


def journal_fills(store: JournalStore, fills: list[Fill], owner: dict[str, str]) -> None:
    """Append fills as ``Runtime.submit`` journals them (dedupe key: the trade id)."""
    for fill in fills:
        pid = owner[fill.client_order_id]
        store.append(store.partition_of(pid), [(dedupe_key(fill), pack_entry(pid, fill))])


def test_entries_a_dead_runtime_left_pending_are_applied_exactly_once_after_a_restart(
    backend: Backend, runtimes: Runtimes
) -> None:
    exchange = new_exchange()
    store = backend.open()
    runtime = runtimes.start(durable_runtime(exchange, AppliedFills().sink(), store))
    runtime.submit(open_signal("s1", "x", "29900"), open_signal("s2", "x", "29850"))
    runtime.drain()
    owner = {o["clientOrderId"]: owner_of(o["clientOrderId"]) for o in exchange.fetch_open_orders()}
    runtime.stop()
    before = states(store)

    # What a runtime killed mid-batch leaves: fills journaled, some of them read by its
    # consumer (pending, never acked), some not read at all, none committed.
    fills: list[Fill] = []
    for price in ("29840", "29700"):
        exchange.advance(Decimal(price), MARKET.symbol)
        fills += [trade_to_fill(t) for t in exchange.drain_fills()]
    assert {f.client_order_id for f in fills} > {"cf-s1-x", "cf-s2-x"}
    journal_fills(store, fills[: len(fills) // 2], owner)
    for partition in range(store.layout.partitions):
        store.read(partition, HOLDER, 1000)
    journal_fills(store, fills, owner)  # the rest, and the first half again (deduplicated)
    pending = sum(store.pending_count(p, HOLDER) for p in range(store.layout.partitions))
    assert 0 < pending < len({f.trade_id for f in fills})

    applied = AppliedFills()
    store = backend.open()
    runtime = runtimes.start(
        durable_runtime(exchange, applied.sink(), store, reconcile=False)  # the journal only
    )
    runtime.drain()

    after = states(store)
    for pid in ("s1", "s2"):
        ledger = PositionLedger.from_state(before[pid])
        for fill in fills:
            if owner[fill.client_order_id] == pid:
                ledger.apply_fill(fill)  # a trade id seen before changes nothing
        assert after[pid] == ledger.to_state()
    assert sorted(applied.counts) == sorted({(owner[f.client_order_id], f.trade_id) for f in fills})
    for partition in range(store.layout.partitions):
        assert store.pending_count(partition) == 0

    runtime.stop()  # and once more: nothing is applied again
    again = AppliedFills()
    store = backend.open()
    runtime = runtimes.start(durable_runtime(exchange, again.sink(), store, reconcile=False))
    runtime.drain()
    assert states(store) == after
    assert again.counts == {}


# -- a corrupt snapshot ----------------------------------------------------------------------------


def test_a_corrupt_snapshot_fails_its_profile_loudly_and_the_others_keep_working(
    backend: Backend, runtimes: Runtimes, caplog: pytest.LogCaptureFixture
) -> None:
    exchange = new_exchange()
    store = backend.open()
    runtime = runtimes.start(durable_runtime(exchange, AppliedFills().sink(), store))
    runtime.submit(open_signal("s1", "x", "29900"))
    runtime.drain()
    runtime.stop()
    key = backend.layout.snapshot("s1")
    snapshot = store.load("s1")
    assert snapshot is not None
    backend.poke_snapshot("s1", b"\x93not a snapshot", snapshot.offset)

    store = backend.open()
    runtime = runtimes.start(durable_runtime(exchange, AppliedFills().sink(), store))
    runtime.submit(open_signal("s2", "x", "29850"))
    runtime.drain()

    info = runtime.inspect()["profiles"]
    assert info["s1"]["status"] == Status.FAILED.value
    assert info["s2"]["status"] == info["g1"]["status"] == Status.LIVE.value
    books = runtime.books()
    assert sorted(books) == ["g1", "s2"]
    assert books["s2"]["pending_orders"] == 1  # the other profiles work on
    crashes = [r.getMessage() for r in caplog.records if r.name == "capflow.supervisor"]
    assert any("CorruptSnapshot" in m and key in m for m in crashes), crashes
    assert any(m.startswith("profile s1 FAILED") for m in crashes), crashes
    # Never a silent reset: the bad bytes are still there for an operator to look at.
    with pytest.raises(CorruptSnapshot, match=rf"^snapshot {re.escape(key)}: "):
        store.load("s1")
