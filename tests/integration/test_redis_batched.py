"""The batched store calls on a real redis-server (a forgotten script cache, a small pool)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis

from persistence import RedisStore
from tests.persistence.backends import Backend, RedisBackend, profiles_in
from tests.persistence.batched import TTL, BatchedContract, items

pytestmark = pytest.mark.integration


class TestRedisBatched(BatchedContract):
    @pytest.fixture
    def backend(self, redis_url: str) -> Iterator[Backend]:
        backend = RedisBackend(redis_url)
        yield backend
        backend.close()


def test_batched_calls_reload_scripts_the_server_forgot(redis_url: str) -> None:
    backend = RedisBackend(redis_url)
    try:
        store = backend.open()
        assert isinstance(store, RedisStore)
        fence = store.acquire_lease(0, "w", TTL)
        redis.Redis.from_url(redis_url).script_flush()  # as after a restart without the cache
        ids = store.append_many({0: items("a"), 1: items("b")})
        assert None not in ids[0] + ids[1]
        redis.Redis.from_url(redis_url).script_flush()
        pid = profiles_in(store.layout, 0, 1)[0]
        entry = store.read(0, "r", 10)[0].entry_id
        assert store.commit_many([(fence, {pid: ({"n": 1}, entry)}, [entry])]) == [1]
        assert store.pending_count(0) == 0
    finally:
        backend.close()


def test_more_threads_than_pooled_connections_wait_for_one_instead_of_failing(
    redis_url: str,
) -> None:
    store = RedisStore(redis_url, prefix="pool", client_kwargs={"max_connections": 2})
    errors: list[Exception] = []
    go = threading.Barrier(16)

    def load() -> None:
        go.wait()
        try:
            for _ in range(20):
                store.load_many([f"p{i}" for i in range(5)])
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    assert errors == []
