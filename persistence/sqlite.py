"""The journal and fenced store in one SQLite file: ``capflow run`` without Redis.

Same semantics as ``RedisStore`` (the contract suite runs both): dedupe of trade ids, one
consumer group with pending entries and acks, fencing tokens, and a commit that is one
``BEGIN IMMEDIATE`` transaction. WAL mode; ``synchronous=NORMAL`` (the default here) survives a
killed process like Redis' ``appendfsync everysec`` does, ``FULL`` also survives an OS crash.
Several processes may open the same file: SQLite's locks serialise the writers.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from os import PathLike
from types import TracebackType
from typing import Any, Final, Literal, Self

from messages import CorruptSnapshot, InvalidConfig, StoreUnavailable
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
from persistence.layout import (
    DEFAULT_PARTITIONS,
    DEFAULT_PREFIX,
    LAYOUT_VERSION,
    KeyLayout,
    check_profile_id,
)
from persistence.memory import wall_clock_ms
from persistence.records import Fence, JournalEntry, Snapshot, format_offset, parse_offset

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parts (
    part INTEGER PRIMARY KEY,
    last_ms INTEGER NOT NULL DEFAULT 0,       -- newest journal id
    last_seq INTEGER NOT NULL DEFAULT 0,
    delivered_ms INTEGER NOT NULL DEFAULT 0,  -- the group's last delivered id
    delivered_seq INTEGER NOT NULL DEFAULT 0,
    token INTEGER NOT NULL DEFAULT 0,         -- fencing-token counter
    lease_holder TEXT,
    lease_token INTEGER,
    lease_expires_ms INTEGER
);
CREATE TABLE IF NOT EXISTS journal (
    part INTEGER NOT NULL, ms INTEGER NOT NULL, seq INTEGER NOT NULL,
    dedupe_key TEXT, payload BLOB NOT NULL,
    PRIMARY KEY (part, ms, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (
    part INTEGER NOT NULL, dedupe_key TEXT NOT NULL, ingested_ms INTEGER NOT NULL,
    PRIMARY KEY (part, dedupe_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_by_age ON seen (part, ingested_ms);
CREATE TABLE IF NOT EXISTS pending (
    part INTEGER NOT NULL, ms INTEGER NOT NULL, seq INTEGER NOT NULL,
    consumer TEXT NOT NULL, delivered_ms INTEGER NOT NULL,
    PRIMARY KEY (part, ms, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_by_consumer ON pending (part, consumer, ms, seq);
CREATE TABLE IF NOT EXISTS snapshots (
    profile_id TEXT PRIMARY KEY, part INTEGER NOT NULL,
    applied TEXT NOT NULL, envelope BLOB NOT NULL
) WITHOUT ROWID;
"""

_I64: Final = 2**63
_POLL_S: Final = 0.05  # blocking reads also look for other processes' appends this often
_CHUNK: Final = 500  # bound variables per statement


