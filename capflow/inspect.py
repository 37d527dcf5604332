"""``capflow inspect``: what a durable store holds, decoded into JSON for operators.

    capflow inspect --store redis://127.0.0.1:6380/0 [--prefix capflow] [--partitions 16]
    capflow inspect --store sqlite:///var/lib/capflow/books.db --profile grid1

Per partition: the journal's length, its newest entry and the consumer group's last delivered
one, the entries delivered but not acked (in all and per consumer), the lease (holder, token,
time left) and the last fencing token handed out. Per profile (every profile with a snapshot,
or the one asked for): the snapshot's key, offset and fence token, and its decoded state
(Decimals as strings, ints as ints).

Read only: nothing is written, no consumer group or lease is created, and a SQLite file is
opened read-only. The partition count is read from the store; ``--partitions`` only checks it.
A snapshot that fails verification is reported with its key and the problem, never decoded
half-way.

Exit status: 0 all well; 1 a snapshot is corrupt, or the profile asked for has none;
2 the store cannot be inspected (unreachable, not a capflow store, bad arguments).
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Protocol

import redis

from messages import CorruptSnapshot, InvalidConfig, InvalidMessage
from persistence import DEFAULT_PREFIX, KeyLayout, decode_snapshot, redact_url

EXIT_OK: Final = 0
EXIT_PROBLEM: Final = 1
EXIT_UNUSABLE: Final = 2
#: The consumer group the runtime reads journals through (``RedisStore``'s default).
GROUP: Final = "appliers"
_SQLITE: Final = "sqlite://"


class Unusable(Exception):
    """The store cannot be inspected; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredSnapshot:
    """A snapshot's raw parts, as the store keeps them."""

    profile_id: str
    key: str
    offset: Any
    envelope: Any


class Reader(Protocol):
    """Raw, read-only access to one backend's data."""

    def use(self, layout: KeyLayout) -> None:
        """Read the deployment of ``layout.prefix`` (its partition count may be unknown yet)."""

    def stored_partitions(self) -> int | None:
        """The partition count the store was created with (None: no capflow data)."""

    def partition(self, layout: KeyLayout, partition: int) -> dict[str, Any]:
        """Journal position, pending entries, lease and fence counter of one partition."""

    def snapshots(self, layout: KeyLayout, profile_id: str | None) -> list[StoredSnapshot]:
        """Every stored snapshot (or ``profile_id``'s), sorted by profile id."""

    def close(self) -> None: ...


def _text(value: bytes | str | None) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisReader:
    """Reads capflow's keys with plain read commands (GET, XLEN, XPENDING, SCAN, HMGET)."""

    def __init__(self, url: str) -> None:
        try:
            self._redis = redis.Redis.from_url(
                url, protocol=2, socket_timeout=5.0, socket_connect_timeout=2.0
            )
        except ValueError as exc:
            raise Unusable(f"unusable redis URL {redact_url(url)}: {exc}") from exc
        self._prefix = ""

    def use(self, layout: KeyLayout) -> None:
        self._prefix = layout.prefix

    def stored_partitions(self) -> int | None:
        value = self._redis.hget(f"{{{self._prefix}}}:meta", "partitions")
        return None if value is None else int(value)

    def partition(self, layout: KeyLayout, partition: int) -> dict[str, Any]:
        journal = layout.journal(partition)
        pipe = self._redis.pipeline(transaction=False)
        pipe.xlen(journal)
        pipe.xpending(journal, GROUP)
        pipe.xinfo_groups(journal)
        pipe.xrevrange(journal, count=1)
        pipe.get(layout.lease(partition))
        pipe.pttl(layout.lease(partition))
        pipe.get(layout.fence(partition))
        length, pending, groups, newest, lease, ttl, fence = pipe.execute(raise_on_error=False)
        if isinstance(pending, redis.ResponseError):  # NOGROUP: nothing was ever read
            pending = {"pending": 0, "consumers": []}
        if isinstance(groups, redis.ResponseError):  # no such stream
            groups = []
        for reply in (length, newest, lease, ttl, fence):
            if isinstance(reply, Exception):
                raise reply
        group = next((g for g in groups if _text(g["name"]) == GROUP), None)
        return {
            "journal": {
                "length": int(length),
                "last_entry": _text(newest[0][0]) if newest else None,
                "last_delivered": None if group is None else _text(group["last-delivered-id"]),
            },
            "pending": {
                "total": int(pending["pending"]),
                "by_consumer": {
                    str(_text(c["name"])): int(c["pending"]) for c in pending["consumers"]
                },
            },
            "lease": _lease(_text(lease), None if lease is None else int(ttl)),
            "fence": None if fence is None else int(fence),
        }

    def snapshots(self, layout: KeyLayout, profile_id: str | None) -> list[StoredSnapshot]:
        if profile_id is not None:
            keys = [(profile_id, layout.snapshot(profile_id))]
        else:
            keys = []
            for partition in range(layout.partitions):
                head = f"{layout.tag(partition)}:snap:"
                for raw in self._redis.scan_iter(match=_glob_escape(head) + "*", count=500):
                    key = str(_text(raw))
                    keys.append((key[len(head) :], key))
        out = []
        for pid, key in sorted(keys):
            reply: Any
            try:
                reply = self._redis.hmget(key, ["o", "e"])
            except redis.ResponseError as exc:  # WRONGTYPE: not a hash
                reply = (None, exc)
            offset, envelope = reply
            if offset is None and envelope is None:
                continue
            out.append(StoredSnapshot(profile_id=pid, key=key, offset=offset, envelope=envelope))
        return out

    def close(self) -> None:
        self._redis.close()


