"""The journal and fenced store in memory: the reference backend, and the embedded default.

Same semantics as ``RedisStore`` (the contract suite runs both), minus durability: the data
lives as long as the process. Thread-safe: one lock around everything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from persistence._checks import (
    check_fence,
    check_int,
    check_items,
    check_name,
    fence_not_current,
    lease_taken,
    offset_backwards,
    prepare_commit,
)
from persistence.envelope import decode_snapshot
from persistence.interfaces import CommitWrite, JournalItem, SnapshotWrite
from persistence.layout import DEFAULT_PARTITIONS, DEFAULT_PREFIX, KeyLayout, check_profile_id
from persistence.records import Fence, JournalEntry, Snapshot, format_offset, parse_offset

Position = tuple[int, int]


def wall_clock_ms() -> int:
    """Milliseconds since the epoch (the clock Redis stamps entries and leases with)."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Pending:
    consumer: str
    delivered_ms: int


@dataclass(slots=True)
class _Lease:
    holder: str
    token: int
    expires_ms: int


@dataclass(slots=True)
class _Partition:
    entries: list[JournalEntry] = field(default_factory=list)
    by_position: dict[Position, JournalEntry] = field(default_factory=dict)
    last: Position = (0, 0)
    delivered: int = 0  # entries[:delivered] went to the group once
    seen: dict[str, int] = field(default_factory=dict)
    pending: dict[Position, _Pending] = field(default_factory=dict)
    lease: _Lease | None = None
    token: int = 0


@dataclass(slots=True)
class _Stored:
    offset: str
    envelope: bytes


class _Data:
    """Everything a MemoryJournalStore holds; shared by its reopened handles."""

    def __init__(self, layout: KeyLayout) -> None:
        self.layout = layout
        self.cond = threading.Condition(threading.Lock())
        self.partitions = [_Partition() for _ in range(layout.partitions)]
        self.snapshots: dict[str, _Stored] = {}


