"""The fill journal and the fenced snapshot store: what every backend promises.

Exactly-once *effect* is built from two halves (``docs/redis-layout.md``):

* the :class:`Journal` delivers every ingested entry at least once: ``append`` skips a trade id
  already ingested, a consumer group hands entries out and keeps them pending until acked, and a
  restarted consumer gets its own pending entries again before new ones;
* the :class:`FencedStore` makes applying them idempotent and atomic: ``commit`` writes the
  snapshots (each carrying the offset of the last entry applied to it) and acks the entries in
  one step, and only for the current lease holder, so a recovering worker skips what a snapshot
  already contains and a zombie worker cannot write at all.

Three backends keep these promises and pass one contract suite (``tests/persistence``):
``MemoryJournalStore``, ``SqliteStore`` and ``RedisStore``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, TypeAlias

from messages import StateValue
from persistence.layout import KeyLayout
from persistence.records import Fence, JournalEntry, Snapshot

#: What ``append`` takes: ``(dedupe_key, payload)``; a None key is never deduplicated.
JournalItem: TypeAlias = tuple[str | None, bytes]

#: What ``commit`` takes per profile: ``(state, offset of the last entry applied to it)``.
SnapshotWrite: TypeAlias = tuple[dict[str, StateValue], str]

#: One partition's commit for :meth:`FencedStore.commit_many`: ``(fence, snapshots, acks)``.
CommitWrite: TypeAlias = tuple[Fence, Mapping[str, SnapshotWrite], Sequence[str]]


class Journal(Protocol):
    """An append-only, partitioned log of fills, read through one consumer group."""

    @property
    def layout(self) -> KeyLayout:
        """The key layout (prefix and partition count) of this store."""

    def partition_of(self, profile_id: str) -> int:
        """The partition of ``profile_id``: its entries and snapshot live there."""

    def append(self, partition: int, entries: Sequence[JournalItem]) -> list[str | None]:
        """Ingest ``entries`` atomically, skipping every dedupe key ingested before.

        A key is also a duplicate of an earlier item of the same call. Returns one item per
        entry: the new entry id, or None for a duplicate. Ids increase strictly.
        """

    def append_many(
        self, batches: Mapping[int, Sequence[JournalItem]]
    ) -> dict[int, list[str | None]]:
        """:meth:`append` for several partitions at once (Redis: one round trip for all).

        Each partition's batch is atomic on its own, as with :meth:`append`; the batches
        together are not: on an error some partitions may have been appended, which is safe to
        retry for keyed entries. Returns ``append``'s answer per partition.
        """

    def read(
        self, partition: int, consumer: str, count: int, block_ms: int = 0
    ) -> list[JournalEntry]:
        """Up to ``count`` entries for ``consumer``, which keeps them pending until acked.

        The first reads of a consumer (by this store object, or after :meth:`rewind`) return
        its own pending entries, oldest first; once those are exhausted, new entries. When
        there is nothing, waits up to ``block_ms`` for new entries (0: do not wait).
        """

    def rewind(self, partition: int, consumer: str) -> None:
        """Make ``consumer``'s next read start again from its pending entries (after a crash)."""

    def claim_stale(self, partition: int, consumer: str, min_idle_ms: int) -> list[JournalEntry]:
        """Move every entry pending for at least ``min_idle_ms`` (any consumer) to ``consumer``."""

    def pending_count(self, partition: int, consumer: str | None = None) -> int:
        """How many entries are delivered but not acked (of ``consumer``, or of all)."""

    def length(self, partition: int) -> int:
        """How many entries the partition's journal holds."""

    def prune_seen(self, partition: int, older_than_ms: int) -> int:
        """Forget dedupe keys ingested more than ``older_than_ms`` ago; returns how many."""

    def journaled(self, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` that some partition has journaled (and not pruned yet).

        For a message nobody owns, so its partition is unknown: e.g. an exchange re-send of a
        trade whose order closed before a restart, which was journaled for its owner then.
        """


class FencedStore(Protocol):
    """Profile snapshots written only by the current holder of their partition's lease."""

    def acquire_lease(self, partition: int, holder: str, ttl_ms: int) -> Fence:
        """Take the partition's lease with a new, larger fencing token.

        ``holder`` may re-acquire its own live lease (a restarted worker): the new token fences
        out its previous incarnation.

        Raises:
            StaleFence: another holder's lease is live.
        """

    def renew_lease(self, fence: Fence, ttl_ms: int | None = None) -> None:
        """Extend the lease by ``ttl_ms`` (default ``fence.ttl_ms``) from now.

        Raises:
            StaleFence: ``fence`` is not the current lease (expired or taken over).
        """

    def renew_many(self, fences: Sequence[Fence]) -> None:
        """:meth:`renew_lease` (with each fence's own ttl) for several partitions at once.

        Redis: one round trip for all of them, so that a process whose threads queue for the
        interpreter lock renews every lease in time.

        Raises:
            StaleFence: one of them is not current (the others may have been renewed).
        """

    def revive_lease(self, fence: Fence) -> None:
        """Hold the lease again after it lapsed, if nobody has acquired it since.

        A holder that could not renew in time (starved of CPU, or the store was down for
        longer than the TTL) is still the last writer as long as ``fence.token`` is the
        partition's latest token: no one else can have committed, so carrying on is as safe as
        if the lease had never lapsed. A live lease of this fence is simply renewed.

        Raises:
            StaleFence: another acquisition happened since (or the lease is live for another
                token): the caller must stop.
        """

    def release_lease(self, fence: Fence) -> bool:
        """Drop the lease if ``fence`` still holds it; True if it did."""

    def commit(
        self,
        fence: Fence,
        snapshots: Mapping[str, SnapshotWrite],
        acks: Sequence[str] = (),
    ) -> int:
        """Atomically write ``snapshots`` and ack ``acks`` in ``fence.partition``.

        All or nothing: when anything is refused, nothing is written and nothing acked.
        Returns how many of ``acks`` were pending (and now are not).

        Raises:
            StaleFence: ``fence`` is not the current lease, or a snapshot's offset is older
                than the stored one (equal is fine).
            InvalidMessage: a profile outside ``fence.partition``, an offset or ack that is
                not a stream id, or state that is not plain snapshot data.
            StoreUnavailable: the outcome is unknown; reload before going on.
        """

    def commit_many(self, commits: Sequence[CommitWrite]) -> list[int]:
        """:meth:`commit` for several partitions (Redis: one round trip for all of them).

        Each commit is atomic and checked on its own, exactly as :meth:`commit`; together
        they are not. Returns each commit's acked count, in order.

        Raises:
            StaleFence: one of them was refused (the others may have been written).
            StoreUnavailable: the outcome of each is unknown; a retry of the same commits is
                safe (equal offsets and acked entries are accepted).
            InvalidMessage: see :meth:`commit`.
        """

    def load(self, profile_id: str) -> Snapshot | None:
        """The profile's latest snapshot, or None if none was ever committed.

        Raises:
            CorruptSnapshot: the stored bytes fail verification (never a silent reset).
        """

    def load_many(self, profile_ids: Iterable[str]) -> dict[str, Snapshot]:
        """Snapshots of the profiles that have one, by profile id."""


class JournalStore(Journal, FencedStore, Protocol):
    """A backend: journal and fenced snapshots on the same storage."""

    def close(self) -> None:
        """Release connections and files; the data stays."""
