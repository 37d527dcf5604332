"""The supervisor: routes messages to profiles, and restarts profiles that crash.

pykka has no supervision and drops queued ``tell``s when an actor dies, so nothing is ever
handed to a profile without also staying in the supervisor's per-profile *log* until the profile
reports a checkpoint that covers it. Routing of exchange events (fills, order acks) goes through
the order-ownership index (client order id → profile), filled by the profiles *before* they send
an order, never by any field inside the event: one profile's fill cannot touch another's books.

Profile lifecycle::

    STARTING ──BootstrapDone──▶ LIVE ──ProfileCrashed──▶ RESTARTING ──timer──▶ STARTING
        │ (held bootstrap)       ▲                          │ too many restarts in window
        ▼                        │                          ▼
    BOOTSTRAP_HELD ──complete────┘                        FAILED

A held bootstrap of a LIVE profile stops its actor first (RESTARTING) and starts the next
incarnation only when the old one reports ProfileStopped, after its final checkpoint.

Messages for a profile that is not LIVE are logged and held; going LIVE delivers every logged
message newer than the checkpoint the new incarnation loaded, in order.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pykka

from actors.dispatch import Dispatcher
from actors.journal import JournalEntries
from actors.ownership import OwnershipIndex
from actors.profile import CrashNow, Durability, HandlerFactory, MemoryDurability, ProfileActor
from actors.protocol import (
    BootstrapDone,
    Checkpointed,
    Committed,
    Deliver,
    DeliverBatch,
    Halt,
    ProfileCrashed,
    ProfileStopped,
    Reconcile,
    Reconciled,
    RegisterOrder,
    RestartProfile,
)
from messages import InvalidConfig
from persistence import SnapshotStore

logger = logging.getLogger("capflow.supervisor")


class Status(enum.StrEnum):
    """Where a profile is in its lifecycle (see the module docstring)."""

    STARTING = "starting"
    BOOTSTRAP_HELD = "bootstrap_held"
    RECONCILING = "reconciling"
    LIVE = "live"
    RESTARTING = "restarting"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPolicy:
    """Exponential backoff with a cap on restarts within a sliding window.

    Attributes:
        backoff_base: delay before the first restart, seconds.
        backoff_max: the delay never grows past this.
        max_restarts: restarts allowed within ``window`` seconds before the profile is FAILED.
        window: the sliding window, seconds.
        max_attempts: deliveries of one message that crash the actor before it is dead-lettered.
    """

    backoff_base: float = 0.01
    backoff_max: float = 1.0
    max_restarts: int = 10
    window: float = 60.0
    max_attempts: int = 3

    def delay(self, recent_restarts: int) -> float:
        return float(min(self.backoff_max, self.backoff_base * 2.0**recent_restarts))


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileSpec:
    """What the supervisor needs to run one profile.

    Attributes:
        profile_id: unique id.
        factory: builds the profile's handler from a checkpoint or from its config.
        symbols: markets whose price ticks the profile wants.
        account_id: the exchange account whose balance the profile draws on.
        claims: the most of each asset the profile may ever reserve (its allocation/budget).
    """

    profile_id: str
    factory: HandlerFactory
    symbols: frozenset[str] = frozenset()
    account_id: str = "main"
    claims: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A message that crashed its profile ``attempts`` times and was set aside."""

    profile_id: str
    seq: int
    payload: Any
    error: str
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Submit:
    """Route these messages (from signals, the fill feed, scenarios)."""

    payloads: tuple[Any, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldBootstrap:
    """Restart ``profile_id`` into a bootstrap that stays open until :class:`CompleteBootstrap`."""

    profile_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteBootstrap:
    """Close a held bootstrap: the messages queued meanwhile are applied, in arrival order."""

    profile_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Refs:
    """Ask-only: the current actor ref of every profile that has one (of ``only``, if given)."""

    only: frozenset[str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TakeTouched:
    """Ask-only: the profiles this supervisor told anything since the last ask (cleared)."""


_SETTLED = frozenset({Status.BOOTSTRAP_HELD, Status.FAILED})


@dataclass(frozen=True, slots=True, kw_only=True)
class Settled:
    """Ask-only: True when no restart timer is pending and every profile is settled (live with
    an empty log, held at bootstrap, or failed). ``drain``'s check: no per-profile report."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Inspect:
    """Ask-only: a plain snapshot of the supervisor's bookkeeping."""


@dataclass(slots=True)
class _Profile:
    spec: ProfileSpec
    status: Status = Status.STARTING
    incarnation: int = 0
    ref: pykka.ActorRef[Any] | None = None
    next_seq: int = 1
    log: collections.deque[Deliver] = field(default_factory=collections.deque)
    checkpoint_seq: int = 0
    delivered_seq: int = 0
    hold: bool = False
    halted: str | None = None
    replayed: int = 0
    outages: int = 0
    crash_counts: collections.Counter[int] = field(default_factory=collections.Counter)
    restarts: collections.deque[float] = field(default_factory=collections.deque)


# Exchange-originated events: routed by the ownership index, whatever else they carry.
RouteByOrder = Callable[[Any], str | None]


class Supervisor(pykka.ThreadingActor):
    """Routes, logs, and supervises profile actors.

    Args:
        profiles: the profiles to run.
        store: checkpoint store shared with the profiles (memory mode), or
        durability: how profiles make checkpoints durable (default: ``store``, synchronously).
        index: the ownership index shared with the durable ingest (default: a new one).
        order_key: returns the client order id of an exchange-originated message, else None.
        on_unroutable: called with messages that no profile owns (they are also kept parked).
        on_dead_letter: called with each new :class:`DeadLetter`.
        policy: restart policy.
        balances: per account and asset, what the account holds; the sum of the profiles'
            claims on an account may not exceed it (checked at start).
        parked_limit: at most this many unowned exchange events are kept waiting for their
            owner; beyond it the oldest are dropped (counted in ``inspect()``).
    """

    use_daemon_thread = True

    def __init__(
        self,
        *,
        profiles: Sequence[ProfileSpec],
        store: SnapshotStore | None = None,
        order_key: RouteByOrder,
        durability: Durability | None = None,
        index: OwnershipIndex | None = None,
        resubmit: Callable[[list[Any]], None] | None = None,
        unsafe_no_dedupe: bool = False,
        initial: Sequence[JournalEntries] = (),
        on_unroutable: Callable[[Any, str], None] = lambda payload, why: None,
        on_dead_letter: Callable[[DeadLetter], None] = lambda letter: None,
        policy: RestartPolicy = RestartPolicy(),
        balances: Mapping[str, Mapping[str, int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        parked_limit: int = 100_000,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        super().__init__()
        self._dispatcher = dispatcher
        check_account_caps(profiles, balances)
        self._profiles = {spec.profile_id: _Profile(spec=spec) for spec in profiles}
        if len(self._profiles) != len(profiles):
            raise ValueError("duplicate profile ids")
        self._by_symbol: dict[str, list[str]] = collections.defaultdict(list)
        for spec in profiles:
            for symbol in spec.symbols:
                self._by_symbol[symbol].append(spec.profile_id)
        self._index = index if index is not None else OwnershipIndex()
        if durability is None:
            if store is None:
                raise ValueError("a Supervisor needs a store or a durability")
            durability = MemoryDurability(store, self._index.claim)
        self._durability = durability
        self._resubmit = resubmit
        self._unsafe = unsafe_no_dedupe
        self._order_key = order_key
        self._on_unroutable = on_unroutable
        self._on_dead_letter = on_dead_letter
        self._policy = policy
        self._clock = clock
        # Insertion-ordered: the oldest parked order ids go first when over the limit.
        self.parked: dict[str, list[Any]] = {}
        self._parked_limit = parked_limit
        self._touched: set[str] = set()  # profiles told anything since the last TakeTouched
        self._parked_count = 0
        self.parked_dropped = 0
        self.dead_letters: list[DeadLetter] = []
        self._timers: set[threading.Timer] = set()
        for entries in initial:
            # Journal entries left by the previous incarnation of this runtime: logged before
            # any profile starts, so each profile replays them before it reconciles.
            self._route_journaled(entries)

    # -- lifecycle -------------------------------------------------------------------------
    def on_start(self) -> None:
        for profile in self._profiles.values():
            self._start_incarnation(profile)

    def on_stop(self) -> None:
        for timer in list(self._timers):
            timer.cancel()
        for profile in self._profiles.values():
            if profile.ref is not None:
                profile.ref.stop(block=False)

    def _start_incarnation(self, profile: _Profile) -> None:
        profile.incarnation += 1
        profile.status = Status.STARTING
        profile.ref = ProfileActor.start(
            profile_id=profile.spec.profile_id,
            incarnation=profile.incarnation,
            factory=profile.spec.factory,
            durability=self._durability,
            supervisor=self.actor_ref,
            unsafe_no_dedupe=self._unsafe,
            dispatcher=self._dispatcher,
        )

    # -- messages --------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        match message:
            case Submit(payloads=payloads):
                self._route(payloads)
            case RegisterOrder(profile_id=pid, client_order_id=cid):
                self._on_register(pid, cid)
            case JournalEntries():
                self._route_journaled(message)
            case Checkpointed(profile_id=pid, incarnation=inc, seq=seq, number=number):
                self._on_checkpoint(pid, inc, seq, number)
            case BootstrapDone(profile_id=pid, incarnation=inc, applied_seq=applied):
                self._on_bootstrap_done(pid, inc, applied)
            case ProfileCrashed():
                self._on_crash(message)
            case Reconciled(profile_id=pid, incarnation=inc):
                self._on_reconciled(pid, inc)
            case RestartProfile(profile_id=pid, incarnation=inc):
                self._on_restart_timer(pid, inc)
            case ProfileStopped(profile_id=pid, incarnation=inc):
                self._on_stopped(pid, inc)
            case HoldBootstrap(profile_id=pid) | CompleteBootstrap(profile_id=pid) if (
                pid not in self._profiles
            ):
                # A tell that raised would stop the supervisor, and every profile with it.
                logger.error("ignored %s: no profile %r runs here", message, pid)
            case HoldBootstrap(profile_id=pid):
                self._hold_bootstrap(pid)
            case CompleteBootstrap(profile_id=pid):
                self._complete_bootstrap(pid)
            case Inspect():
                return self._inspect()
            case Refs(only=only):
                profiles = self._profiles if only is None else only & self._profiles.keys()
                return {
                    pid: ref for pid in profiles if (ref := self._profiles[pid].ref) is not None
                }
            case TakeTouched():
                taken, self._touched = self._touched, set()
                return taken
            case Settled():
                return self._settled()
            case _:
                return super().on_receive(message)
        return None

    def _route(self, payloads: Iterable[Any]) -> None:
        batches: dict[str, list[Deliver]] = {}
        for payload in payloads:
            for pid in self._targets(payload):
                profile = self._profiles[pid]
                if isinstance(payload, CrashNow):
                    # Out of band, but after what this same submit routed to the profile before
                    # it, so a drill's crash point is where the caller put it.
                    self._deliver(profile, batches.pop(pid, []))
                    self._tell(profile, payload)
                    continue
                if self._resubmit is not None:
                    # Durable mode: only the journal assigns sequence numbers.
                    self._resubmit([payload])
                    continue
                item = Deliver(seq=profile.next_seq, payload=payload)
                profile.next_seq += 1
                profile.log.append(item)
                if profile.status is Status.LIVE:
                    batches.setdefault(pid, []).append(item)
        for pid, items in batches.items():
            self._deliver(self._profiles[pid], items)

    def _targets(self, payload: Any) -> list[str]:
        cid = self._order_key(payload)
        if cid is not None:
            owner = self._index.owner(cid)
            if owner is None:
                self._park(cid, payload)
                self._on_unroutable(payload, f"no profile owns client order id {cid!r}")
                return []
            return [owner]
        pid = getattr(payload, "profile_id", None)
        if isinstance(pid, str):
            if pid not in self._profiles:
                self._on_unroutable(payload, f"unknown profile {pid!r}")
                return []
            return [pid]
        symbol = getattr(payload, "symbol", None)
        if isinstance(symbol, str):
            return list(self._by_symbol.get(symbol, ()))
        self._on_unroutable(payload, f"cannot route a {type(payload).__name__}")
        return []

    def _park(self, cid: str, payload: Any) -> None:
        """Keep an unowned exchange event until its owner claims the order, within bounds.

        A flood of events nobody owns (another account's, re-sends of orders closed before a
        restart) must not grow memory without limit: past ``parked_limit`` the oldest are
        dropped, counted and logged. Dropping is safe for the books: an order registered
        after its events arrived is one a restarted profile re-claims while reconciling, and
        reconciliation fetches its trades from the exchange.
        """
        self.parked.setdefault(cid, []).append(payload)
        self._parked_count += 1
        while self._parked_count > self._parked_limit:
            oldest = next(iter(self.parked))
            dropped = self.parked.pop(oldest)
            self._parked_count -= len(dropped)
            self.parked_dropped += len(dropped)
            if self.parked_dropped == len(dropped) or self.parked_dropped % 1000 < len(dropped):
                logger.warning(
                    "parked events over the limit of %d: dropped %d so far (oldest: %s)",
                    self._parked_limit,
                    self.parked_dropped,
                    oldest,
                )

    def _on_register(self, pid: str, cid: str) -> None:
        owner = self._index.claim(cid, pid)
        if owner != pid:
            logger.error("order %s claimed by %s, already owned by %s", cid, pid, owner)
            return
        waiting = self.parked.pop(cid, None)
        if waiting is not None:
            self._parked_count -= len(waiting)
        if waiting:
            # Parked before its owner claimed it (e.g. after a restart, before the profile
            # re-registered its orders): route it now, through the journal when there is one.
            if self._resubmit is not None:
                self._resubmit(waiting)
            else:
                self._route(waiting)

    def _route_journaled(self, entries: JournalEntries) -> None:
        """Entries read from the journal: already routed (the target is in the entry)."""
        batches: dict[str, list[Deliver]] = {}
        for seq, offset, pid, payload in entries.items:
            profile = self._profiles.get(pid)
            if profile is None:
                logger.error("journal entry %s for unknown profile %r ignored", offset, pid)
                continue
            if not entries.claimed and profile.log and seq <= profile.log[-1].seq:
                continue  # re-read after a rewind: already logged
            item = Deliver(seq=seq, payload=payload, offset=offset, reapply=entries.claimed)
            profile.next_seq = max(profile.next_seq, seq + 1)
            profile.log.append(item)
            if profile.status is Status.LIVE:
                batches.setdefault(pid, []).append(item)
        for pid, items in batches.items():
            self._deliver(self._profiles[pid], items)

    def _deliver(self, profile: _Profile, items: Sequence[Deliver]) -> None:
        if not items:
            return
        message = items[0] if len(items) == 1 else DeliverBatch(items=tuple(items))
        if self._tell(profile, message):
            profile.delivered_seq = items[-1].seq

    def _tell(self, profile: _Profile, message: Any) -> bool:
        if profile.ref is None:
            return False
        self._touched.add(profile.spec.profile_id)
        try:
            profile.ref.tell(message)
        except pykka.ActorDeadError:
            # It died and its ProfileCrashed report is behind us in the mailbox: the log keeps
            # the message, and the restart redelivers it.
            return False
        return True

    def _on_checkpoint(self, pid: str, incarnation: int, seq: int, number: int = 0) -> None:
        profile = self._profiles[pid]
        if incarnation != profile.incarnation:
            return
        if not self._durability.synchronous:
            # Durable now: the profile may publish the events it held for it. (A synchronous
            # store made it durable before the report: the profile has published already.)
            self._tell(profile, Committed(seq=seq, number=number))
        profile.checkpoint_seq = max(profile.checkpoint_seq, seq)
        # A filter, not a prefix pop: an entry claimed out of order sits behind newer ones.
        if any(item.seq <= seq for item in profile.log):
            profile.log = collections.deque(item for item in profile.log if item.seq > seq)

    def _on_bootstrap_done(self, pid: str, incarnation: int, applied_seq: int) -> None:
        profile = self._profiles[pid]
        if incarnation != profile.incarnation:
            return
        while profile.log and profile.log[0].seq <= applied_seq:
            profile.log.popleft()
        profile.checkpoint_seq = max(profile.checkpoint_seq, applied_seq)
        if profile.hold:
            profile.status = Status.BOOTSTRAP_HELD
            return
        self._begin_live(profile)

    def _begin_live(self, profile: _Profile) -> None:
        """Replay the log, reconcile with the exchange (durable mode), then go live."""
        if not self._durability.reconciles:
            self._go_live(profile)
            return
        profile.status = Status.RECONCILING
        if profile.halted is not None:
            self._tell(profile, Halt(reason=profile.halted))
        replay = list(profile.log)
        self._deliver(profile, replay)
        profile.replayed = replay[-1].seq if replay else 0
        self._tell(profile, Reconcile())

    def _on_reconciled(self, pid: str, incarnation: int) -> None:
        profile = self._profiles[pid]
        if incarnation != profile.incarnation or profile.status is not Status.RECONCILING:
            return
        profile.status = Status.LIVE
        self._deliver(profile, [item for item in profile.log if item.seq > profile.replayed])

    def _go_live(self, profile: _Profile) -> None:
        profile.status = Status.LIVE
        if profile.halted is not None:
            self._tell(profile, Halt(reason=profile.halted))
        self._deliver(profile, list(profile.log))

    def _on_crash(self, crash: ProfileCrashed) -> None:
        profile = self._profiles[crash.profile_id]
        if crash.incarnation != profile.incarnation or profile.status is Status.FAILED:
            return
        logger.warning(
            "profile %s (incarnation %d) crashed on seq %s: %s",
            crash.profile_id,
            crash.incarnation,
            crash.seq,
            crash.error,
        )
        profile.ref = None
        profile.status = Status.RESTARTING
        if crash.retryable:
            # The store (or another outside service) was down while it started: not the
            # profile's fault and not a poison message. Retry with capped backoff, uncounted.
            profile.outages += 1
            self._schedule_restart(profile, self._policy.delay(min(profile.outages, 16)))
            return
        profile.outages = 0
        if crash.seq is not None:
            profile.crash_counts[crash.seq] += 1
            attempts = profile.crash_counts[crash.seq]
            if attempts >= self._policy.max_attempts:
                self._dead_letter(profile, crash.seq, crash.error, attempts)
        now = self._clock()
        while profile.restarts and now - profile.restarts[0] > self._policy.window:
            profile.restarts.popleft()
        if len(profile.restarts) >= self._policy.max_restarts:
            profile.status = Status.FAILED
            logger.error(
                "profile %s FAILED: %d restarts within %.0f s; its messages stay logged",
                crash.profile_id,
                len(profile.restarts),
                self._policy.window,
            )
            return
        delay = self._policy.delay(len(profile.restarts))
        profile.restarts.append(now)
        self._schedule_restart(profile, delay)

    def _dead_letter(self, profile: _Profile, seq: int, error: str, attempts: int) -> None:
        for item in profile.log:
            if item.seq == seq:
                profile.log.remove(item)
                letter = DeadLetter(
                    profile_id=profile.spec.profile_id,
                    seq=seq,
                    payload=item.payload,
                    error=error,
                    attempts=attempts,
                )
                self.dead_letters.append(letter)
                profile.halted = f"dead letter seq {seq}: {error}"
                logger.error("profile %s halted: %s", profile.spec.profile_id, profile.halted)
                self._on_dead_letter(letter)
                return

    def _schedule_restart(self, profile: _Profile, delay: float) -> None:
        message = RestartProfile(
            profile_id=profile.spec.profile_id, incarnation=profile.incarnation + 1
        )
        ref = self.actor_ref

        def fire() -> None:
            self._timers.discard(timer)
            with contextlib.suppress(pykka.ActorDeadError):  # supervisor stopped meanwhile
                ref.tell(message)

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _on_restart_timer(self, pid: str, incarnation: int) -> None:
        profile = self._profiles[pid]
        if profile.status is Status.RESTARTING and incarnation == profile.incarnation + 1:
            self._start_incarnation(profile)

    def _hold_bootstrap(self, pid: str) -> None:
        profile = self._profiles[pid]
        profile.hold = True
        if profile.status is Status.LIVE and profile.ref is not None:
            # A fresh bootstrap from the last good state: stop this incarnation after it has
            # applied and checkpointed what it was given (pykka's stop is queued behind them);
            # the next one starts on its ProfileStopped, never alongside it (it would load an
            # older checkpoint and redo what this one did). Meanwhile messages are only logged.
            old = profile.ref
            profile.ref = None
            profile.status = Status.RESTARTING
            old.stop(block=False)

    def _on_stopped(self, pid: str, incarnation: int) -> None:
        profile = self._profiles[pid]
        if incarnation == profile.incarnation and profile.status is Status.RESTARTING:
            self._start_incarnation(profile)

    def _complete_bootstrap(self, pid: str) -> None:
        profile = self._profiles[pid]
        profile.hold = False
        if profile.status is Status.BOOTSTRAP_HELD:
            self._begin_live(profile)

    def _settled(self) -> bool:
        if self._timers:
            return False
        live, settled = Status.LIVE, _SETTLED
        return all(
            (p.status is live and not p.log) or p.status in settled for p in self._profiles.values()
        )

    def _inspect(self) -> dict[str, Any]:
        return {
            "profiles": {
                pid: {
                    "status": p.status.value,
                    "incarnation": p.incarnation,
                    "next_seq": p.next_seq,
                    "delivered_seq": p.delivered_seq,
                    "checkpoint_seq": p.checkpoint_seq,
                    "log": len(p.log),
                    "halted": p.halted,
                    "restarts": len(p.restarts),
                }
                for pid, p in self._profiles.items()
            },
            "owners": len(self._index),
            "parked": self._parked_count,
            "parked_dropped": self.parked_dropped,
            "dead_letters": list(self.dead_letters),
            "timers": len(self._timers),
        }


def check_account_caps(
    profiles: Sequence[ProfileSpec], balances: Mapping[str, Mapping[str, int]] | None
) -> None:
    """Refuse a configuration whose profiles could together reserve more than an account holds.

    Each profile can reserve at most its claims (its allocation), so when the claims fit the
    balance, the sum of all reservations on the account can never exceed it.
    """
    if balances is None:
        return
    totals: dict[tuple[str, str], int] = collections.Counter()
    for spec in profiles:
        for asset, amount in spec.claims.items():
            totals[(spec.account_id, asset)] += amount
    for (account, asset), claimed in sorted(totals.items()):
        held = balances.get(account, {}).get(asset, 0)
        if claimed > held:
            raise InvalidConfig(
                f"profiles on account {account} claim {claimed} {asset} but it holds {held}"
            )
