"""Durable mode: the fill journal in front of the supervisor and the batched, fenced commit.

::

    submit(payloads) ─► route (ownership index / profile id) ─► journal.append  (durable, deduped)
    reader thread per partition ─► journal.read (consumer group) ─► Supervisor (JournalEntries)
    ProfileActor checkpoint ─► Committer queue ─► store.commit(fence, snapshots, acks)  (one Lua
        call per partition and batch) ─► Supervisor (Checkpointed)

Memory state is treated as durable only after ``commit`` returns. While the store is down the
runtime *fails closed*: ``submit`` of new signals raises :class:`StoreUnavailable` (nothing is
reserved), commits are retried with backoff, and nothing is lost: what is not committed is still
pending in the journal, and the exchange's record is reconciled on the next bootstrap.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from actors.ownership import OwnershipIndex
from messages import (
    CapflowError,
    DecodeError,
    Fill,
    Message,
    StaleFence,
    StoreUnavailable,
    decode,
    encode,
)
from persistence import ZERO_OFFSET, Fence, JournalEntry, JournalStore, Snapshot, parse_offset

logger = logging.getLogger("capflow.journal")

#: Sequence numbers of journaled messages: the stream id ``ms-n`` as ``ms * 2**32 + n``.
SEQ_SHIFT = 32


def offset_to_seq(offset: str) -> int:
    """The integer sequence number of a stream entry id (orders like the ids do)."""
    ms, n = parse_offset(offset)
    if n >= 2**SEQ_SHIFT:
        raise ValueError(f"stream id {offset} has a sequence part beyond 2**{SEQ_SHIFT}")
    return (ms << SEQ_SHIFT) | n


def dedupe_key(message: Message) -> str:
    """Fills are deduplicated by exchange trade id; everything else by message id."""
    if isinstance(message, Fill):
        return f"fill:{message.symbol}:{message.trade_id}"
    return f"msg:{message.message_id}"


def pack_entry(profile_id: str, message: Message) -> bytes:
    """A journal payload: the target profile and the encoded message."""
    packed: bytes = msgpack.packb([profile_id, encode(message)], use_bin_type=True)
    return packed


def unpack_entry(payload: bytes) -> tuple[str, Message]:
    """Inverse of :func:`pack_entry`; raises DecodeError on anything else."""
    try:
        profile_id, body = msgpack.unpackb(payload, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"journal entry is not [profile, message]: {exc}") from exc
    if not isinstance(profile_id, str) or not isinstance(body, bytes):
        raise DecodeError("journal entry is not [profile, message]")
    return profile_id, decode(body)


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntries:
    """Entries read for the runtime's consumer, decoded: (seq, offset, profile, message)."""

    partition: int
    items: tuple[tuple[int, str, str, Message], ...]
    #: claimed from another consumer: may be older than entries already applied, so it is
    #: applied even below the profile's offset (the books' own dedupe keeps that exact)
    claimed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointReady:
    """A profile's state up to ``offset``, and the journal entries it covers, to commit."""

    profile_id: str
    incarnation: int
    seq: int
    offset: str
    state: dict[str, Any]
    acks: tuple[str, ...]
    number: int = 0  # the incarnation's checkpoint counter (see ``Checkpointed``)


