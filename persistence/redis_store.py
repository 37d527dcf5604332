"""The journal and fenced store on Redis (redis-py): streams, a consumer group, Lua commits.

Keys follow :class:`~persistence.layout.KeyLayout` (``docs/redis-layout.md``); the scripts are
in ``persistence/_lua.py``. Every network failure surfaces as ``StoreUnavailable`` naming the
server (never its password); the client does not retry on its own, because a retried append
without a dedupe key would be ingested twice: callers retry, knowing what they retry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Final, Self, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.exceptions import NoPermissionError, NoScriptError, OutOfMemoryError, ReadOnlyError
from redis.retry import Retry

from messages import CorruptSnapshot, InvalidConfig, StoreUnavailable
from persistence import _lua
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
from persistence.records import Fence, JournalEntry, Snapshot

T = TypeVar("T")

DEFAULT_GROUP: Final = "appliers"
_CLAIM_PAGE: Final = 100
# Replies that mean "the server cannot serve us right now", not "capflow has a bug".
_UNAVAILABLE_CODES: Final = (
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "MISCONF",
    "NOAUTH",
    "NOPERM",
    "OOM",
    "READONLY",
    "TRYAGAIN",
    "WRONGPASS",
    "CLUSTERDOWN",
)


def _unavailable(exc: redis.ResponseError) -> bool:
    """Whether a reply error means the server will not serve us (auth, memory, loading...)."""
    if isinstance(exc, NoPermissionError | OutOfMemoryError | ReadOnlyError):
        return True  # redis-py strips the code from these
    return str(exc).split("caused error: ", 1)[-1].startswith(_UNAVAILABLE_CODES)


def redact_url(url: str) -> str:
    """``url`` without its password (userinfo or ``?password=``), for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{host}" if user else host
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    # not urlunsplit(): it drops the empty authority of unix:///path
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _lease_value(fence: Fence) -> str:
    return f"{fence.token} {fence.holder}"


