"""A durable start reads every snapshot in bulk; a later incarnation reads its own again.

10,000 profiles each loading their snapshot in one round trip made recovery take seconds
(docs/performance.md, third round); the runtime now prefetches them once it holds every lease.
The prefetched snapshot may only serve the profile's *first* load: after a crash, the store has
newer commits, and a stale prefetch would silently roll the books back.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from actors.events import EventSink
from actors.profile import CrashNow
from persistence import MemoryJournalStore, Snapshot
from tests.actors.test_durable_world import (
    PROFILES,
    Runtimes,
    durable_runtime,
    new_exchange,
    open_signal,
)


class CountingStore(MemoryJournalStore):
    """Counts snapshot reads: bulk calls, and single loads by profile."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bulk: list[list[str]] = []
        self.single: collections.Counter[str] = collections.Counter()

    def load(self, profile_id: str) -> Snapshot | None:
        self.single[profile_id] += 1
        return super().load(profile_id)

    def load_many(self, profile_ids: Iterable[str]) -> dict[str, Snapshot]:
        ids = list(profile_ids)
        self.bulk.append(ids)
        found = {pid: MemoryJournalStore.load(self, pid) for pid in ids}  # not counted as single
        return {pid: snap for pid, snap in found.items() if snap is not None}

    def reopened(self) -> CountingStore:
        return CountingStore(_data=self._data)


@pytest.fixture
def runtimes() -> Iterator[Runtimes]:
    started = Runtimes()
    yield started
    started.stop_all()


def test_a_restart_reads_every_snapshot_in_one_bulk_call_and_none_one_by_one(
    runtimes: Runtimes,
) -> None:
    exchange = new_exchange()
    store = CountingStore(partitions=4)
    first = runtimes.start(durable_runtime(exchange, EventSink(), store))
    first.submit(open_signal("s1", "x", "29900"))
    first.drain()
    books = first.books()
    first.stop()

    again = store.reopened()
    second = runtimes.start(durable_runtime(exchange, EventSink(), again, reconcile=False))
    second.drain()
    assert again.bulk == [list(PROFILES)]
    assert again.single == {}
    assert second.books() == books
    assert books["s1"]["pending_orders"] == 1  # the snapshots were not empty


def test_a_profile_restarted_later_reads_its_snapshot_again_not_the_prefetched_one(
    runtimes: Runtimes,
) -> None:
    exchange = new_exchange()
    store = CountingStore(partitions=4)
    runtime = runtimes.start(durable_runtime(exchange, EventSink(), store))
    runtime.drain()
    assert store.single == {}  # every first load came from the prefetch (of empty snapshots)

    runtime.submit(open_signal("s1", "x", "29900"))
    runtime.drain()  # committed: the store now holds a newer snapshot than the prefetch
    runtime.submit(CrashNow(profile_id="s1"))
    runtime.drain()

    assert runtime.inspect()["profiles"]["s1"]["incarnation"] == 2
    assert store.single == {"s1": 1}
    assert runtime.books()["s1"]["pending_orders"] == 1  # not rolled back to the prefetch