class SqliteStore:
    """Journal + fenced snapshots in a SQLite database file.

    Args:
        path: the database file (created if missing).
        prefix: key prefix (only used to name keys in error messages, as Redis would).
        partitions: partition count; must match what the file was created with.
        synchronous: ``"NORMAL"`` (survives a killed process) or ``"FULL"`` (and an OS crash).
        clock: milliseconds now, for entry ids, leases, idle times and dedupe ages.
        busy_timeout_s: how long to wait for another process's write lock.

    Raises:
        StoreUnavailable: the file cannot be opened as a database.
        InvalidConfig: it was created with another partition count or layout.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        prefix: str = DEFAULT_PREFIX,
        partitions: int = DEFAULT_PARTITIONS,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        clock: Callable[[], int] = wall_clock_ms,
        busy_timeout_s: float = 5.0,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise InvalidConfig(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self._layout = KeyLayout(prefix, partitions)
        self.path = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._appended = threading.Condition()
        self._cursors: dict[tuple[int, str], tuple[int, int] | None] = {}
        with self._errors("open"):
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
            )
        try:
            self._setup(synchronous)
        except BaseException:
            self._db.close()
            raise

    def _setup(self, synchronous: str) -> None:
        with self._errors("open"):
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal" and self.path != ":memory:":
                raise StoreUnavailable(f"sqlite {self.path}: cannot use WAL mode (got {mode})")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
        with self._tx("open") as db:
            # executescript() would COMMIT our transaction: run the statements one by one
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            wanted = {"layout": str(LAYOUT_VERSION), "partitions": str(self._layout.partitions)}
            db.executemany("INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)", wanted.items())
            found = dict(db.execute("SELECT name, value FROM meta").fetchall())
            if {k: found.get(k) for k in wanted} != wanted:
                raise InvalidConfig(
                    f"sqlite {self.path} holds layout {found.get('layout')} with "
                    f"{found.get('partitions')} partitions; this store was opened with layout "
                    f"{LAYOUT_VERSION} and {self._layout.partitions} partitions"
                )
            db.executemany(
                "INSERT OR IGNORE INTO parts (part) VALUES (?)",
                ((p,) for p in range(self._layout.partitions)),
            )

    def __repr__(self) -> str:
        return f"<SqliteStore {self.path}>"

    @property
    def layout(self) -> KeyLayout:
        return self._layout

    def partition_of(self, profile_id: str) -> int:
        return self._layout.partition_of(profile_id)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite {self.path}: {action} failed: {exc}") from exc

    @contextmanager
    def _tx(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the block returns, rolled back if it raises."""
        with self._lock, self._errors(action):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _part_row(self, db: sqlite3.Connection, partition: int) -> Any:
        self._layout.check_partition(partition)
        return db.execute(
            "SELECT last_ms, last_seq, delivered_ms, delivered_seq, token, lease_holder, "
            "lease_token, lease_expires_ms FROM parts WHERE part = ?",
            (partition,),
        ).fetchone()

    @staticmethod
    def _entry(partition: int, row: Any) -> JournalEntry:
        ms, seq, key, payload = row
        return JournalEntry(
            partition=partition,
            entry_id=format_offset(ms, seq),
            dedupe_key=key,
            payload=bytes(payload),
        )

    # --- journal --------------------------------------------------------------------------

    def append_many(
        self, batches: Mapping[int, Sequence[JournalItem]]
    ) -> dict[int, list[str | None]]:
        return {partition: self.append(partition, items) for partition, items in batches.items()}

    def append(self, partition: int, entries: Sequence[JournalItem]) -> list[str | None]:
        items = check_items(entries)
        with self._tx("append") as db:
            ms, seq = self._part_row(db, partition)[:2]
            now = self._clock()
            ids: list[str | None] = []
            for key, payload in items:
                if key is not None:
                    dup = db.execute(
                        "SELECT 1 FROM seen WHERE part = ? AND dedupe_key = ?", (partition, key)
                    ).fetchone()
                    if dup is not None:
                        ids.append(None)
                        continue
                    db.execute("INSERT INTO seen VALUES (?, ?, ?)", (partition, key, now))
                ms, seq = (now, 0) if now > ms else (ms, seq + 1)
                db.execute(
                    "INSERT INTO journal VALUES (?, ?, ?, ?, ?)", (partition, ms, seq, key, payload)
                )
                ids.append(format_offset(ms, seq))
            db.execute(
                "UPDATE parts SET last_ms = ?, last_seq = ? WHERE part = ?", (ms, seq, partition)
            )
        with self._appended:
            self._appended.notify_all()
        return ids

    def read(
        self, partition: int, consumer: str, count: int, block_ms: int = 0
    ) -> list[JournalEntry]:
        check_name("consumer", consumer)
        check_int("count", count, minimum=1)
        check_int("block_ms", block_ms, minimum=0)
        self._layout.check_partition(partition)
        backlog = self._read_pending(partition, consumer, count)
        if backlog:
            return backlog
        deadline = time.monotonic() + block_ms / 1000
        while True:
            batch = self._read_new(partition, consumer, count)
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0:
                return batch
            with self._appended:
                self._appended.wait(min(remaining, _POLL_S))

    def _read_pending(self, partition: int, consumer: str, count: int) -> list[JournalEntry]:
        slot = (partition, consumer)
        with self._lock:
            cursor = self._cursors.get(slot, (0, 0))
        if cursor is None:
            return []
        with self._tx("read") as db:
            rows = db.execute(
                "SELECT j.ms, j.seq, j.dedupe_key, j.payload FROM pending p "
                "JOIN journal j ON j.part = p.part AND j.ms = p.ms AND j.seq = p.seq "
                "WHERE p.part = ? AND p.consumer = ? AND (p.ms, p.seq) > (?, ?) "
                "ORDER BY p.ms, p.seq LIMIT ?",
                (partition, consumer, *cursor, count),
            ).fetchall()
            now = self._clock()
            db.executemany(
                "UPDATE pending SET delivered_ms = ? WHERE part = ? AND ms = ? AND seq = ?",
                ((now, partition, ms, seq) for ms, seq, _, _ in rows),
            )
        with self._lock:
            self._cursors[slot] = (rows[-1][0], rows[-1][1]) if rows else None
        return [self._entry(partition, row) for row in rows]

    def _read_new(self, partition: int, consumer: str, count: int) -> list[JournalEntry]:
        with self._tx("read") as db:
            delivered = self._part_row(db, partition)[2:4]
            rows = db.execute(
                "SELECT ms, seq, dedupe_key, payload FROM journal "
                "WHERE part = ? AND (ms, seq) > (?, ?) ORDER BY ms, seq LIMIT ?",
                (partition, *delivered, count),
            ).fetchall()
            if rows:
                now = self._clock()
                db.executemany(
                    "INSERT INTO pending VALUES (?, ?, ?, ?, ?)",
                    ((partition, ms, seq, consumer, now) for ms, seq, _, _ in rows),
                )
                db.execute(
                    "UPDATE parts SET delivered_ms = ?, delivered_seq = ? WHERE part = ?",
                    (rows[-1][0], rows[-1][1], partition),
                )
        return [self._entry(partition, row) for row in rows]

    def rewind(self, partition: int, consumer: str) -> None:
        check_name("consumer", consumer)
        self._layout.check_partition(partition)
        with self._lock:
            self._cursors.pop((partition, consumer), None)

    def claim_stale(self, partition: int, consumer: str, min_idle_ms: int) -> list[JournalEntry]:
        check_name("consumer", consumer)
        check_int("min_idle_ms", min_idle_ms, minimum=0)
        self._layout.check_partition(partition)
        with self._tx("claim_stale") as db:
            now = self._clock()
            rows = db.execute(
                "SELECT j.ms, j.seq, j.dedupe_key, j.payload FROM pending p "
                "JOIN journal j ON j.part = p.part AND j.ms = p.ms AND j.seq = p.seq "
                "WHERE p.part = ? AND ? - p.delivered_ms >= ? ORDER BY p.ms, p.seq",
                (partition, now, min_idle_ms),
            ).fetchall()
            db.executemany(
                "UPDATE pending SET consumer = ?, delivered_ms = ? "
                "WHERE part = ? AND ms = ? AND seq = ?",
                ((consumer, now, partition, ms, seq) for ms, seq, _, _ in rows),
            )
        return [self._entry(partition, row) for row in rows]

    def pending_count(self, partition: int, consumer: str | None = None) -> int:
        self._layout.check_partition(partition)
        with self._lock, self._errors("pending_count"):
            if consumer is None:
                row = self._db.execute(
                    "SELECT count(*) FROM pending WHERE part = ?", (partition,)
                ).fetchone()
            else:
                row = self._db.execute(
                    "SELECT count(*) FROM pending WHERE part = ? AND consumer = ?",
                    (partition, consumer),
                ).fetchone()
        return int(row[0])

    def length(self, partition: int) -> int:
        self._layout.check_partition(partition)
        with self._lock, self._errors("length"):
            row = self._db.execute(
                "SELECT count(*) FROM journal WHERE part = ?", (partition,)
            ).fetchone()
        return int(row[0])

    def prune_seen(self, partition: int, older_than_ms: int) -> int:
        check_int("older_than_ms", older_than_ms, minimum=0)
        self._layout.check_partition(partition)
        with self._tx("prune_seen") as db:
            cursor = db.execute(
                "DELETE FROM seen WHERE part = ? AND ingested_ms < ?",
                (partition, self._clock() - older_than_ms),
            )
            return cursor.rowcount

    def journaled(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        wanted = list(dict.fromkeys(keys))
        with self._tx("journaled") as db:
            for start in range(0, len(wanted), 500):  # under SQLite's bound-parameter limit
                chunk = wanted[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT DISTINCT dedupe_key FROM seen WHERE dedupe_key IN ({marks})",
                    chunk,
                )
                found.update(str(row[0]) for row in rows)
        return found

    # --- leases and snapshots ----------------------------------------------------------------

    def _live_lease(self, row: Any) -> tuple[str, int, int] | None:
        holder, token, expires = row[5:8]
        if holder is None or expires <= self._clock():
            return None
        return holder, token, expires

    def _check_current(self, row: Any, fence: Fence, action: str) -> None:
        lease = self._live_lease(row)
        current = None if lease is None else lease[:2]
        if current != (fence.holder, fence.token):
            raise fence_not_current(fence, action, current)

    def acquire_lease(self, partition: int, holder: str, ttl_ms: int) -> Fence:
        check_name("holder", holder)
        check_int("ttl_ms", ttl_ms, minimum=1)
        with self._tx("acquire_lease") as db:
            row = self._part_row(db, partition)
            lease = self._live_lease(row)
            if lease is not None and lease[0] != holder:
                remaining = lease[2] - self._clock()
                raise lease_taken(partition, holder, lease[0], lease[1], remaining)
            token = row[4] + 1
            db.execute(
                "UPDATE parts SET token = ?, lease_holder = ?, lease_token = ?, "
                "lease_expires_ms = ? WHERE part = ?",
                (token, holder, token, self._clock() + ttl_ms, partition),
            )
        return Fence(partition=partition, holder=holder, token=token, ttl_ms=ttl_ms)

    def renew_lease(self, fence: Fence, ttl_ms: int | None = None) -> None:
        check_fence(self._layout, fence)
        ttl = check_int("ttl_ms", fence.ttl_ms if ttl_ms is None else ttl_ms, minimum=1)
        with self._tx("renew_lease") as db:
            self._check_current(self._part_row(db, fence.partition), fence, "renew")
            db.execute(
                "UPDATE parts SET lease_expires_ms = ? WHERE part = ?",
                (self._clock() + ttl, fence.partition),
            )

    def renew_many(self, fences: Sequence[Fence]) -> None:
        for fence in fences:
            self.renew_lease(fence)

    def revive_lease(self, fence: Fence) -> None:
        check_fence(self._layout, fence)
        with self._tx("revive_lease") as db:
            row = self._part_row(db, fence.partition)
            if not (self._live_lease(row) is None and row[4] == fence.token):
                self._check_current(row, fence, "revive")
            db.execute(
                "UPDATE parts SET lease_holder = ?, lease_token = ?, lease_expires_ms = ?"
                " WHERE part = ?",
                (fence.holder, fence.token, self._clock() + fence.ttl_ms, fence.partition),
            )

    def release_lease(self, fence: Fence) -> bool:
        check_fence(self._layout, fence)
        with self._tx("release_lease") as db:
            lease = self._live_lease(self._part_row(db, fence.partition))
            if lease is None or lease[:2] != (fence.holder, fence.token):
                return False
            db.execute(
                "UPDATE parts SET lease_holder = NULL, lease_token = NULL, "
                "lease_expires_ms = NULL WHERE part = ?",
                (fence.partition,),
            )
            return True

    def commit(
        self,
        fence: Fence,
        snapshots: Mapping[str, SnapshotWrite],
        acks: Sequence[str] = (),
    ) -> int:
        prepared, ack_ids = prepare_commit(self._layout, fence, snapshots, acks)
        with self._tx("commit") as db:
            self._check_current(self._part_row(db, fence.partition), fence, "commit")
            for snap in prepared:
                row = db.execute(
                    "SELECT applied FROM snapshots WHERE profile_id = ?", (snap.profile_id,)
                ).fetchone()
                if row is not None and snap.position < parse_offset(row[0]):
                    raise offset_backwards(snap.profile_id, snap.offset, row[0])
            db.executemany(
                "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?)",
                ((s.profile_id, fence.partition, s.offset, s.envelope) for s in prepared),
            )
            acked = 0
            for ack in ack_ids:
                ms, seq = parse_offset(ack)
                if ms < _I64 and seq < _I64:  # larger ids were never ours, so never pending
                    acked += db.execute(
                        "DELETE FROM pending WHERE part = ? AND ms = ? AND seq = ?",
                        (fence.partition, ms, seq),
                    ).rowcount
            return acked

    def commit_many(self, commits: Sequence[CommitWrite]) -> list[int]:
        return [self.commit(fence, snapshots, acks) for fence, snapshots, acks in commits]

    def load(self, profile_id: str) -> Snapshot | None:
        return self.load_many([profile_id]).get(profile_id)

    def load_many(self, profile_ids: Iterable[str]) -> dict[str, Snapshot]:
        ids = list(dict.fromkeys(check_profile_id(pid) for pid in profile_ids))
        rows: list[Any] = []
        with self._lock, self._errors("load"):
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i : i + _CHUNK]
                rows += self._db.execute(
                    "SELECT profile_id, applied, envelope FROM snapshots "
                    f"WHERE profile_id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
        out = {}
        for pid, offset, envelope in rows:
            key = self._layout.snapshot(pid)
            if type(envelope) is not bytes or type(offset) is not str:
                raise CorruptSnapshot(f"snapshot {key}: stored row has the wrong column types")
            out[pid] = decode_snapshot(envelope, key=key, profile_id=pid, stored_offset=offset)
        return out
