"""FencedCheckpointStore: the actors' SnapshotStore API on a fenced journal store."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messages import CorruptSnapshot, StaleFence
from persistence import (
    Checkpoint,
    FencedCheckpointStore,
    MemoryJournalStore,
    MemoryStore,
    SnapshotStore,
    SqliteStore,
)
from tests.persistence.backends import MemoryBackend


def cp(pid: str, seq: int, **state: int) -> Checkpoint:
    return Checkpoint(profile_id=pid, seq=seq, state=dict(state))


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 20), st.integers(0, 9)),
        max_size=30,
    )
)
def test_behaves_like_memory_store(saves):
    reference: SnapshotStore = MemoryStore()
    adapted: SnapshotStore = FencedCheckpointStore(
        MemoryJournalStore(partitions=4), holder="runtime"
    )
    for pid, seq, value in saves:
        reference.save(cp(pid, seq, v=value))
        adapted.save(cp(pid, seq, v=value))
        assert adapted.load(pid) == reference.load(pid)
    for pid in "abcd":
        assert adapted.load(pid) == reference.load(pid)


def test_checkpoints_survive_a_restart_in_sqlite(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "c.db") as db:
        store = FencedCheckpointStore(db, holder="runtime")
        store.save(cp("alice", 3, cash=100))
        store.save(cp("alice", 2, cash=1))  # late write of a dead incarnation: ignored
        assert store.saves == 1
    with SqliteStore(tmp_path / "c.db") as db:
        assert FencedCheckpointStore(db, holder="runtime").load("alice") == cp("alice", 3, cash=100)


def test_another_runtime_cannot_write_the_same_partition():
    backend = MemoryBackend()
    first = FencedCheckpointStore(backend.open(), holder="one")
    first.save(cp("alice", 1, v=1))
    second = FencedCheckpointStore(backend.open(), holder="two")
    with pytest.raises(StaleFence, match=r"is leased to 'one'"):
        second.save(cp("alice", 2, v=2))
    assert second.load("alice") == cp("alice", 1, v=1)


def test_an_expired_lease_is_taken_again_on_the_next_save():
    backend = MemoryBackend()
    store = FencedCheckpointStore(backend.open(), holder="one")
    store.save(cp("alice", 1, v=1))
    backend.expire_lease(store.store.partition_of("alice"))
    store.save(cp("alice", 2, v=2))
    assert store.load("alice") == cp("alice", 2, v=2)


def test_a_journal_snapshot_is_not_read_as_a_checkpoint():
    journal = MemoryJournalStore(partitions=4)
    fence = journal.acquire_lease(journal.partition_of("alice"), "w", 1000)
    journal.commit(fence, {"alice": ({}, "1700000000000-0")})
    with pytest.raises(CorruptSnapshot, match=r"is a journal offset, not a checkpoint sequence"):
        FencedCheckpointStore(journal, holder="w").load("alice")
