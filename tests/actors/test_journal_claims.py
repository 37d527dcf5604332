"""The journal readers claim other consumers' idle entries, and never re-deliver their own."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator

import pytest

from actors.journal import JournalEntries, JournalIngest, pack_entry
from actors.ownership import OwnershipIndex
from messages import PriceTick
from persistence import JournalEntry, MemoryJournalStore
from tests.actors.conftest import eventually
from tests.messages.examples import build

PARTITION = 0


class CountingStore(MemoryJournalStore):
    """A journal on a clock the test moves, counting the readers' claims."""

    def __init__(self) -> None:
        self.now = 1_000
        super().__init__(partitions=1, clock=lambda: self.now)
        self.claims = 0

    def claim_stale(self, partition: int, consumer: str, min_idle_ms: int) -> list[JournalEntry]:
        out = super().claim_stale(partition, consumer, min_idle_ms)
        self.claims += 1
        return out


class Delivered:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: collections.Counter[str] = collections.Counter()
        self.claimed: list[str] = []

    def __call__(self, entries: JournalEntries) -> None:
        with self.lock:
            for _, offset, _, _ in entries.items:
                self.ids[offset] += 1
                if entries.claimed:
                    self.claimed.append(offset)


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def delivered() -> Delivered:
    return Delivered()


@pytest.fixture
def ingest(store: CountingStore, delivered: Delivered) -> Iterator[JournalIngest]:
    ingest = JournalIngest(
        store,
        OwnershipIndex(),
        consumer="me",
        deliver=delivered,
        order_key=lambda payload: None,
        block_ms=1,
        claim_idle_ms=2,  # checks every millisecond, scans whatever the counts say every 20 ms
    )
    yield ingest
    ingest.stop()


def journal(store: CountingStore, n: int) -> list[str]:
    items = [(f"t{i}", pack_entry("p1", build(PriceTick, message_id=f"m{i}"))) for i in range(n)]
    ids = store.append(PARTITION, items)
    assert None not in ids
    return [i for i in ids if i is not None]


def test_entries_waiting_for_their_commit_are_not_claimed_back_and_delivered_again(
    store: CountingStore, delivered: Delivered, ingest: JournalIngest
) -> None:
    ids = journal(store, 5)
    ingest.start([PARTITION])
    eventually(lambda: sum(delivered.ids.values()) == 5, what="the entries to be delivered")
    store.now += 3_600_000  # never committed: pending and idle for an hour
    claims = store.claims
    eventually(lambda: store.claims >= claims + 3, what="three claim scans")
    ingest.stop()

    assert delivered.ids == dict.fromkeys(ids, 1)
    assert delivered.claimed == []


def test_another_consumers_idle_entries_are_claimed_and_delivered_once(
    store: CountingStore, delivered: Delivered, ingest: JournalIngest
) -> None:
    ids = journal(store, 4)
    assert [e.entry_id for e in store.read(PARTITION, "zombie", 2)] == ids[:2]
    ingest.start([PARTITION], rewind=True)
    eventually(lambda: sum(delivered.ids.values()) == 2, what="the unread entries")
    store.now += 3_600_000
    eventually(lambda: sum(delivered.ids.values()) == 4, what="the zombie's entries")
    claims = store.claims
    eventually(lambda: store.claims >= claims + 3, what="three more claim scans")
    ingest.stop()

    assert delivered.ids == dict.fromkeys(ids, 1)
    assert sorted(delivered.claimed) == ids[:2]
    assert store.pending_count(PARTITION, "zombie") == 0


def test_acked_entries_leave_the_readers_books(store: CountingStore, ingest: JournalIngest) -> None:
    ids = journal(store, 3)
    ingest.start([PARTITION])
    eventually(ingest.caught_up, what="the readers to catch up")
    fence = store.acquire_lease(PARTITION, "me", 60_000)
    store.commit(fence, {}, ids[:2])
    ingest.acked(PARTITION, ids[:2])

    assert not ingest._foreign_pending(PARTITION)
    assert ingest._delivered[PARTITION] == {ids[2]}