class MemoryJournalStore:
    """Journal + fenced snapshots in process memory.

    Args:
        prefix: key prefix (only used to name keys in error messages, as Redis would).
        partitions: partition count.
        clock: milliseconds now, for entry ids, leases, idle times and dedupe ages
            (default: the wall clock).
    """

    def __init__(
        self,
        *,
        prefix: str = DEFAULT_PREFIX,
        partitions: int = DEFAULT_PARTITIONS,
        clock: Callable[[], int] = wall_clock_ms,
        _data: _Data | None = None,
    ) -> None:
        self._data = _Data(KeyLayout(prefix, partitions)) if _data is None else _data
        self._clock = clock
        # Per consumer: the last pending entry re-read, or None once caught up with the backlog.
        self._cursors: dict[tuple[int, str], Position | None] = {}

    def reopened(self) -> MemoryJournalStore:
        """A new handle on the same data, as a restarted process gets from a durable store."""
        return MemoryJournalStore(clock=self._clock, _data=self._data)

    @property
    def layout(self) -> KeyLayout:
        return self._data.layout

    def partition_of(self, profile_id: str) -> int:
        return self._data.layout.partition_of(profile_id)

    def close(self) -> None:
        """Nothing to release."""

    def _part(self, partition: int) -> _Partition:
        return self._data.partitions[self._data.layout.check_partition(partition)]

    # --- journal --------------------------------------------------------------------------

    def append_many(
        self, batches: Mapping[int, Sequence[JournalItem]]
    ) -> dict[int, list[str | None]]:
        return {partition: self.append(partition, items) for partition, items in batches.items()}

    def append(self, partition: int, entries: Sequence[JournalItem]) -> list[str | None]:
        items = check_items(entries)
        with self._data.cond:
            part = self._part(partition)
            now = self._clock()
            ids: list[str | None] = []
            for key, payload in items:
                if key is not None and key in part.seen:
                    ids.append(None)
                    continue
                ms, seq = part.last
                part.last = (now, 0) if now > ms else (ms, seq + 1)
                entry = JournalEntry(
                    partition=partition,
                    entry_id=format_offset(*part.last),
                    dedupe_key=key,
                    payload=payload,
                )
                part.entries.append(entry)
                part.by_position[part.last] = entry
                if key is not None:
                    part.seen[key] = now
                ids.append(entry.entry_id)
            self._data.cond.notify_all()
            return ids

    def read(
        self, partition: int, consumer: str, count: int, block_ms: int = 0
    ) -> list[JournalEntry]:
        check_name("consumer", consumer)
        check_int("count", count, minimum=1)
        check_int("block_ms", block_ms, minimum=0)
        deadline = time.monotonic() + block_ms / 1000
        with self._data.cond:
            part = self._part(partition)
            backlog = self._read_pending(part, partition, consumer, count)
            if backlog:
                return backlog
            while part.delivered >= len(part.entries):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._data.cond.wait(remaining)
            batch = part.entries[part.delivered : part.delivered + count]
            part.delivered += len(batch)
            now = self._clock()
            for entry in batch:
                part.pending[parse_offset(entry.entry_id)] = _Pending(consumer, now)
            return batch

    def _read_pending(
        self, part: _Partition, partition: int, consumer: str, count: int
    ) -> list[JournalEntry]:
        slot = (partition, consumer)
        cursor = self._cursors.get(slot, (0, 0))
        if cursor is None:
            return []
        mine = sorted(
            pos for pos, p in part.pending.items() if p.consumer == consumer and pos > cursor
        )[:count]
        if not mine:
            self._cursors[slot] = None
            return []
        now = self._clock()
        for pos in mine:
            part.pending[pos].delivered_ms = now
        self._cursors[slot] = mine[-1]
        return [part.by_position[pos] for pos in mine]

    def rewind(self, partition: int, consumer: str) -> None:
        check_name("consumer", consumer)
        self._data.layout.check_partition(partition)
        with self._data.cond:
            self._cursors.pop((partition, consumer), None)

    def claim_stale(self, partition: int, consumer: str, min_idle_ms: int) -> list[JournalEntry]:
        check_name("consumer", consumer)
        check_int("min_idle_ms", min_idle_ms, minimum=0)
        with self._data.cond:
            part = self._part(partition)
            now = self._clock()
            claimed = []
            for pos in sorted(part.pending):
                pending = part.pending[pos]
                if now - pending.delivered_ms >= min_idle_ms:
                    part.pending[pos] = _Pending(consumer, now)
                    claimed.append(part.by_position[pos])
            return claimed

    def pending_count(self, partition: int, consumer: str | None = None) -> int:
        with self._data.cond:
            pending = self._part(partition).pending.values()
            if consumer is None:
                return len(pending)
            return sum(1 for p in pending if p.consumer == consumer)

    def length(self, partition: int) -> int:
        with self._data.cond:
            return len(self._part(partition).entries)

    def prune_seen(self, partition: int, older_than_ms: int) -> int:
        check_int("older_than_ms", older_than_ms, minimum=0)
        with self._data.cond:
            part = self._part(partition)
            cutoff = self._clock() - older_than_ms
            old = [key for key, ms in part.seen.items() if ms < cutoff]
            for key in old:
                del part.seen[key]
            return len(old)

    def journaled(self, keys: Sequence[str]) -> set[str]:
        with self._data.cond:
            return {
                key
                for key in keys
                if any(key in self._part(p).seen for p in range(self._data.layout.partitions))
            }

    # --- leases and snapshots ----------------------------------------------------------------

    def _live_lease(self, part: _Partition) -> _Lease | None:
        lease = part.lease
        return lease if lease is not None and lease.expires_ms > self._clock() else None

    def _check_current(self, part: _Partition, fence: Fence, action: str) -> _Lease:
        lease = self._live_lease(part)
        if lease is None or (lease.holder, lease.token) != (fence.holder, fence.token):
            current = None if lease is None else (lease.holder, lease.token)
            raise fence_not_current(fence, action, current)
        return lease

    def acquire_lease(self, partition: int, holder: str, ttl_ms: int) -> Fence:
        check_name("holder", holder)
        check_int("ttl_ms", ttl_ms, minimum=1)
        with self._data.cond:
            part = self._part(partition)
            lease = self._live_lease(part)
            if lease is not None and lease.holder != holder:
                remaining = lease.expires_ms - self._clock()
                raise lease_taken(partition, holder, lease.holder, lease.token, remaining)
            part.token += 1
            part.lease = _Lease(holder, part.token, self._clock() + ttl_ms)
            return Fence(partition=partition, holder=holder, token=part.token, ttl_ms=ttl_ms)

    def renew_lease(self, fence: Fence, ttl_ms: int | None = None) -> None:
        check_fence(self._data.layout, fence)
        ttl = check_int("ttl_ms", fence.ttl_ms if ttl_ms is None else ttl_ms, minimum=1)
        with self._data.cond:
            lease = self._check_current(self._part(fence.partition), fence, "renew")
            lease.expires_ms = self._clock() + ttl

    def renew_many(self, fences: Sequence[Fence]) -> None:
        for fence in fences:
            self.renew_lease(fence)

    def revive_lease(self, fence: Fence) -> None:
        check_fence(self._data.layout, fence)
        with self._data.cond:
            part = self._part(fence.partition)
            lease = self._live_lease(part)
            if lease is None and part.token == fence.token:
                part.lease = _Lease(fence.holder, fence.token, self._clock() + fence.ttl_ms)
                return
            self._check_current(part, fence, "revive").expires_ms = self._clock() + fence.ttl_ms

    def release_lease(self, fence: Fence) -> bool:
        check_fence(self._data.layout, fence)
        with self._data.cond:
            part = self._part(fence.partition)
            lease = self._live_lease(part)
            if lease is None or (lease.holder, lease.token) != (fence.holder, fence.token):
                return False
            part.lease = None
            return True

    def commit(
        self,
        fence: Fence,
        snapshots: Mapping[str, SnapshotWrite],
        acks: Sequence[str] = (),
    ) -> int:
        prepared, ack_ids = prepare_commit(self._data.layout, fence, snapshots, acks)
        with self._data.cond:
            part = self._part(fence.partition)
            self._check_current(part, fence, "commit")
            for snap in prepared:
                stored = self._data.snapshots.get(snap.profile_id)
                if stored is not None and snap.position < parse_offset(stored.offset):
                    raise offset_backwards(snap.profile_id, snap.offset, stored.offset)
            # Checked everything: from here on nothing can refuse, so the commit is whole.
            for snap in prepared:
                self._data.snapshots[snap.profile_id] = _Stored(snap.offset, snap.envelope)
            acked = 0
            for ack in ack_ids:
                if part.pending.pop(parse_offset(ack), None) is not None:
                    acked += 1
            return acked

    def commit_many(self, commits: Sequence[CommitWrite]) -> list[int]:
        return [self.commit(fence, snapshots, acks) for fence, snapshots, acks in commits]

    def load(self, profile_id: str) -> Snapshot | None:
        check_profile_id(profile_id)
        with self._data.cond:
            stored = self._data.snapshots.get(profile_id)
        if stored is None:
            return None
        key = self._data.layout.snapshot(profile_id)
        return decode_snapshot(
            stored.envelope, key=key, profile_id=profile_id, stored_offset=stored.offset
        )

    def load_many(self, profile_ids: Iterable[str]) -> dict[str, Snapshot]:
        out = {}
        for profile_id in profile_ids:
            snap = self.load(profile_id)
            if snap is not None:
                out[profile_id] = snap
        return out