def _lease(value: str | None, ttl_ms: int | None) -> dict[str, Any] | None:
    if not value:
        return None
    token, _, holder = value.partition(" ")
    return {"holder": holder, "token": int(token), "ttl_ms": ttl_ms}


class SqliteReader:
    """Reads a ``SqliteStore`` file, opened read-only."""

    def __init__(self, path: str) -> None:
        if not Path(path).is_file():
            raise Unusable(f"no SQLite file at {path}")
        try:
            self._db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
            self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise Unusable(f"cannot read {path} as a SQLite database: {exc}") from exc
        self._path = path

    def use(self, layout: KeyLayout) -> None:
        pass

    def stored_partitions(self) -> int | None:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE name = 'partitions'").fetchone()
        except sqlite3.Error:
            return None  # not a capflow file
        return None if row is None else int(row[0])

    def partition(self, layout: KeyLayout, partition: int) -> dict[str, Any]:
        db = self._db
        last_ms, last_seq, done_ms, done_seq, fence, holder, token, expires = db.execute(
            "SELECT last_ms, last_seq, delivered_ms, delivered_seq, token, lease_holder, "
            "lease_token, lease_expires_ms FROM parts WHERE part = ?",
            (partition,),
        ).fetchone()
        (length,) = db.execute(
            "SELECT count(*) FROM journal WHERE part = ?", (partition,)
        ).fetchone()
        consumers = dict(
            db.execute(
                "SELECT consumer, count(*) FROM pending WHERE part = ? GROUP BY consumer "
                "ORDER BY consumer",
                (partition,),
            ).fetchall()
        )
        now_ms = time.time_ns() // 1_000_000  # SqliteStore's default clock
        live = holder is not None and expires is not None and expires > now_ms
        return {
            "journal": {
                "length": int(length),
                "last_entry": f"{last_ms}-{last_seq}" if length else None,
                "last_delivered": f"{done_ms}-{done_seq}"
                if (done_ms, done_seq) != (0, 0)
                else None,
            },
            "pending": {"total": sum(consumers.values()), "by_consumer": consumers},
            "lease": {"holder": holder, "token": token, "ttl_ms": expires - now_ms}
            if live
            else None,
            "fence": int(fence) if fence else None,
        }

    def snapshots(self, layout: KeyLayout, profile_id: str | None) -> list[StoredSnapshot]:
        query = "SELECT profile_id, applied, envelope FROM snapshots"
        args: tuple[str, ...] = ()
        if profile_id is not None:
            query, args = query + " WHERE profile_id = ?", (profile_id,)
        rows = self._db.execute(query + " ORDER BY profile_id", args).fetchall()
        return [
            StoredSnapshot(
                profile_id=pid, key=layout.snapshot(pid), offset=offset, envelope=envelope
            )
            for pid, offset, envelope in rows
        ]

    def close(self) -> None:
        self._db.close()


def open_reader(url: str) -> RedisReader | SqliteReader:
    """A reader for ``redis://``, ``rediss://``, ``unix://`` or ``sqlite://<path>`` URLs.

    ``sqlite:///var/lib/capflow.db`` is the absolute path ``/var/lib/capflow.db``;
    ``sqlite://books.db`` is relative to the working directory.
    """
    if url.startswith(_SQLITE):
        return SqliteReader(url[len(_SQLITE) :])
    if url.split("://", 1)[0] in ("redis", "rediss", "unix"):
        return RedisReader(url)
    raise Unusable(f"--store must be a redis://, rediss://, unix:// or sqlite:// URL: {url!r}")


