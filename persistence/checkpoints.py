"""``SnapshotStore`` (the actors' checkpoint API) on top of a fenced ``JournalStore``.

Until the runtime reads fills from the journal and commits with ``commit()`` itself, this lets
it keep today's ``save(Checkpoint)``/``load()`` calls and still put checkpoints in SQLite or
Redis: a checkpoint's ``seq`` is stored as the offset ``"0-<seq>"``, so "never backwards" is the
store's own offset check.
"""

from __future__ import annotations

import threading

from messages import CorruptSnapshot, StaleFence
from persistence.interfaces import JournalStore
from persistence.records import Fence, format_offset, parse_offset
from persistence.store import Checkpoint


class FencedCheckpointStore:
    """Checkpoints saved through ``commit`` under leases held by ``holder``.

    Args:
        store: where the snapshots go.
        holder: this runtime's lease holder name. Two runtimes with different names cannot
            write the same partition; a restarted runtime with the same name takes over.
        ttl_ms: lease time to live; an expired lease is taken again on the next save.
    """

    def __init__(self, store: JournalStore, *, holder: str, ttl_ms: int = 30_000) -> None:
        self.store = store
        self.holder = holder
        self.ttl_ms = ttl_ms
        self._lock = threading.Lock()
        self._fences: dict[int, Fence] = {}
        self.saves = 0

    def _fence(self, partition: int, *, renew: bool) -> Fence:
        with self._lock:
            fence = self._fences.get(partition)
            if fence is None or renew:
                fence = self.store.acquire_lease(partition, self.holder, self.ttl_ms)
                self._fences[partition] = fence
            return fence

    def save(self, checkpoint: Checkpoint) -> None:
        """Commit the checkpoint; a ``seq`` older than the stored one is ignored.

        Raises:
            StaleFence: another holder owns the partition.
        """
        pid = checkpoint.profile_id
        partition = self.store.partition_of(pid)
        write = {pid: (checkpoint.state, format_offset(0, checkpoint.seq))}
        fence = self._fence(partition, renew=False)  # StaleFence: another holder's partition
        try:
            self.store.commit(fence, write)
        except StaleFence:
            current = self.load(pid)
            if current is not None and current.seq >= checkpoint.seq:
                return  # a late write from a dead incarnation must not move the offset back
            # our lease expired (or a restart of ours took it): take it again, once
            self.store.commit(self._fence(partition, renew=True), write)
        with self._lock:
            self.saves += 1

    def load(self, profile_id: str) -> Checkpoint | None:
        """The latest checkpoint of ``profile_id``, or None."""
        snap = self.store.load(profile_id)
        if snap is None:
            return None
        ms, seq = parse_offset(snap.offset)
        if ms != 0:
            raise CorruptSnapshot(
                f"snapshot {self.store.layout.snapshot(profile_id)}: offset {snap.offset} is a "
                "journal offset, not a checkpoint sequence number"
            )
        return Checkpoint(profile_id=profile_id, seq=seq, state=snap.state)
