"""The embedded runtime: what an application (or ``capflow run``) holds on to.

runtime = Runtime(profiles, balances=...).start()
runtime.submit(OpenPosition(...))           # any thread; never blocks on the books
runtime.drain()                             # wait until everything submitted is applied
runtime.books()                             # {profile_id: summary}
runtime.stop()
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self, cast

import pykka

from actors.dispatch import Dispatcher
from actors.events import EventSink
from actors.journal import (
    CheckpointReady,
    Committer,
    JournalDurability,
    JournalEntries,
    JournalIngest,
    dedupe_key,
)
from actors.ownership import OwnershipIndex
from actors.profile import CrashNow, Durability
from actors.protocol import Checkpointed, GetBooks, Sync
from actors.supervisor import (
    CompleteBootstrap,
    DeadLetter,
    HoldBootstrap,
    Inspect,
    ProfileSpec,
    Refs,
    RestartPolicy,
    Settled,
    Submit,
    Supervisor,
    TakeTouched,
)
from messages import (
    ClosePosition,
    DeadLettered,
    Fill,
    FillRejected,
    Message,
    OpenPosition,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    ReservationRejected,
    StaleFence,
    StoreUnavailable,
    UnknownProfile,
)
from persistence import JournalStore, MemoryStore, SnapshotStore

DEFAULT_POLICY = RestartPolicy()


def exchange_order_key(payload: Any) -> str | None:
    """Exchange-originated events are routed by their client order id, and only by it."""
    if isinstance(payload, Fill | OrderAccepted | OrderCanceled | OrderRejected):
        return payload.client_order_id
    return None


class Runtime:
    """Many profiles, one supervisor, exactly-once application of every submitted message.

    Args:
        profiles: what to run.
        store: checkpoint store (default: in memory, survives actor crashes).
        events: event sink (default: a new one).
        policy: restart policy for crashed profiles.
        balances: per account and asset; profiles' claims must fit (checked at start).
        journal: durable mode — a journal + fenced snapshot store (Redis, SQLite, memory).
            Every message is journaled (deduplicated by trade id / message id) before it is
            routed, profiles checkpoint through batched fenced commits, and a fresh start
            recovers from snapshots, the journal's pending entries and the exchange.
        holder: this runtime's lease holder and consumer name (stable across restarts).
        reconcile: in durable mode, reconcile every profile with the exchange on start.
        unsafe_no_dedupe: **drills only** — switch every exactly-once protection off (journal
            dedupe keys, offset checks, the books' trade-id dedupe) to show the drill can fail.
        on_commit: durable mode — called on the committer's thread after each fenced commit
            call, with its duration in seconds and the number of checkpoints it made durable.
        parked_limit: unowned exchange events kept waiting for their owner at most; beyond it
            the oldest are dropped (``inspect()["parked_dropped"]``).
        dispatch_threads: the profile actors run on a dispatcher of this many threads
            (``actors/dispatch.py``: each profile is still a pykka actor whose mailbox is its
            serialization, but 10,000 profiles do not mean 10,000 threads). ``0``: one thread
            per profile (``pykka.ThreadingActor``), for handlers that block for long, e.g. an
            exchange client waiting on the network.
    """

    def __init__(
        self,
        profiles: Sequence[ProfileSpec],
        *,
        store: SnapshotStore | None = None,
        events: EventSink | None = None,
        policy: RestartPolicy = DEFAULT_POLICY,
        balances: Mapping[str, Mapping[str, int]] | None = None,
        clock: Callable[[], int] = time.time_ns,
        journal: JournalStore | None = None,
        holder: str = "capflow",
        reconcile: bool = True,
        lease_ttl_ms: int = 10_000,
        unsafe_no_dedupe: bool = False,
        on_commit: Callable[[float, int], None] | None = None,
        parked_limit: int = 100_000,
        dispatch_threads: int = 4,
    ) -> None:
        if dispatch_threads < 0:
            raise ValueError(f"dispatch_threads must be >= 0, got {dispatch_threads}")
        self.profiles = list(profiles)
        self._dispatch_threads = dispatch_threads
        self._dispatcher: Dispatcher | None = None
        self._profile_ids = frozenset(spec.profile_id for spec in self.profiles)
        self.journal = journal
        self._holder = holder
        self._reconcile = reconcile
        self._lease_ttl_ms = lease_ttl_ms
        self._unsafe = unsafe_no_dedupe
        self._on_commit = on_commit
        self._parked_limit = parked_limit
        #: durable mode: unowned fills dropped because the journal already held their trade
        self.resent_fills_dropped = 0
        self.index = OwnershipIndex()
        self._ingest: JournalIngest | None = None
        self._committer: Committer | None = None
        self.fatal: Exception | None = None
        self._start_lock = threading.Lock()
        self._early_commits: list[Checkpointed] = []
        self._append_failed_at = float("-inf")
        self.store: SnapshotStore = store if store is not None else MemoryStore()
        self.events = events if events is not None else EventSink()
        self._policy = policy
        self._balances = balances
        self._clock = clock
        self._ids = 0
        self._supervisor: pykka.ActorRef[Supervisor] | None = None

    def start(self) -> Self:
        """Start the supervisor, which starts (bootstraps) every profile.

        In durable mode, first take every partition's lease (fencing out any earlier
        incarnation of this holder) and claim the entries it left pending.
        """
        durability: Durability | None = None
        initial: list[JournalEntries] = []
        if self.journal is not None:
            durable = self._start_durable(self.journal)
            # Every lease is ours: read all snapshots in bulk rather than one per profile.
            durable.prefetch([spec.profile_id for spec in self.profiles])
            durability = durable
            assert self._ingest is not None
            # Everything already journaled (our pending entries and unread ones) is logged
            # before the profiles start: each replays it, *then* reconciles with the exchange.
            initial = self._ingest.catch_up(range(self.journal.layout.partitions))
        if self._dispatch_threads:
            self._dispatcher = Dispatcher(self._dispatch_threads, name="capflow-profiles")
        self._supervisor = Supervisor.start(
            profiles=self.profiles,
            store=self.store,
            durability=durability,
            index=self.index,
            resubmit=self._resubmit if self.journal is not None else None,
            unsafe_no_dedupe=self._unsafe,
            initial=initial,
            order_key=exchange_order_key,
            on_unroutable=self._unroutable,
            on_dead_letter=self._dead_letter,
            policy=self._policy,
            balances=self._balances,
            parked_limit=self._parked_limit,
            dispatcher=self._dispatcher,
        )
        with self._start_lock:
            early, self._early_commits = self._early_commits, []
        for report in early:
            self._supervisor.tell(report)
        if self._ingest is not None and self.journal is not None:
            self._ingest.start(range(self.journal.layout.partitions), rewind=False)
        return self

    def _start_durable(self, journal: JournalStore) -> JournalDurability:
        partitions = range(journal.layout.partitions)
        self._committer = Committer(
            journal,
            holder=self._holder,
            committed=self._committed,
            fatal=self._on_fatal,
            ttl_ms=self._lease_ttl_ms,
            on_commit=self._on_commit,
        )
        self._committer.acquire(partitions)
        for partition in partitions:
            # Our lease fences out the previous holder: its pending entries are ours now.
            journal.claim_stale(partition, self._holder, 0)
        self._committer.start()
        self._ingest = JournalIngest(
            journal,
            self.index,
            consumer=self._holder,
            deliver=self._deliver_journaled,
            order_key=exchange_order_key,
            dedupe=not self._unsafe,
        )
        return JournalDurability(journal, self._committer, self.index, reconciles=self._reconcile)

    def _deliver_journaled(self, entries: JournalEntries) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            self.supervisor.tell(entries)

    def _committed(self, checkpoint: CheckpointReady) -> None:
        if self._ingest is not None and self.journal is not None and checkpoint.acks:
            self._ingest.acked(self.journal.partition_of(checkpoint.profile_id), checkpoint.acks)
        report = Checkpointed(
            profile_id=checkpoint.profile_id,
            incarnation=checkpoint.incarnation,
            seq=checkpoint.seq,
            number=checkpoint.number,
        )
        with self._start_lock:
            supervisor = self._supervisor
            if supervisor is None:
                # Confirmed while start() is still running: handed over once it has the ref.
                self._early_commits.append(report)
                return
        with contextlib.suppress(pykka.ActorDeadError):
            supervisor.tell(report)

    def _on_fatal(self, error: Exception) -> None:
        # Another runtime holds our partitions: stop reading and applying anything at once (it
        # owns the books now); our uncommitted work is still pending in the journal for it.
        self.fatal = error
        logging.getLogger("capflow.runtime").error("runtime lost its lease: %s", error)
        if self._ingest is not None:
            self._ingest.request_stop()
        supervisor = self._supervisor
        if supervisor is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                supervisor.stop(block=False)

    @property
    def lease_revivals(self) -> int:
        """How often a lease lapsed (no renewal within its TTL) and, nobody having taken it,
        was held again with the same fencing token (0 in memory mode)."""
        return 0 if self._committer is None else self._committer.revivals

    @property
    def store_available(self) -> bool:
        """False while the durable store cannot be reached (new signals are refused)."""
        if self._committer is None:
            return True
        # An append that failed counts until the committer has talked to the store since.
        recovered = self._committer.last_ok > self._append_failed_at
        return self._committer.available and recovered and self.fatal is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def supervisor(self) -> pykka.ActorRef[Supervisor]:
        if self._supervisor is None:
            raise RuntimeError("the runtime is not started")
        return self._supervisor

    def stop(self) -> None:
        """Stop the supervisor and every profile actor (durable mode: flush pending commits).

        In durable mode, first drain (bounded) so that the last commits are confirmed and their
        events published while the supervisor still runs; what does not make it is simply
        replayed by the next start.
        """
        if self._committer is not None:
            self._committer.closing = True
        if self._ingest is not None and self._supervisor is not None and self.fatal is None:
            with contextlib.suppress(TimeoutError, StoreUnavailable, pykka.ActorDeadError):
                self.drain(timeout=10.0)
        if self._ingest is not None:
            self._ingest.stop()
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None
        if self._dispatcher is not None:
            # The supervisor asked every profile to stop: let them checkpoint what they hold.
            self._dispatcher.close(timeout=10.0)
            self._dispatcher = None
        if self._committer is not None:
            self._committer.stop()

    # -- input -----------------------------------------------------------------------------
    def submit(self, *payloads: Any) -> None:
        """Route messages to their profiles. Thread-safe.

        Memory mode: returns at once. Durable mode: returns once the messages are journaled
        (deduplicated); the runtime *fails closed* while the store is down.

        Raises:
            StoreUnavailable: durable mode, the journal could not be written; nothing was
                journaled (a retry is safe: dedupe keys make it idempotent).
            StaleFence: durable mode, another runtime owns these profiles now.
        """
        if not payloads:
            return
        if self._ingest is None:
            self.supervisor.tell(Submit(payloads=payloads))
            return
        if self.fatal is not None:
            raise StaleFence(f"this runtime lost its lease: {self.fatal}")
        routed: list[tuple[str, Message]] = []
        local: list[Any] = []
        for payload in payloads:
            if isinstance(payload, CrashNow):
                local.append(payload)  # out of band: never journaled
                continue
            targets = self._durable_targets(payload)
            if targets is None:
                local.append(payload)  # the supervisor parks or reports it
                continue
            routed.extend((pid, payload) for pid in targets)
        if routed:
            try:
                self._ingest.append(routed)
            except StoreUnavailable:
                self._append_failed_at = time.monotonic()
                raise
        if local:
            local = self._drop_resent(local)
        if local:
            self.supervisor.tell(Submit(payloads=tuple(local)))

    def _drop_resent(self, payloads: list[Any]) -> list[Any]:
        """Drop fills nobody owns that the journal already holds: exchange re-sends of trades
        whose order closed before a restart (journaled and applied for their owner then, but
        the restarted index knows open orders only). Dropped like any journal duplicate,
        counted in ``resent_fills_dropped``; the rest is parked and reported as before."""
        keys = [dedupe_key(p) for p in payloads if isinstance(p, Fill) and not self._unsafe]
        if not keys or self.journal is None:
            return payloads
        try:
            seen = self.journal.journaled(keys)
        except StoreUnavailable:
            return payloads  # parked and reported; nothing is lost either way
        if not seen:
            return payloads
        kept = [p for p in payloads if not (isinstance(p, Fill) and dedupe_key(p) in seen)]
        self.resent_fills_dropped += len(payloads) - len(kept)
        return kept

    def _durable_targets(self, payload: Any) -> list[str] | None:
        assert self._ingest is not None
        target = self._ingest.target(payload)
        if target is not None:
            return [target] if target in self._profile_ids else None
        if exchange_order_key(payload) is not None or getattr(payload, "profile_id", None):
            return None
        symbol = getattr(payload, "symbol", None)
        if isinstance(symbol, str) and isinstance(payload, Message):
            return [s.profile_id for s in self.profiles if symbol in s.symbols]
        return None

    def _resubmit(self, payloads: list[Any]) -> None:
        """Parked messages whose owner just claimed them: journal them now."""
        try:
            self.submit(*payloads)
        except (StoreUnavailable, StaleFence) as exc:
            # Not lost: the exchange's record is reconciled on the next bootstrap.
            logging.getLogger("capflow.runtime").error("parked messages not journaled: %s", exc)

    def crash_profile(self, profile_id: str) -> None:
        """Drill: kill the profile's current actor after what was submitted before this call.

        The crash is out of band (never logged, never replayed); the supervisor restarts the
        profile, which replays its log from the last checkpoint. A crash requested while the
        profile has no running actor (restarting, failed) does nothing.

        Raises:
            UnknownProfile: no such profile runs here.
        """
        self.submit(CrashNow(profile_id=self._known(profile_id)))

    def hold_bootstrap(self, profile_id: str) -> None:
        """Restart a profile into a bootstrap that stays open (messages queue meanwhile).

        Raises:
            UnknownProfile: no such profile runs here.
        """
        self.supervisor.tell(HoldBootstrap(profile_id=self._known(profile_id)))

    def complete_bootstrap(self, profile_id: str) -> None:
        """End a held bootstrap: queued messages are applied in arrival order.

        Raises:
            UnknownProfile: no such profile runs here.
        """
        self.supervisor.tell(CompleteBootstrap(profile_id=self._known(profile_id)))

    def _known(self, profile_id: str) -> str:
        ids = sorted(spec.profile_id for spec in self.profiles)
        if profile_id not in ids:
            raise UnknownProfile(f"unknown profile {profile_id!r}: this runtime runs {ids}")
        return profile_id

    # -- observation -----------------------------------------------------------------------
    def dispatch_stats(self) -> dict[str, int] | None:
        """The profile dispatcher's threads, live actors and ready queue (None: no dispatcher,
        one thread per profile, or not started)."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            return None
        return {"threads": dispatcher.threads, "actors": dispatcher.live, "ready": dispatcher.ready}

    def inspect(self) -> dict[str, Any]:
        """The supervisor's bookkeeping: statuses, sequence numbers, log sizes, dead letters."""
        return cast(dict[str, Any], self.supervisor.ask(Inspect()))

    def _refs(self, only: Iterable[str] | None = None) -> dict[str, pykka.ActorRef[Any]]:
        ask = Refs(only=None if only is None else frozenset(only))
        return cast(dict[str, pykka.ActorRef[Any]], self.supervisor.ask(ask))

    def _sync(self, refs: Iterable[pykka.ActorRef[Any]], deadline: float) -> None:
        for ref in refs:
            # A crashed profile is restarted by the supervisor; we simply go round again. An
            # ask that raced the actor's death is never answered: wait for it briefly and go
            # round again too (the next round asks the new incarnation).
            with contextlib.suppress(pykka.ActorDeadError, pykka.Timeout):
                ref.ask(Sync(), timeout=min(1.0, max(0.01, deadline - time.monotonic())))

    def drain(self, timeout: float = 30.0) -> None:
        """Block until every submitted message is applied and checkpointed (or held/failed).

        Each round asks (``Sync``) only the profiles the supervisor told anything since the
        previous round, so that they have handled it (applied and checkpointed a delivery,
        published the events of a ``Committed``, died of a drill's crash); it returns after a
        round in which nobody was told anything and every profile is settled. Idle profiles
        are never asked: at 10,000 of them that is a handful of asks, not two per profile.

        Raises:
            TimeoutError: the runtime did not settle within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            if self._ingest is not None and not self._ingest.caught_up():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"journal readers did not catch up within {timeout} s")
                time.sleep(0.001)
                continue
            touched = cast(set[str], self.supervisor.ask(TakeTouched()))
            self._sync(self._refs(touched).values(), deadline)
            settled = self._settled()
            if settled and not touched and (self._ingest is None or self._settled()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"runtime did not settle within {timeout} s: {self.inspect()}")
            if touched:
                pause = 0.001
            else:
                # Profiles still bootstrapping, or a restart timer pending: wait, a little
                # longer each round, without taking the CPU they need.
                time.sleep(pause)
                pause = min(0.02, pause * 2)

    def _settled(self) -> bool:
        return cast(bool, self.supervisor.ask(Settled()))

    def books(self) -> dict[str, dict[str, Any]]:
        """Each live profile's books as a summary dict (profiles not live are omitted)."""
        out: dict[str, dict[str, Any]] = {}
        for pid, ref in self._refs().items():
            try:
                out[pid] = cast(dict[str, Any], ref.ask(GetBooks(), timeout=10))
            except pykka.ActorDeadError:
                continue
        return out

    # -- callbacks from the supervisor thread ----------------------------------------------
    def _next_id(self) -> str:
        self._ids += 1
        return f"runtime:{self._ids}"

    def _unroutable(self, payload: Any, why: str) -> None:
        if isinstance(payload, OpenPosition | ClosePosition):
            # A signal is refused as a reservation (counted under its own reason), not as a
            # fill: it has no trade id, and "unroutable" fills are the parked exchange events.
            self.events.publish(
                ReservationRejected(
                    message_id=self._next_id(),
                    ts_ns=self._clock(),
                    profile_id=payload.profile_id,
                    signal_id=payload.signal_id,
                    reason=UnknownProfile.reason,
                    needed=0,
                    available=0,
                    detail=why,
                    correlation_id=payload.message_id,
                )
            )
            return
        trade_id = getattr(payload, "trade_id", None)
        self.events.publish(
            FillRejected(
                message_id=self._next_id(),
                ts_ns=self._clock(),
                profile_id=None,
                trade_id=trade_id if isinstance(trade_id, str) else "-",
                reason="unroutable",
                detail=why,
                correlation_id=payload.message_id if isinstance(payload, Message) else None,
            )
        )

    def _dead_letter(self, letter: DeadLetter) -> None:
        self.events.publish(
            DeadLettered(
                message_id=self._next_id(),
                ts_ns=self._clock(),
                profile_id=letter.profile_id,
                seq=letter.seq,
                payload_type=type(letter.payload).__name__,
                error=letter.error,
                attempts=letter.attempts,
            )
        )
