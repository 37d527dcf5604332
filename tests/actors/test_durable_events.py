"""Durable mode publishes an event only once the commit that covers it is durable, and once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from actors.events import EventSink
from actors.supervisor import Supervisor
from messages import OrderAccepted
from persistence import MemoryJournalStore
from tests.actors.conftest import eventually
from tests.actors.test_durable_world import (
    GRIDS,
    Runtimes,
    durable_runtime,
    new_exchange,
    open_signal,
)

SIGNALS = [open_signal("s1", f"x{i}", "20000", qty=10_000) for i in range(5)]


class GatedStore(MemoryJournalStore):
    """A memory journal store whose commits wait while the gate is closed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    def commit(self, *args: Any, **kwargs: Any) -> int:
        if not self.gate.is_set():
            self.waiting.set()
            assert self.gate.wait(timeout=30), "the test never opened the gate"
        return super().commit(*args, **kwargs)


@pytest.fixture
def runtimes() -> Iterator[Runtimes]:
    started = Runtimes()
    yield started
    started.stop_all()


def accepted(sink: EventSink, profile_id: str) -> list[str]:
    return sorted(
        e.client_order_id
        for e in sink.recent("OrderAccepted")
        if isinstance(e, OrderAccepted) and e.profile_id == profile_id
    )


def committed_orders(store: MemoryJournalStore, profile_id: str) -> list[str]:
    snapshot = store.load(profile_id)
    assert snapshot is not None
    orders: Any = snapshot.state["orders"]
    return sorted(o["client_order_id"] for o in orders)


def test_events_wait_for_their_commit_and_are_published_once(runtimes: Runtimes) -> None:
    exchange = new_exchange()
    store = GatedStore(partitions=4)
    events = EventSink()
    runtime = runtimes.start(durable_runtime(exchange, events, store))
    runtime.drain()
    assert len(accepted(events, GRIDS[0])) == 6

    store.gate.clear()
    runtime.submit(*SIGNALS)
    eventually(lambda: len(exchange.fetch_open_orders()) == 6 + len(SIGNALS), what="the orders")
    assert store.waiting.wait(timeout=30)
    assert accepted(events, "s1") == []  # sent, applied, but not durable yet: nothing said

    store.gate.set()
    runtime.drain()
    assert accepted(events, "s1") == [f"cf-s1-{s.signal_id}" for s in SIGNALS]
    assert events.count("OrderAccepted") == 6 + len(SIGNALS)


def test_a_stop_publishes_the_events_of_the_commits_it_flushes(runtimes: Runtimes) -> None:
    exchange = new_exchange()
    store = GatedStore(partitions=4)
    first = EventSink()
    runtime = runtimes.start(durable_runtime(exchange, first, store))
    runtime.drain()

    store.gate.clear()
    runtime.submit(*SIGNALS)
    eventually(lambda: len(exchange.fetch_open_orders()) == 6 + len(SIGNALS), what="the orders")
    assert store.waiting.wait(timeout=30)
    stopping = threading.Thread(target=runtime.stop)
    stopping.start()  # a graceful stop while the commit of the signals is on its way
    eventually(
        lambda: not pykka.ActorRegistry.get_by_class(Supervisor), what="the supervisor to stop"
    )
    store.gate.set()
    stopping.join(timeout=30)
    assert not stopping.is_alive()

    second = EventSink()
    again = runtimes.start(durable_runtime(exchange, second, store.reopened()))
    again.drain()
    assert committed_orders(store, "s1") == [f"cf-s1-{s.signal_id}" for s in SIGNALS]
    assert accepted(first, "s1") + accepted(second, "s1") == [
        f"cf-s1-{s.signal_id}" for s in SIGNALS
    ]