def _parse_lease(value: str) -> tuple[str, int] | None:
    """``(holder, token)`` of a stored lease value, or None for an empty one."""
    if not value:
        return None
    token, holder = value.split(" ", 1)
    return holder, int(token)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStore:
    """Journal + fenced snapshots on a Redis server (7.0 or later).

    Args:
        url: ``redis://[user[:password]@]host[:port][/db]``, ``rediss://`` (TLS) or
            ``unix:///path/to/redis.sock[?db=N]``.
        prefix: key namespace (see ``KeyLayout``).
        partitions: partition count; must match what the database was first used with.
        username: ACL user (overrides one in the URL).
        password: its password (overrides one in the URL).
        group: the consumer group that appliers read the journals through.
        socket_timeout_s: how long one command may take before ``StoreUnavailable``; blocking
            reads must wait less than this.
        connect_timeout_s: how long connecting may take.
        client_kwargs: more ``redis.Redis`` options (e.g. ``ssl_ca_certs`` for ``rediss://``).

    Raises:
        InvalidConfig: an unusable URL or layout.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        partitions: int = DEFAULT_PARTITIONS,
        username: str | None = None,
        password: str | None = None,
        group: str = DEFAULT_GROUP,
        socket_timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self._layout = KeyLayout(prefix, partitions)
        self.url = redact_url(url)
        self.group = check_name("group", group)
        self._socket_timeout_ms = int(socket_timeout_s * 1000)
        options: dict[str, Any] = {
            "protocol": 2,
            "socket_timeout": socket_timeout_s,
            "socket_connect_timeout": connect_timeout_s,
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": False,
        }
        if username is not None:
            options["username"] = username
        if password is not None:
            options["password"] = password
        options |= dict(client_kwargs or {})
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise InvalidConfig(f"redis URL must be redis://, rediss:// or unix://: {self.url}")
        # A blocking pool: threads beyond the pool's size wait for a connection (up to the
        # socket timeout) instead of failing with "Too many connections", which a thousand
        # profiles loading their snapshots at once did (a busy client, not an unavailable store).
        options.setdefault("max_connections", 64)
        options.setdefault("timeout", socket_timeout_s)
        try:
            pool = redis.BlockingConnectionPool.from_url(url, **options)
        except ValueError as exc:
            raise InvalidConfig(f"unusable redis URL {self.url}: {exc}") from exc
        self._redis = redis.Redis(connection_pool=pool)
        self._redis.auto_close_connection_pool = True
        self._append = self._redis.register_script(_lua.APPEND)
        self._acquire = self._redis.register_script(_lua.ACQUIRE)
        self._renew = self._redis.register_script(_lua.RENEW)
        self._revive = self._redis.register_script(_lua.REVIVE)
        self._release = self._redis.register_script(_lua.RELEASE)
        self._commit = self._redis.register_script(_lua.COMMIT)
        self._prune = self._redis.register_script(_lua.PRUNE_SEEN)
        self._lock = threading.Lock()
        self._meta_checked = False
        self._groups: set[int] = set()
        # Per consumer: the last pending id re-read ("0" at first), or ">" once caught up.
        self._cursors: dict[tuple[int, str], str] = {}

    def __repr__(self) -> str:
        return f"<RedisStore {self.url} prefix={self._layout.prefix!r}>"

    @property
    def layout(self) -> KeyLayout:
        return self._layout

    def partition_of(self, profile_id: str) -> int:
        return self._layout.partition_of(profile_id)

    def close(self) -> None:
        """Close the connection pool (a later call reconnects)."""
        self._redis.close()

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
    def _talking(self, action: str) -> Iterator[None]:
        """Turn what redis-py raises for an unreachable or unwilling server into ours."""
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"redis at {self.url}: {action} failed: {exc}") from exc
        except redis.ResponseError as exc:
            if _unavailable(exc):
                raise StoreUnavailable(f"redis at {self.url}: {action} failed: {exc}") from exc
            raise

    def _run(self, action: str, call: Callable[[], T]) -> T:
        """``call()`` against a server whose layout was checked, errors translated."""
        with self._talking(action):
            if not self._meta_checked:
                self._check_meta()
            return call()

    def _check_meta(self) -> None:
        """Record the layout on first use; refuse a database made with another one."""
        meta = self._layout.meta
        pipe = self._redis.pipeline(transaction=False)
        pipe.hsetnx(meta, "layout", LAYOUT_VERSION)
        pipe.hsetnx(meta, "partitions", self._layout.partitions)
        pipe.hmget(meta, ["layout", "partitions"])
        *_, (layout, partitions) = pipe.execute()
        found = (int(layout), int(partitions))
        if found != (LAYOUT_VERSION, self._layout.partitions):
            raise InvalidConfig(
                f"redis at {self.url} holds prefix {self._layout.prefix!r} with layout "
                f"{found[0]} and {found[1]} partitions; this store was opened with layout "
                f"{LAYOUT_VERSION} and {self._layout.partitions} partitions"
            )
        self._meta_checked = True

    def _ensure_group(self, partition: int) -> str:
        key = self._layout.journal(partition)
        if partition not in self._groups:
            try:
                self._redis.xgroup_create(key, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise
            self._groups.add(partition)
        return key

    def _with_group(self, partition: int, call: Callable[[str], T]) -> T:
        """``call(journal_key)`` once the group exists; recreate it if the server lost it."""
        key = self._ensure_group(partition)
        try:
            return call(key)
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            self._groups.discard(partition)  # the server lost its data: start the group again
            return call(self._ensure_group(partition))

    def _entries(self, partition: int, raw: Iterable[Any]) -> list[JournalEntry]:
        out = []
        for entry_id, fields in raw:
            if fields is None:  # deleted from the stream while pending: nothing to deliver
                continue
            key = fields.get(b"k")
            out.append(
                JournalEntry(
                    partition=partition,
                    entry_id=_text(entry_id),
                    dedupe_key=None if key is None else _text(key),
                    payload=bytes(fields[b"p"]),
                )
            )
        return out

    # --- journal --------------------------------------------------------------------------

    def append(self, partition: int, entries: Sequence[JournalItem]) -> list[str | None]:
        items = check_items(entries)
        keys = [self._layout.journal(partition), self._layout.seen(partition)]
        if not items:
            return []
        args: list[str | bytes] = []
        for key, payload in items:
            args += ["0", "", payload] if key is None else ["1", key, payload]
        ids = self._run("append", lambda: self._append(keys=keys, args=args))
        return [None if i is None else _text(i) for i in cast(list[Any], ids)]

    def append_many(
        self, batches: Mapping[int, Sequence[JournalItem]]
    ) -> dict[int, list[str | None]]:
        # One pipeline of APPEND calls (one per partition): one round trip for every partition
        # instead of one each. Each call is atomic; together they are not (see the protocol).
        calls: list[tuple[int, list[str], list[str | bytes]]] = []
        out: dict[int, list[str | None]] = {}
        for partition, entries in batches.items():
            items = check_items(entries)
            keys = [self._layout.journal(partition), self._layout.seen(partition)]
            if not items:
                out[partition] = []
                continue
            args: list[str | bytes] = []
            for key, payload in items:
                args += ["0", "", payload] if key is None else ["1", key, payload]
            calls.append((partition, keys, args))
        if calls:
            replies = self._run("append", lambda: self._pipelined(self._append, calls))
            for (partition, _, _), ids in zip(calls, replies, strict=True):
                if isinstance(ids, Exception):
                    raise ids
                out[partition] = [None if i is None else _text(i) for i in cast(list[Any], ids)]
        return out

    def _pipelined(
        self, script: Script, calls: Sequence[tuple[int, list[str], Sequence[Any]]]
    ) -> list[Any]:
        """Run ``script`` once per ``(_, keys, args)`` in one pipeline; replies in order.

        A script the server does not know (``NOSCRIPT``: it restarted, or flushed its cache)
        did not run; it is loaded and those calls alone are sent again. A reply error that
        means the server will not serve us is raised; any other comes back as a reply.
        """
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=False)
            for i in todo:
                _, keys, args = calls[i]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            answers: list[Any] = pipe.execute(raise_on_error=False)
            missing = []
            for i, answer in zip(todo, answers, strict=True):
                if isinstance(answer, NoScriptError) and attempt == 0:
                    missing.append(i)
                elif isinstance(answer, redis.ResponseError) and not _unavailable(answer):
                    replies[i] = answer
                elif isinstance(answer, Exception):
                    raise answer
                else:
                    replies[i] = answer
            if not missing:
                break
            self._redis.script_load(script.script)
            todo = missing
        return replies

    def read(
        self, partition: int, consumer: str, count: int, block_ms: int = 0
    ) -> list[JournalEntry]:
        check_name("consumer", consumer)
        check_int("count", count, minimum=1)
        check_int("block_ms", block_ms, minimum=0)
        if block_ms >= self._socket_timeout_ms:
            raise InvalidConfig(
                f"block_ms {block_ms} must be below the socket timeout "
                f"({self._socket_timeout_ms} ms)"
            )
        self._layout.check_partition(partition)
        slot = (partition, consumer)
        with self._lock:
            cursor = self._cursors.get(slot, "0")

        def group_read(start: str, block: int | None) -> list[JournalEntry]:
            def call(key: str) -> Any:
                return self._redis.xreadgroup(
                    self.group, consumer, {key: start}, count=count, block=block
                )

            reply = cast(
                list[Any] | None, self._run("read", lambda: self._with_group(partition, call))
            )
            return self._entries(partition, reply[0][1]) if reply else []

        if cursor != ">":
            backlog = group_read(cursor, None)
            with self._lock:
                self._cursors[slot] = backlog[-1].entry_id if backlog else ">"
            if backlog:
                return backlog
        return group_read(">", block_ms or None)

    def rewind(self, partition: int, consumer: str) -> None:
        check_name("consumer", consumer)
        self._layout.check_partition(partition)
        with self._lock:
            self._cursors.pop((partition, consumer), None)

    def claim_stale(self, partition: int, consumer: str, min_idle_ms: int) -> list[JournalEntry]:
        check_name("consumer", consumer)
        check_int("min_idle_ms", min_idle_ms, minimum=0)

        def claim_all(key: str) -> list[JournalEntry]:
            claimed: list[JournalEntry] = []
            start: str | bytes = "0-0"
            while True:
                reply: list[Any] = self._redis.xautoclaim(
                    key, self.group, consumer, min_idle_ms, start, count=_CLAIM_PAGE
                )
                claimed += self._entries(partition, reply[1])
                start = reply[0]
                if _text(start) == "0-0":
                    return claimed

        return self._run("claim_stale", lambda: self._with_group(partition, claim_all))

    def pending_count(self, partition: int, consumer: str | None = None) -> int:
        def summary(key: str) -> dict[str, Any]:
            info: dict[str, Any] = self._redis.xpending(key, self.group)
            return info

        info = self._run("pending_count", lambda: self._with_group(partition, summary))
        if consumer is None:
            return int(info["pending"])
        name = consumer.encode()
        return sum(int(c["pending"]) for c in info["consumers"] if c["name"] == name)

    def length(self, partition: int) -> int:
        key = self._layout.journal(partition)
        length: int = self._run("length", lambda: self._redis.xlen(key))
        return int(length)

    def prune_seen(self, partition: int, older_than_ms: int) -> int:
        check_int("older_than_ms", older_than_ms, minimum=0)
        keys = [self._layout.seen(partition)]
        removed = self._run("prune_seen", lambda: self._prune(keys=keys, args=[older_than_ms]))
        return int(cast(int, removed))

    def journaled(self, keys: Sequence[str]) -> set[str]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()

        def ask() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for partition in range(self._layout.partitions):
                pipe.zmscore(self._layout.seen(partition), wanted)
            replies: list[Any] = pipe.execute()
            return replies

        found: set[str] = set()
        for scores in self._run("journaled", ask):
            found.update(k for k, score in zip(wanted, scores, strict=True) if score is not None)
        return found

    # --- leases and snapshots ----------------------------------------------------------------

    def acquire_lease(self, partition: int, holder: str, ttl_ms: int) -> Fence:
        check_name("holder", holder)
        check_int("ttl_ms", ttl_ms, minimum=1)
        keys = [self._layout.lease(partition), self._layout.fence(partition)]
        try:
            token = self._run(
                "acquire_lease", lambda: self._acquire(keys=keys, args=[holder, ttl_ms])
            )
        except redis.ResponseError as exc:
            code, _, detail = str(exc).partition(" ")
            if code != "CAPFLOW_LEASED":
                raise
            remaining, lease = detail.split(" ", 1)
            current = _parse_lease(lease)
            assert current is not None
            raise lease_taken(partition, holder, current[0], current[1], int(remaining)) from None
        return Fence(partition=partition, holder=holder, token=int(cast(int, token)), ttl_ms=ttl_ms)

    def _fenced(self, fence: Fence, action: str, call: Callable[[], T]) -> T:
        try:
            return self._run(action, call)
        except redis.ResponseError as exc:
            code, _, detail = str(exc).partition(" ")
            if code != "CAPFLOW_STALE":
                raise
            raise fence_not_current(fence, action, _parse_lease(detail)) from None

    def renew_lease(self, fence: Fence, ttl_ms: int | None = None) -> None:
        check_fence(self._layout, fence)
        ttl = check_int("ttl_ms", fence.ttl_ms if ttl_ms is None else ttl_ms, minimum=1)
        keys = [self._layout.lease(fence.partition)]
        args: list[str | int] = [_lease_value(fence), ttl]
        self._fenced(fence, "renew", lambda: self._renew(keys=keys, args=args))

    def renew_many(self, fences: Sequence[Fence]) -> None:
        calls: list[tuple[int, list[str], Sequence[Any]]] = []
        for fence in fences:
            check_fence(self._layout, fence)
            ttl = check_int("ttl_ms", fence.ttl_ms, minimum=1)
            calls.append(
                (fence.partition, [self._layout.lease(fence.partition)], [_lease_value(fence), ttl])
            )
        replies = self._run("renew", lambda: self._pipelined(self._renew, calls)) if calls else []
        for fence, reply in zip(fences, replies, strict=True):
            if isinstance(reply, redis.ResponseError):
                code, _, detail = str(reply).partition(" ")
                if code == "CAPFLOW_STALE":
                    raise fence_not_current(fence, "renew", _parse_lease(detail)) from None
                raise reply

    def revive_lease(self, fence: Fence) -> None:
        check_fence(self._layout, fence)
        keys = [self._layout.lease(fence.partition), self._layout.fence(fence.partition)]
        args: list[str | int] = [_lease_value(fence), fence.token, fence.ttl_ms]
        self._fenced(fence, "revive", lambda: self._revive(keys=keys, args=args))

    def release_lease(self, fence: Fence) -> bool:
        check_fence(self._layout, fence)
        keys = [self._layout.lease(fence.partition)]
        done = self._run(
            "release_lease", lambda: self._release(keys=keys, args=[_lease_value(fence)])
        )
        return bool(done)

    def commit(
        self,
        fence: Fence,
        snapshots: Mapping[str, SnapshotWrite],
        acks: Sequence[str] = (),
    ) -> int:
        prepared, ack_ids = prepare_commit(self._layout, fence, snapshots, acks)
        keys = [self._layout.lease(fence.partition), self._layout.journal(fence.partition)]
        keys += [snap.key for snap in prepared]
        args: list[str | bytes | int] = [self.group, _lease_value(fence), len(prepared)]
        for snap in prepared:
            args += [snap.offset, snap.envelope]
        args += ack_ids
        try:
            acked = self._fenced(fence, "commit", lambda: self._commit(keys=keys, args=args))
        except redis.ResponseError as exc:
            code, _, detail = str(exc).partition(" ")
            if code != "CAPFLOW_BACKWARDS":
                raise
            index, stored = detail.split(" ", 1)
            snap = prepared[int(index) - 1]
            raise offset_backwards(snap.profile_id, snap.offset, stored) from None
        return int(cast(int, acked))

    def commit_many(self, commits: Sequence[CommitWrite]) -> list[int]:
        # One pipeline of COMMIT calls: one round trip for every partition instead of one each.
        calls: list[tuple[int, list[str], Sequence[Any]]] = []
        prepared_all = []
        for fence, snapshots, acks in commits:
            prepared, ack_ids = prepare_commit(self._layout, fence, snapshots, acks)
            keys = [self._layout.lease(fence.partition), self._layout.journal(fence.partition)]
            keys += [snap.key for snap in prepared]
            args: list[str | bytes | int] = [self.group, _lease_value(fence), len(prepared)]
            for snap in prepared:
                args += [snap.offset, snap.envelope]
            args += ack_ids
            calls.append((fence.partition, keys, args))
            prepared_all.append(prepared)
        if not calls:
            return []
        replies = self._run("commit", lambda: self._pipelined(self._commit, calls))
        out = []
        for (fence, _, _), prepared, reply in zip(commits, prepared_all, replies, strict=True):
            if isinstance(reply, redis.ResponseError):
                code, _, detail = str(reply).partition(" ")
                if code == "CAPFLOW_STALE":
                    raise fence_not_current(fence, "commit", _parse_lease(detail)) from None
                if code == "CAPFLOW_BACKWARDS":
                    index, stored = detail.split(" ", 1)
                    snap = prepared[int(index) - 1]
                    raise offset_backwards(snap.profile_id, snap.offset, stored) from None
                raise reply
            out.append(int(cast(int, reply)))
        return out

    def load(self, profile_id: str) -> Snapshot | None:
        return self.load_many([profile_id]).get(profile_id)

    def load_many(self, profile_ids: Iterable[str]) -> dict[str, Snapshot]:
        ids = [check_profile_id(pid) for pid in profile_ids]
        keys = [self._layout.snapshot(pid) for pid in ids]

        def fetch() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, ["o", "e"])
            replies: list[Any] = pipe.execute(raise_on_error=False)
            for reply in replies:
                if isinstance(reply, redis.ResponseError) and _unavailable(reply):
                    raise reply
            return replies

        replies = self._run("load", fetch) if keys else []
        out = {}
        for pid, key, reply in zip(ids, keys, replies, strict=True):
            snap = _open(pid, key, reply)
            if snap is not None:
                out[pid] = snap
        return out


def _open(profile_id: str, key: str, reply: Any) -> Snapshot | None:
    """A snapshot from an HMGET reply of ``o`` (offset) and ``e`` (envelope)."""
    if isinstance(reply, redis.ResponseError):  # e.g. WRONGTYPE: someone else's value
        raise CorruptSnapshot(f"snapshot {key}: not a snapshot hash ({reply})")
    if isinstance(reply, Exception):
        raise reply
    offset, envelope = reply
    if offset is None and envelope is None:
        return None
    if offset is None or envelope is None:
        missing = "offset" if offset is None else "envelope"
        raise CorruptSnapshot(f"snapshot {key}: incomplete hash, {missing} missing")
    try:
        stored = offset.decode("ascii")
    except UnicodeDecodeError:
        raise CorruptSnapshot(f"snapshot {key}: stored offset {offset!r} is not text") from None
    return decode_snapshot(bytes(envelope), key=key, profile_id=profile_id, stored_offset=stored)
