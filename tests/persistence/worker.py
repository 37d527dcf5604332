"""A toy partition applier and its model: the crash harness of the exactly-once contract.

The applier does what the runtime will do with a journal store: take the partition's lease,
claim every entry a previous holder left pending, then loop read → apply → commit. A profile's
state is just the list of trade ids applied to it, so the model is trivial: every distinct
trade id ingested for a profile, once, in ingest order. Crashes are simulated by stopping a
worker between two steps and starting a new one on a reopened store.

``NaiveWorker`` is the control (NOTES.md, "Exactly-once effect"): it applies whatever it is
delivered and acks in a second step; the tests show this harness catches its double applies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack

from persistence import ZERO_OFFSET, Fence, JournalEntry, JournalStore, parse_offset

CrashPoint = Literal["after_claim", "after_read", "after_apply", "after_commit"]
CRASH_POINTS: tuple[CrashPoint, ...] = ("after_claim", "after_read", "after_apply", "after_commit")
LEASE_MS = 60_000


#: profile id -> (trade ids applied, offset of the last entry applied)
Books = dict[str, tuple[list[str], str]]


def _snapshots(books: Books) -> dict[str, tuple[dict[str, Any], str]]:
    return {pid: ({"applied": list(applied)}, offset) for pid, (applied, offset) in books.items()}


class Crash(Exception):
    """The worker's process died here."""


def fill_payload(profile_id: str, trade_id: str) -> bytes:
    out: bytes = msgpack.packb([profile_id, trade_id])
    return out


def ingest(store: JournalStore, fills: Iterable[tuple[str, str]]) -> list[str | None]:
    """Append ``(profile_id, trade_id)`` fills, grouped by partition, deduped by trade id."""
    by_partition: dict[int, list[tuple[str | None, bytes]]] = {}
    for profile_id, trade_id in fills:
        part = store.partition_of(profile_id)
        by_partition.setdefault(part, []).append((trade_id, fill_payload(profile_id, trade_id)))
    ids: list[str | None] = []
    for part, items in by_partition.items():
        ids += store.append(part, items)
    return ids


@dataclass
class Model:
    """What exactly-once means: each distinct trade id of a profile applied once, in order."""

    applied: dict[str, list[str]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def ingest(self, fills: Iterable[tuple[str, str]]) -> None:
        for profile_id, trade_id in fills:
            if trade_id not in self.seen:
                self.seen.add(trade_id)
                self.applied.setdefault(profile_id, []).append(trade_id)


class Worker:
    """One incarnation of a partition applier (its in-memory state dies with it)."""

    def __init__(self, store: JournalStore, partition: int, holder: str, consumer: str) -> None:
        self.store = store
        self.partition = partition
        self.consumer = consumer
        self.fence: Fence = store.acquire_lease(partition, holder, LEASE_MS)
        self.books: Books = {}
        self._recovered = False

    def _book(self, profile_id: str) -> tuple[list[str], str]:
        if profile_id not in self.books:
            snap = self.store.load(profile_id)
            if snap is None:
                self.books[profile_id] = ([], ZERO_OFFSET)
            else:
                applied = snap.state["applied"]
                assert isinstance(applied, list)
                self.books[profile_id] = ([str(t) for t in applied], snap.offset)
        return self.books[profile_id]

    def apply(self, entries: list[JournalEntry]) -> tuple[Books, list[str]]:
        """Apply in memory; returns what to commit: touched books and the entry ids to ack."""
        touched = {}
        for entry in entries:
            profile_id, trade_id = msgpack.unpackb(entry.payload)
            applied, offset = self._book(profile_id)
            if parse_offset(entry.entry_id) <= parse_offset(offset):
                continue  # redelivered, and already inside the snapshot
            self.books[profile_id] = touched[profile_id] = ([*applied, trade_id], entry.entry_id)
        return touched, [e.entry_id for e in entries]

    def commit(self, touched: Books, acks: list[str]) -> None:
        self.store.commit(self.fence, _snapshots(touched), acks)

    def step(self, count: int, crash: CrashPoint | None = None) -> int:
        """One batch: claim (first step only) or read, apply, commit. Returns entries handled."""
        if not self._recovered:
            # A new lease holder first takes over whatever its predecessors left pending;
            # min_idle 0 is safe because the lease fences every predecessor out.
            entries = self.store.claim_stale(self.partition, self.consumer, 0)
            self._recovered = True
            if crash == "after_claim":
                raise Crash
        else:
            entries = self.store.read(self.partition, self.consumer, count)
        if crash == "after_read":
            raise Crash
        touched, acks = self.apply(entries)
        if crash == "after_apply":
            raise Crash
        self.commit(touched, acks)
        if crash == "after_commit":
            raise Crash
        return len(entries)

    def drain(self, count: int = 5) -> None:
        """Step until nothing is left to read."""
        self.step(count)
        while self.step(count):
            pass


class NaiveWorker(Worker):
    """The control: applies whatever is delivered (no offsets), snapshots, then acks apart."""

    crash_before_ack = False

    def apply(self, entries: list[JournalEntry]) -> tuple[Books, list[str]]:
        touched = {}
        for entry in entries:
            profile_id, trade_id = msgpack.unpackb(entry.payload)
            applied, _ = self._book(profile_id)
            self.books[profile_id] = touched[profile_id] = ([*applied, trade_id], ZERO_OFFSET)
        return touched, [e.entry_id for e in entries]

    def commit(self, touched: Books, acks: list[str]) -> None:
        self.store.commit(self.fence, _snapshots(touched), [])
        if self.crash_before_ack:
            raise Crash
        self.store.commit(self.fence, {}, acks)


def committed(store: JournalStore, profile_ids: Iterable[str]) -> dict[str, list[str]]:
    """What the store holds: each profile's applied trade ids."""
    out = {}
    for pid, snap in store.load_many(profile_ids).items():
        applied = snap.state["applied"]
        assert isinstance(applied, list)
        out[pid] = [str(t) for t in applied]
    return out
