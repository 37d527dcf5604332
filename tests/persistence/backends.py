"""One harness per backend, so the contract suite can run the same tests on each.

A harness opens handles on one set of data (``open()`` again is what a restarted process gets)
and does to the stored data what tests need and the public API does not offer: expire a lease
as if its TTL had passed, age dedupe keys as if time had passed, overwrite stored snapshot bytes.
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any, Protocol

import redis

from persistence import JournalStore, KeyLayout, MemoryJournalStore, RedisStore, SqliteStore

#: Few partitions, so that tests find several profiles sharing one.
PARTITIONS = 4


class Backend(Protocol):
    name: str
    layout: KeyLayout

    def open(self) -> JournalStore: ...

    def expire_lease(self, partition: int) -> None: ...

    def age_dedupe_keys(self, partition: int, ms: int) -> None: ...

    def poke_snapshot(self, profile_id: str, envelope: bytes, offset: str) -> None: ...

    def close(self) -> None: ...


class MemoryBackend:
    name = "memory"

    def __init__(self) -> None:
        self._first = MemoryJournalStore(partitions=PARTITIONS)
        self.layout = self._first.layout

    def open(self) -> JournalStore:
        return self._first.reopened()

    def expire_lease(self, partition: int) -> None:
        data = self._first._data
        with data.cond:
            lease = data.partitions[partition].lease
            if lease is not None:
                lease.expires_ms = 0

    def age_dedupe_keys(self, partition: int, ms: int) -> None:
        data = self._first._data
        with data.cond:
            seen = data.partitions[partition].seen
            for key in seen:
                seen[key] -= ms

    def poke_snapshot(self, profile_id: str, envelope: bytes, offset: str) -> None:
        from persistence.memory import _Stored

        with self._first._data.cond:
            self._first._data.snapshots[profile_id] = _Stored(offset, envelope)

    def close(self) -> None:
        pass


class SqliteBackend:
    name = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.path = directory / f"capflow-{uuid.uuid4().hex[:8]}.db"
        self._handles: list[SqliteStore] = []
        self.layout = KeyLayout(partitions=PARTITIONS)

    def open(self) -> JournalStore:
        store = SqliteStore(self.path, partitions=PARTITIONS)
        self._handles.append(store)
        return store

    def _sql(self, statement: str, *args: object) -> None:
        import sqlite3

        with sqlite3.connect(self.path, isolation_level=None) as db:
            db.execute(statement, args)
        db.close()

    def expire_lease(self, partition: int) -> None:
        self._sql("UPDATE parts SET lease_expires_ms = 0 WHERE part = ?", partition)

    def age_dedupe_keys(self, partition: int, ms: int) -> None:
        self._sql("UPDATE seen SET ingested_ms = ingested_ms - ? WHERE part = ?", ms, partition)

    def poke_snapshot(self, profile_id: str, envelope: bytes, offset: str) -> None:
        self._sql(
            "UPDATE snapshots SET envelope = ?, applied = ? WHERE profile_id = ?",
            envelope,
            offset,
            profile_id,
        )

    def close(self) -> None:
        for store in self._handles:
            store.close()


_prefixes = itertools.count()


class RedisBackend:
    """A fresh key prefix on a shared server: tests never see each other's keys."""

    name = "redis"

    def __init__(self, url: str) -> None:
        self.url = url
        prefix = f"t{next(_prefixes)}-{uuid.uuid4().hex[:8]}"
        self.layout = KeyLayout(prefix, PARTITIONS)
        self.raw = redis.Redis.from_url(url, protocol=2)
        self._handles: list[RedisStore] = []

    def open(self) -> JournalStore:
        store = RedisStore(self.url, prefix=self.layout.prefix, partitions=PARTITIONS)
        self._handles.append(store)
        return store

    def expire_lease(self, partition: int) -> None:
        self.raw.delete(self.layout.lease(partition))  # what the TTL does when it runs out

    def age_dedupe_keys(self, partition: int, ms: int) -> None:
        key = self.layout.seen(partition)
        scored: list[Any] = self.raw.zrange(key, 0, -1, withscores=True)
        for member, score in scored:
            self.raw.zadd(key, {member: int(score) - ms}, xx=True)

    def poke_snapshot(self, profile_id: str, envelope: bytes, offset: str) -> None:
        self.raw.hset(self.layout.snapshot(profile_id), mapping={"o": offset, "e": envelope})

    def close(self) -> None:
        for store in self._handles:
            store.close()
        self.raw.close()


def profiles_in(layout: KeyLayout, partition: int, n: int) -> list[str]:
    """The first ``n`` profile ids ``prof-<i>`` that hash into ``partition``."""
    found = (f"prof-{i}" for i in itertools.count())
    return list(itertools.islice((p for p in found if layout.partition_of(p) == partition), n))