def decode_profile(snap: StoredSnapshot) -> dict[str, Any]:
    """The snapshot's offset, fence and state, or its key and what is wrong with it."""
    out: dict[str, Any] = {"key": snap.key}
    try:
        if isinstance(snap.envelope, Exception):
            raise CorruptSnapshot(f"snapshot {snap.key}: not a snapshot hash ({snap.envelope})")
        if snap.offset is None or snap.envelope is None:
            missing = "offset" if snap.offset is None else "envelope"
            raise CorruptSnapshot(f"snapshot {snap.key}: incomplete, {missing} missing")
        offset = _text(snap.offset)
        if not isinstance(snap.envelope, bytes):
            raise CorruptSnapshot(f"snapshot {snap.key}: the envelope is not bytes")
        decoded = decode_snapshot(
            snap.envelope, key=snap.key, profile_id=snap.profile_id, stored_offset=offset
        )
    except (CorruptSnapshot, UnicodeDecodeError) as exc:
        return {**out, "error": str(exc)}
    return {**out, "offset": decoded.offset, "fence": decoded.fence, "state": decoded.state}


def inspect_store(
    reader: Reader, *, prefix: str, partitions: int | None, profile_id: str | None
) -> tuple[dict[str, Any], bool]:
    """The report, and whether it found a problem (a corrupt or missing snapshot)."""
    reader.use(KeyLayout(prefix))
    stored = reader.stored_partitions()
    if stored is None:
        raise Unusable(f"no capflow data here (prefix {prefix!r}): nothing to inspect")
    if partitions is not None and partitions != stored:
        raise Unusable(f"the store was created with {stored} partitions, not {partitions}")
    layout = KeyLayout(prefix, stored)
    shown = range(stored) if profile_id is None else [layout.partition_of(profile_id)]
    profiles = {s.profile_id: decode_profile(s) for s in reader.snapshots(layout, profile_id)}
    problem = any("error" in p for p in profiles.values())
    if profile_id is not None and profile_id not in profiles:
        profiles[profile_id] = {"key": layout.snapshot(profile_id), "error": "no snapshot"}
        problem = True
    report = {
        "prefix": prefix,
        "partitions": stored,
        "journal": {str(p): reader.partition(layout, p) for p in shown},
        "profiles": profiles,
        "errors": [
            {"profile_id": pid, "key": p["key"], "error": p["error"]}
            for pid, p in profiles.items()
            if "error" in p
        ],
    }
    return report, problem


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot show a {type(value).__name__} as JSON")


def add_parser(sub: Any) -> None:
    """Register the ``inspect`` subcommand."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "inspect",
        help="decode a durable store's snapshots and journal positions (read only)",
        description="Print what a capflow store (Redis or SQLite) holds as JSON: per partition "
        "the journal position, pending entries, lease and fence; per profile the snapshot's "
        "offset, fence and decoded state. Exit 1 if a snapshot is corrupt.",
    )
    parser.add_argument(
        "--store", required=True, metavar="URL", help="redis://host:port/db or sqlite:///path"
    )
    parser.add_argument("--profile", metavar="ID", help="only this profile (and its partition)")
    parser.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"key prefix (default {DEFAULT_PREFIX})"
    )
    parser.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        help="expected partition count (default: the count the store records)",
    )
    parser.set_defaults(func=main)


def _fail(message: str) -> int:
    print(f"capflow inspect: {message}", file=sys.stderr)
    return EXIT_UNUSABLE


def main(args: argparse.Namespace) -> int:
    """Print the report of ``args.store``; see the module docstring for exit codes."""
    try:
        KeyLayout(args.prefix)
        reader = open_reader(args.store)
    except (Unusable, InvalidConfig) as exc:
        return _fail(str(exc))
    try:
        report, problem = inspect_store(
            reader, prefix=args.prefix, partitions=args.partitions, profile_id=args.profile
        )
    except Unusable as exc:
        return _fail(str(exc))
    except (InvalidConfig, InvalidMessage) as exc:
        return _fail(str(exc))
    except (redis.RedisError, sqlite3.Error, OSError) as exc:
        return _fail(f"cannot read {redact_url(args.store)}: {exc}")
    finally:
        reader.close()
    print(json.dumps({"store": redact_url(args.store), **report}, indent=2, default=_json_default))
    for error in report["errors"]:
        print(f"capflow inspect: {error['error']}", file=sys.stderr)
    return EXIT_PROBLEM if problem else EXIT_OK
