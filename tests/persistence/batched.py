"""``append_many`` and ``commit_many``: the batched calls behave like a loop of single calls.

Run on every backend: the embedded ones in ``test_batched_calls.py``, Redis in
``tests/integration/test_redis_batched.py`` (which also drops the server's script cache).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from messages import StaleFence
from persistence import JournalStore
from tests.persistence.backends import Backend, profiles_in

TTL = 60_000


def items(*keys: str | None) -> list[tuple[str | None, bytes]]:
    return [(key, f"payload-{key}".encode()) for key in keys]


class BatchedContract:
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        raise NotImplementedError("a backend's test class provides this fixture")

    @pytest.fixture
    def store(self, backend: Backend) -> JournalStore:
        return backend.open()

    def test_append_many_ingests_each_partition_and_dedupes_like_append(self, store):
        first = store.append_many({0: items("a", "b", "a"), 2: items("c", None), 3: []})
        assert sorted(first) == [0, 2, 3]
        assert first[0][2] is None
        assert None not in first[0][:2]
        assert None not in first[2]
        assert first[3] == []
        again = store.append_many({0: items("b", "d"), 2: items("c")})
        assert again[0][0] is None
        assert again[0][1] is not None
        assert again[2] == [None]
        for partition, ids in ((0, first[0][:2] + again[0][1:]), (2, first[2])):
            read = store.read(partition, "r", 10)
            assert [e.entry_id for e in read] == ids
            assert read[0].payload == (b"payload-a" if partition == 0 else b"payload-c")

    def test_commit_many_commits_every_partition_and_acks_its_entries(self, store):
        ids = store.append_many({0: items("a"), 1: items("b")})
        entries = {p: store.read(p, "r", 10) for p in (0, 1)}
        fences = {p: store.acquire_lease(p, "w", TTL) for p in (0, 1)}
        pids = {p: profiles_in(store.layout, p, 1)[0] for p in (0, 1)}
        acked = store.commit_many(
            [
                (fences[p], {pids[p]: ({"n": p}, ids[p][0])}, [e.entry_id for e in entries[p]])
                for p in (0, 1)
            ]
        )
        assert acked == [1, 1]
        assert store.pending_count(0) == store.pending_count(1) == 0
        loaded = store.load_many(pids.values())
        assert {pid: (s.state, s.offset) for pid, s in loaded.items()} == {
            pids[p]: ({"n": p}, ids[p][0]) for p in (0, 1)
        }
        assert store.commit_many([]) == []

    def test_commit_many_refuses_a_stale_fence(self, store):
        old = store.acquire_lease(0, "w", TTL)
        store.acquire_lease(0, "w", TTL)  # a newer incarnation of the same holder
        pid = profiles_in(store.layout, 0, 1)[0]
        with pytest.raises(StaleFence, match=r"^commit refused: fence \d+ of 'w' on partition 0"):
            store.commit_many([(old, {pid: ({"n": 1}, "5-0")}, [])])
        assert store.load(pid) is None

    def test_commit_many_refuses_an_offset_going_back(self, store):
        fence = store.acquire_lease(1, "w", TTL)
        pid = profiles_in(store.layout, 1, 1)[0]
        store.commit_many([(fence, {pid: ({"n": 1}, "9-0")}, [])])
        message = (
            f"commit refused: snapshot of profile {pid!r} at offset 8-0 would go back from 9-0"
        )
        with pytest.raises(StaleFence, match=f"^{re.escape(message)}$"):
            store.commit_many([(fence, {pid: ({"n": 2}, "8-0")}, [])])
        loaded = store.load(pid)
        assert loaded is not None
        assert loaded.state == {"n": 1}

    def test_renew_many_renews_every_lease_and_refuses_a_stale_one(self, backend, store):
        fences = [store.acquire_lease(p, "w", TTL) for p in (0, 1)]
        store.renew_many(fences)
        store.renew_many([])
        backend.expire_lease(1)
        store.acquire_lease(1, "v", TTL)
        with pytest.raises(
            StaleFence,
            match=r"^renew refused: fence \d+ of 'w' on partition 1 is not current "
            r"\(lease is 'v' token \d+\)$",
        ):
            store.renew_many(fences)
