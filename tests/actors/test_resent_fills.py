"""Durable mode: an exchange re-send of a trade whose order closed before a restart.

The restarted ownership index knows open orders only, so such a fill has no owner; the journal
already holds its trade (journaled and applied for its owner before the restart), so it is a
duplicate: dropped and counted, not parked and reported as unroutable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from decimal import Decimal

import pytest

from actors.events import EventSink
from exchange import Trade, trade_to_fill
from messages import FillApplied, FillRejected
from persistence import MemoryJournalStore
from tests.actors.test_durable_world import Runtimes, durable_runtime, new_exchange, open_signal


@pytest.fixture
def runtimes() -> Iterator[Runtimes]:
    started = Runtimes()
    yield started
    started.stop_all()


def test_a_resent_fill_of_an_order_closed_before_a_restart_is_a_duplicate(
    runtimes: Runtimes,
) -> None:
    exchange = new_exchange()
    store = MemoryJournalStore(partitions=4)
    exchange.advance(Decimal("30000"))
    first = runtimes.start(durable_runtime(exchange, EventSink(), store))
    first.drain()
    first.submit(open_signal("s1", "a", "30010"))
    first.drain()
    trades: list[Trade] = []
    for step in range(40):  # partial fills: until the order is closed
        if "cf-s1-a" not in {o["clientOrderId"] for o in exchange.fetch_open_orders()}:
            break
        exchange.advance(Decimal("29990") - step)
        fills = exchange.drain_fills()
        trades += [t for t in fills if t["clientOrderId"] == "cf-s1-a"]
        first.submit(*[trade_to_fill(t) for t in fills if t["clientOrderId"] == "cf-s1-a"])
    first.drain()
    assert trades
    assert "cf-s1-a" not in {o["clientOrderId"] for o in exchange.fetch_open_orders()}
    first.stop()

    events = EventSink()
    seen: list[object] = []
    events.subscribe(seen.append)
    second = runtimes.start(durable_runtime(exchange, events, store))
    second.drain()
    resent = trade_to_fill(trades[0])
    stranger = dataclasses.replace(
        resent, trade_id="T-never-seen", client_order_id="cf-s1-zz", message_id="stranger"
    )
    second.submit(resent, stranger)
    second.drain()

    assert second.resent_fills_dropped == 1
    assert second.inspect()["parked"] == 1  # only the stranger waits for an owner
    rejected = [e for e in seen if isinstance(e, FillRejected)]
    assert [(r.reason, r.trade_id) for r in rejected] == [("unroutable", "T-never-seen")]
    assert [e for e in seen if isinstance(e, FillApplied)] == []