class JournalIngest:
    """Appends routed messages to their profile's partition; reads them back for delivery.

    Args:
        store: the journal (and fenced snapshot store).
        index: the ownership index, to route exchange events.
        consumer: this runtime's consumer name in the group (stable across restarts).
        deliver: called from reader threads with each batch of decoded entries.
        order_key: client order id of exchange-originated messages, else None.
    """

    def __init__(
        self,
        store: JournalStore,
        index: OwnershipIndex,
        *,
        consumer: str,
        deliver: Callable[[JournalEntries], None],
        order_key: Callable[[Any], str | None],
        batch: int = 500,
        block_ms: int = 50,
        dedupe: bool = True,
        claim_idle_ms: int = 1000,
    ) -> None:
        self._store = store
        self._dedupe = dedupe
        self._index = index
        self._consumer = consumer
        self._deliver = deliver
        self._order_key = order_key
        self._batch = batch
        self._block_ms = block_ms
        # We hold every partition's lease, so an entry pending for another consumer (a fenced
        # out runtime whose readers were mid-read when it lost its lease) is ours to take.
        self._claim_idle_ms = claim_idle_ms
        self._partitions: list[int] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._count_lock = threading.Lock()
        # Drains: appends bump the generation; each reader records the generation at the start
        # of its last read that found nothing. Caught up = every reader came up empty after
        # the last append began.
        self._generation = 0
        self._idle_since: dict[int, int] = {}
        # Per partition: the entries this object delivered (or found corrupt) and not yet
        # acked, and how many were acked so far. Claimed entries are delivered only if they
        # are not ours already: claiming re-claims our own entries still waiting for their
        # commit, and delivering those again fed itself under load. And the claim (a scan of
        # the whole pending list) runs only while more entries are pending than we delivered
        # (another consumer's, or a fenced-out runtime's with our name), or every
        # ``10 * claim_idle_ms`` whatever the count says.
        self._delivered: dict[int, set[str]] = collections.defaultdict(set)
        self._acked: dict[int, int] = collections.defaultdict(int)
        # Entries acked while a claim is on its way: ours, even though no longer in _delivered.
        self._acked_in_claim: dict[int, set[str]] = {}
        self.corrupt_entries = 0

    def target(self, payload: Any) -> str | None:
        """The profile a message is for (exchange events: by the ownership index only)."""
        cid = self._order_key(payload)
        if cid is not None:
            return self._index.owner(cid)
        pid = getattr(payload, "profile_id", None)
        return pid if isinstance(pid, str) else None

    def append(self, routed: Iterable[tuple[str, Message]]) -> list[str | None]:
        """Journal ``(profile, message)`` pairs; returns entry ids (None: a duplicate).

        Raises:
            StoreUnavailable: nothing is known to be journaled; the caller may retry (dedupe
                keys make a retry safe).
        """
        by_partition: dict[int, list[tuple[str | None, bytes]]] = collections.defaultdict(list)
        order: list[tuple[int, int]] = []
        for profile_id, message in routed:
            partition = self._store.partition_of(profile_id)
            order.append((partition, len(by_partition[partition])))
            key = dedupe_key(message) if self._dedupe else None
            by_partition[partition].append((key, pack_entry(profile_id, message)))
        ids = self._store.append_many(by_partition)  # one round trip for every partition
        with self._count_lock:
            self._generation += 1  # after the entries exist: a read that starts now sees them
        return [ids[p][i] for p, i in order]

    def acked(self, partition: int, entry_ids: Iterable[str]) -> None:
        """Entries the committer acked: no longer pending for this runtime (thread-safe)."""
        with self._count_lock:
            delivered = self._delivered[partition]
            before = len(delivered)
            if partition in self._acked_in_claim:
                entry_ids = set(entry_ids)
                self._acked_in_claim[partition].update(entry_ids)
            delivered.difference_update(entry_ids)
            self._acked[partition] += before - len(delivered)

    def _foreign_pending(self, partition: int) -> bool:
        """Whether the partition has pending entries that this object did not deliver.

        Only the calling reader adds to its partition's entries, so the ones acked while the
        count was on its way are added back; an ack that landed just before the count was
        taken can hide a foreign entry until the next check.
        """
        with self._count_lock:
            acked = self._acked[partition]
        pending = self._store.pending_count(partition)
        with self._count_lock:
            ours = len(self._delivered[partition]) + self._acked[partition] - acked
        return pending > ours

    def _claim(self, partition: int) -> list[JournalEntry]:
        """Claim idle pending entries; those that this object delivered are not returned."""
        with self._count_lock:
            # Not idle until delivered: a claimed entry is pending for us at once, and a drain
            # must not take it for one already delivered.
            self._idle_since.pop(partition, None)
            self._acked_in_claim[partition] = set()
        try:
            claimed = self._store.claim_stale(partition, self._consumer, self._claim_idle_ms)
        except BaseException:
            with self._count_lock:
                self._acked_in_claim.pop(partition, None)
            raise
        with self._count_lock:
            acked = self._acked_in_claim.pop(partition)
            delivered = self._delivered[partition]
            return [e for e in claimed if e.entry_id not in delivered and e.entry_id not in acked]

    def caught_up(self) -> bool:
        """Whether every entry appended through this object was read back (for drains)."""
        with self._count_lock:
            generation = self._generation
            idle = list(self._idle_since.values())
        if not (len(idle) == len(self._threads) and all(g >= generation for g in idle)):
            return False
        # Entries pending for another consumer are claimed by the readers after a while.
        return all(
            self._store.pending_count(p) == self._store.pending_count(p, self._consumer)
            for p in self._partitions
        )

    def catch_up(self, partitions: Sequence[int]) -> list[JournalEntries]:
        """Read everything already in the journal for us (pending first, then unread), now.

        Used on start, before any profile runs, so that recovery replays the previous
        incarnation's entries before it reconciles with the exchange.
        """
        out: list[JournalEntries] = []
        for partition in partitions:
            self._store.rewind(partition, self._consumer)
            while True:
                entries = self._store.read(partition, self._consumer, self._batch, 0)
                if not entries:
                    break
                out.append(JournalEntries(partition=partition, items=self._decode(entries)))
        return out

    def request_stop(self) -> None:
        """Ask the readers to stop (without waiting for them)."""
        self._stop.set()

    def start(self, partitions: Sequence[int], *, rewind: bool = True) -> None:
        """Start one reader thread per partition (own pending entries first, if ``rewind``)."""
        self._partitions = list(partitions)
        for partition in partitions:
            if rewind:
                self._store.rewind(partition, self._consumer)
            thread = threading.Thread(
                target=self._read_loop, args=(partition,), name=f"journal-p{partition}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _read_loop(self, partition: int) -> None:
        backoff = 0.01
        last_claim = last_scan = time.monotonic()
        while not self._stop.is_set():
            with self._count_lock:
                generation = self._generation
            claimed: list[JournalEntry] = []
            try:
                now = time.monotonic()
                if now - last_claim > self._claim_idle_ms / 2000:
                    last_claim = now
                    if now - last_scan > self._claim_idle_ms / 100 or self._foreign_pending(
                        partition
                    ):
                        last_scan = now
                        claimed = self._claim(partition)
                if claimed and not self._stop.is_set():
                    self._deliver(
                        JournalEntries(
                            partition=partition, items=self._decode(claimed), claimed=True
                        )
                    )
                # After the claim: everything read before it is recorded as ours by then.
                entries = self._store.read(partition, self._consumer, self._batch, self._block_ms)
            except StoreUnavailable as exc:
                logger.warning(
                    "journal p%d unavailable, retrying in %.2fs: %s", partition, backoff, exc
                )
                self._stop.wait(backoff)
                backoff = min(1.0, backoff * 2)
                self._store.rewind(partition, self._consumer)
                continue
            backoff = 0.01
            if self._stop.is_set():
                return  # stopping (e.g. fenced out): leave what we read pending for the holder
            if entries:
                self._deliver(JournalEntries(partition=partition, items=self._decode(entries)))
            elif not claimed:
                with self._count_lock:
                    self._idle_since[partition] = generation

    def _decode(self, entries: list[JournalEntry]) -> tuple[tuple[int, str, str, Message], ...]:
        if entries:
            with self._count_lock:
                self._delivered[entries[0].partition].update(e.entry_id for e in entries)
        out = []
        for entry in entries:
            try:
                profile_id, message = unpack_entry(entry.payload)
            except DecodeError as exc:
                # Never written by us: count it and leave it pending for an operator.
                self.corrupt_entries += 1
                logger.error("journal entry %s is corrupt: %s", entry.entry_id, exc)
                continue
            out.append((offset_to_seq(entry.entry_id), entry.entry_id, profile_id, message))
        return tuple(out)


class Committer:
    """Batches checkpoints per partition into fenced commits, on its own thread.

    Args:
        store: the fenced snapshot store.
        holder: this runtime's lease holder name.
        committed: called with each checkpoint once its commit returned.
        fatal: called once if the lease was lost (another runtime took over).
        ttl_ms: lease time to live; renewed every third of it.
        on_commit: called after each fenced commit call that returned, with its duration in
            seconds and how many checkpoints it made durable (e.g. a metrics histogram).
    """

    def __init__(
        self,
        store: JournalStore,
        *,
        holder: str,
        committed: Callable[[CheckpointReady], None],
        fatal: Callable[[Exception], None],
        ttl_ms: int = 10_000,
        max_batch: int = 256,
        on_commit: Callable[[float, int], None] | None = None,
    ) -> None:
        self._store = store
        self._on_commit = on_commit
        self._holder = holder
        self._committed = committed
        self._fatal = fatal
        self._ttl_ms = ttl_ms
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[CheckpointReady | None] = queue.SimpleQueue()  # None: stop
        self._fences: dict[int, Fence] = {}
        self._thread = threading.Thread(target=self._loop, name="committer", daemon=True)
        self.available = True
        self.last_ok = time.monotonic()  # when the store last answered the committer
        self.commits = 0
        self.revivals = 0  # leases that lapsed unclaimed and were held again
        #: the runtime is stopping: a lapsed lease is not revived any more (a commit that landed
        #: now could no longer publish its events; the next start replays it instead)
        self.closing = False
        self.commit_seconds: collections.deque[float] = collections.deque(maxlen=100_000)

    def acquire(self, partitions: Sequence[int]) -> None:
        """Take every partition's lease (fencing out any earlier incarnation of this holder)."""
        for partition in partitions:
            self._fences[partition] = self._store.acquire_lease(
                partition, self._holder, self._ttl_ms
            )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def submit(self, checkpoint: CheckpointReady) -> None:
        """Queue a checkpoint for the next commit (thread-safe, never blocks)."""
        self._queue.put(checkpoint)

    def _take(self, pending: dict[str, CheckpointReady], acks: dict[str, list[str]]) -> bool:
        """Move queued checkpoints into the batch (waiting a little if idle); False: stop."""
        timeout = 0.05 if pending else self._ttl_ms / 3000
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return True
        while item is not None:
            self._merge(pending, acks, item)
            if len(pending) >= self._max_batch:
                return True
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return True
        return False

    def _loop(self) -> None:
        pending: dict[str, CheckpointReady] = {}
        acks: dict[str, list[str]] = collections.defaultdict(list)
        last_renew = time.monotonic()
        backoff = 0.01
        running = True
        revived = False  # the last StaleFence led to a revival, and nothing succeeded since
        while running or pending:
            if running:
                running = self._take(pending, acks)
            try:
                # While the store is down, probe it on every pass (the renewal is the probe).
                if not self.available or time.monotonic() - last_renew > self._ttl_ms / 3000:
                    # One call for every lease (Redis: one round trip): each round trip is
                    # a wait for the interpreter lock behind every busy profile thread.
                    self._store.renew_many(list(self._fences.values()))
                    last_renew = self.last_ok = time.monotonic()
                if pending:
                    # A retry after StoreUnavailable re-sends the same batch: equal offsets and
                    # already-acked entries are accepted, so an unknown outcome is harmless.
                    self._commit(pending, acks)
                    pending.clear()
                    acks.clear()
                    self.last_ok = time.monotonic()
                self.available = True
                backoff = 0.01
                revived = False
            except StaleFence as exc:
                # A lease that lapsed while we lived (starved of CPU, or the store down for
                # longer than the TTL) but that nobody acquired since is held again; once only
                # per failure, so a refusal that is not about the lease still stops us.
                if not revived and not self.closing:
                    try:
                        for fence in self._fences.values():
                            self._store.revive_lease(fence)
                    except StaleFence:
                        pass
                    except StoreUnavailable as down:
                        self.available = False
                        logger.warning("store unavailable, lease revival retried: %s", down)
                        time.sleep(backoff)
                        backoff = min(1.0, backoff * 2)
                        continue
                    else:
                        revived = True
                        self.revivals += 1
                        logger.warning("lease lapsed and nobody took it: held again (%s)", exc)
                        continue
                logger.error("lease lost, stopping commits: %s", exc)
                self._fatal(exc)
                return
            except StoreUnavailable as exc:
                self.available = False
                logger.warning("store unavailable, commit retried in %.2fs: %s", backoff, exc)
                time.sleep(backoff)
                backoff = min(1.0, backoff * 2)

    @staticmethod
    def _merge(
        pending: dict[str, CheckpointReady],
        acks: dict[str, list[str]],
        item: CheckpointReady,
    ) -> None:
        old = pending.get(item.profile_id)
        if old is None or item.seq >= old.seq:
            pending[item.profile_id] = item
        acks[item.profile_id].extend(item.acks)

    def _commit(self, pending: dict[str, CheckpointReady], acks: dict[str, list[str]]) -> None:
        by_partition: dict[int, list[CheckpointReady]] = collections.defaultdict(list)
        for checkpoint in pending.values():
            by_partition[self._store.partition_of(checkpoint.profile_id)].append(checkpoint)
        batches = sorted(by_partition.items())
        started = time.perf_counter()
        # Every partition's fenced commit in one call (Redis: one round trip); each is atomic
        # on its own. A refusal or an outage raises before anything is confirmed: the whole
        # batch is then retried, which equal offsets and acked entries make harmless.
        self._store.commit_many(
            [
                (
                    self._fences[partition],
                    {c.profile_id: (c.state, c.offset) for c in checkpoints},
                    [a for c in checkpoints for a in acks[c.profile_id]],
                )
                for partition, checkpoints in batches
            ]
        )
        took = time.perf_counter() - started
        self.commit_seconds.append(took)
        self.commits += 1
        if self._on_commit is not None:
            self._on_commit(took, len(pending))
        for _, checkpoints in batches:
            for checkpoint in checkpoints:
                self._committed(checkpoint)


_NOT_FETCHED: Any = object()


class JournalDurability:
    """Profile checkpoints through the batched, fenced :class:`Committer`.

    Args:
        store: the fenced snapshot store (snapshots are loaded from it).
        committer: where checkpoints go; durability is confirmed by a later ``Committed``.
        index: the ownership index (claims are synchronous).
        reconciles: a fresh incarnation reconciles with the exchange (after a process start).
    """

    synchronous = False

    def __init__(
        self,
        store: JournalStore,
        committer: Committer,
        index: OwnershipIndex,
        *,
        reconciles: bool = True,
    ) -> None:
        self._store = store
        self._committer = committer
        self._index = index
        self._reconciles = reconciles
        self._lock = threading.Lock()
        self._prefetched: dict[str, Snapshot | None] = {}

    @property
    def reconciles(self) -> bool:
        return self._reconciles

    def prefetch(self, profile_ids: Sequence[str], *, chunk: int = 1000) -> int:
        """Read the snapshots of profiles about to start in bulk (one round trip per chunk).

        Only for a runtime that holds every lease already (nobody else can commit them
        now). Each prefetched snapshot is used once, by the profile's first load; any later
        incarnation reads the store again. A chunk that fails (the store is down, or one of
        its snapshots is corrupt) is left out: its profiles load one by one, and each reports
        its own error as before.

        Returns:
            How many profiles' snapshots (or their absence) were prefetched.
        """
        done = 0
        for start in range(0, len(profile_ids), chunk):
            ids = profile_ids[start : start + chunk]
            try:
                found = self._store.load_many(ids)
            except CapflowError as exc:
                logger.info("snapshot prefetch of %d profiles skipped: %s", len(ids), exc)
                continue
            with self._lock:
                for profile_id in ids:
                    self._prefetched[profile_id] = found.get(profile_id)
            done += len(ids)
        return done

    def load(self, profile_id: str) -> tuple[int, dict[str, Any] | None, str | None]:
        with self._lock:
            hit = self._prefetched.pop(profile_id, _NOT_FETCHED)
        snapshot = self._store.load(profile_id) if hit is _NOT_FETCHED else hit
        if snapshot is None:
            return 0, None, None
        return offset_to_seq(snapshot.offset), dict(snapshot.state), snapshot.offset

    def checkpoint(
        self,
        *,
        profile_id: str,
        incarnation: int,
        seq: int,
        offset: str | None,
        state: dict[str, Any],
        acks: tuple[str, ...],
        number: int = 0,
    ) -> None:
        self._committer.submit(
            CheckpointReady(
                profile_id=profile_id,
                incarnation=incarnation,
                seq=seq,
                offset=offset if offset is not None else ZERO_OFFSET,
                state=state,
                acks=acks,
                number=number,
            )
        )

    def register(self, profile_id: str, client_order_id: str) -> None:
        self._index.claim(client_order_id, profile_id)
