"""``capflow inspect`` on real stores: a redis-server of its own and a SQLite file."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from actors.events import EventSink
from capflow import cli
from persistence import JournalStore, RedisServer, RedisStore, SqliteStore
from persistence.redis_server import free_port
from tests.actors.test_durable_world import (
    HOLDER,
    PROFILES,
    durable_runtime,
    new_exchange,
    open_signal,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer(appendonly=False) as started:
        yield started


def commit_profiles(store: JournalStore) -> None:
    """A durable runtime's books, committed; plus a state that holds a Decimal."""
    runtime = durable_runtime(new_exchange(), EventSink(), store).start()
    try:
        runtime.submit(open_signal("s1", "a", "29900"), open_signal("s2", "a", "29850"))
        runtime.drain()
    finally:
        runtime.stop()
    partition = store.partition_of("d1")
    fence = store.acquire_lease(partition, HOLDER, 60_000)
    store.commit(fence, {"d1": ({"price": Decimal("1.50"), "n": 3, "ok": True}, "0-0")})


def inspect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = cli.main(["inspect", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out else None, err


def plain(state: dict[str, Any]) -> Any:
    return json.loads(json.dumps(state, default=str))


@pytest.fixture(scope="module")
def redis_store(server: RedisServer) -> Iterator[RedisStore]:
    store = RedisStore(server.url, prefix=f"insp-{uuid.uuid4().hex[:8]}", partitions=PARTITIONS)
    commit_profiles(store)
    yield store
    store.close()


def test_every_partition_and_profile_of_a_redis_store_decoded(
    server: RedisServer, redis_store: RedisStore, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = redis_store.layout.prefix
    code, report, err = inspect(capsys, "--store", server.url, "--prefix", prefix)

    assert (code, err) == (0, "")
    assert report["store"] == server.url
    assert (report["prefix"], report["partitions"]) == (prefix, PARTITIONS)
    assert sorted(report["profiles"]) == sorted([*PROFILES, "d1"])
    for pid in PROFILES:
        shown = report["profiles"][pid]
        stored = redis_store.load(pid)
        assert stored is not None
        assert shown == {
            "key": redis_store.layout.snapshot(pid),
            "offset": stored.offset,
            "fence": stored.fence,
            "state": plain(stored.state),
        }
    # Decimals as strings, ints as ints (and bools as bools).
    assert report["profiles"]["d1"]["state"] == {"price": "1.50", "n": 3, "ok": True}
    assert report["profiles"]["s1"]["state"]["allocated_capital"] == 200_000
    assert report["errors"] == []

    journal = report["journal"]
    assert sorted(journal) == [str(p) for p in range(PARTITIONS)]
    for p in range(PARTITIONS):
        part = journal[str(p)]
        assert part["journal"]["length"] == redis_store.length(p)
        assert part["pending"] == {"total": 0, "by_consumer": {}}
        assert part["lease"]["holder"] == HOLDER
        assert part["lease"]["token"] == part["fence"]
        assert 0 < part["lease"]["ttl_ms"] <= 60_000
    s1 = journal[str(redis_store.partition_of("s1"))]["journal"]
    assert s1["last_entry"] == s1["last_delivered"] == report["profiles"]["s1"]["offset"]


def test_one_profile_and_its_partition_only(
    server: RedisServer, redis_store: RedisStore, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = redis_store.layout.prefix
    code, report, _ = inspect(
        capsys, "--store", server.url, "--prefix", prefix, "--profile", "s2", "--partitions", "4"
    )

    assert code == 0
    assert list(report["profiles"]) == ["s2"]
    assert list(report["journal"]) == [str(redis_store.partition_of("s2"))]

    code, report, _ = inspect(capsys, "--store", server.url, "--prefix", prefix, "--profile", "zz")
    assert code == 1
    assert report["profiles"]["zz"]["error"] == "no snapshot"


def test_a_corrupt_snapshot_is_named_with_its_error_not_a_traceback(
    server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    store = RedisStore(server.url, prefix=f"bad-{uuid.uuid4().hex[:8]}", partitions=PARTITIONS)
    commit_profiles(store)
    key = store.layout.snapshot("s2")
    with redis.Redis.from_url(server.url) as raw:
        raw.hset(key, "e", b"\xc1 not msgpack")

    code, report, err = inspect(capsys, "--store", server.url, "--prefix", store.layout.prefix)

    assert code == 1
    message = f"snapshot {key}: truncated or not msgpack"
    assert report["profiles"]["s2"]["key"] == key
    assert report["profiles"]["s2"]["error"].startswith(message)
    assert [(e["profile_id"], e["key"]) for e in report["errors"]] == [("s2", key)]
    assert "state" in report["profiles"]["s1"]  # the others are still shown
    assert err.startswith(f"capflow inspect: {message}")
    assert "Traceback" not in err
    store.close()


def test_a_sqlite_file_with_pending_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "books.db"
    store = SqliteStore(path, partitions=PARTITIONS)
    commit_profiles(store)
    partition = store.partition_of("s1")
    store.append(partition, [("k1", b"x"), ("k2", b"y"), ("k3", b"z")])
    store.read(partition, "worker-7", 2)

    code, report, err = inspect(capsys, "--store", f"sqlite://{path}")

    assert (code, err) == (0, "")
    assert report["store"] == f"sqlite://{path}"
    assert sorted(report["profiles"]) == sorted([*PROFILES, "d1"])
    loaded = store.load("g1")
    assert loaded is not None
    assert report["profiles"]["g1"]["state"] == plain(loaded.state)
    assert report["profiles"]["g1"]["key"] == f"{{capflow:p{store.partition_of('g1')}}}:snap:g1"
    part = report["journal"][str(partition)]
    assert part["journal"]["length"] == store.length(partition)
    assert part["pending"] == {"total": 2, "by_consumer": {"worker-7": 2}}
    assert part["lease"]["holder"] == HOLDER
    store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "http://example.com"], "--store must be a redis://"),
        (["--store", "sqlite:///nonexistent/books.db"], "no SQLite file at /nonexistent"),
        (["--store", "redis://127.0.0.1:{port}/0"], "cannot read redis://127.0.0.1"),
        (["--store", "{url}", "--prefix", "nothing-here"], "no capflow data here"),
        (["--store", "{url}", "--prefix", "{prefix}", "--partitions", "8"], "the store was"),
        (["--store", "{url}", "--prefix", "a{{b"], "key prefix must be"),
    ],
)
def test_what_cannot_be_inspected_is_said_in_one_line(
    server: RedisServer,
    redis_store: RedisStore,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    values = {"port": free_port(), "url": server.url, "prefix": redis_store.layout.prefix}
    code, report, err = inspect(capsys, *(a.format(**values) for a in args))

    assert (code, report) == (2, None)
    assert err.startswith(f"capflow inspect: {message}")
    assert err.count("\n") == 1
