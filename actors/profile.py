"""The profile actor: one profile's books behind one mailbox.

The mailbox is the per-profile serialization (seed 000's ``withLock(profileId)``): a handler runs
to completion before the next message is looked at, so no two operations on one profile ever
interleave, while different profiles run on their own threads.

Exactly-once across actor crashes: every message arrives wrapped in :class:`Deliver` with a
per-profile sequence number assigned by the supervisor, which keeps each message in its log until
the profile reports a checkpoint covering it. The actor applies ``seq > applied_seq`` only, and
checkpoints ``(applied_seq, state)`` atomically, so a restarted incarnation that loads the
checkpoint and receives the log again applies each message exactly once.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import pykka

from actors.dispatch import Dispatcher, PooledActor
from actors.protocol import (
    BootstrapDone,
    Checkpointed,
    Committed,
    Deliver,
    DeliverBatch,
    GetBooks,
    Halt,
    ProfileCrashed,
    ProfileStopped,
    Reconcile,
    Reconciled,
    RegisterOrder,
    Sync,
)
from messages import Fill, StoreUnavailable
from persistence import Checkpoint, SnapshotStore

logger = logging.getLogger("capflow.profile")


class InjectedCrash(RuntimeError):
    """Raised on purpose by crash drills; any other unexpected exception behaves the same."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CrashNow:
    """Out-of-band drill message: the actor dies at once, losing whatever its inbox holds.

    Routed by ``profile_id`` but never logged: a restart does not replay it.
    """

    profile_id: str


class ProfileHandler(Protocol):
    """The kind-specific part of a profile (position ledger or grid): pure books + exchange calls.

    ``handle`` applies one message. It turns a caller's or state error into a rejection event
    (state unchanged) and lets only unexpected exceptions escape (a crash). Events are held by
    the handler (``take_events``) and published (``publish_events``) only once the checkpoint
    that covers them is durable, so a replay after a crash never publishes an event twice.
    """

    def handle(self, payload: object) -> None: ...

    def to_state(self) -> dict[str, Any]: ...

    def summary(self) -> dict[str, Any]: ...

    def halt(self, reason: str) -> None: ...

    def take_events(self) -> list[Any]: ...

    def publish_events(self, events: list[Any]) -> None: ...

    def reconcile(self) -> None: ...

    def resume(self) -> None: ...


class HandlerFactory(Protocol):
    """Builds a profile's handler, from its checkpointed state or, with None, from config.

    ``register(client_order_id)`` claims an order id for the profile in the ownership index;
    the handler calls it *before* sending the order to the exchange.
    """

    def __call__(
        self, profile_id: str, state: dict[str, Any] | None, register: Callable[[str], None]
    ) -> ProfileHandler: ...


class Durability(Protocol):
    """Where a profile's checkpoints go, and whether they are durable at once or later."""

    #: True: ``checkpoint`` returns once durable. False: durability is confirmed later by a
    #: :class:`Committed` message (a batched commit on another thread).
    synchronous: bool

    def load(self, profile_id: str) -> tuple[int, dict[str, Any] | None, str | None]:
        """``(applied seq, state, journal offset)`` of the last durable checkpoint.

        ``(0, None, None)`` if there is none.
        """

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
        """Make ``state`` (everything up to ``seq``) durable, and ack the covered entries.

        ``number`` counts the incarnation's checkpoints; a later ``Committed`` names it.
        """

    def register(self, profile_id: str, client_order_id: str) -> None:
        """Claim an order id for a profile (synchronously, before the order is sent)."""

    @property
    def reconciles(self) -> bool:
        """Whether a fresh incarnation reconciles its books with the exchange on start."""


class MemoryDurability:
    """Checkpoints in a :class:`SnapshotStore`, synchronously (the embedded default)."""

    synchronous = True
    reconciles = False

    def __init__(self, store: SnapshotStore, claim: Callable[[str, str], object]) -> None:
        self._store = store
        self._claim = claim

    def load(self, profile_id: str) -> tuple[int, dict[str, Any] | None, str | None]:
        checkpoint = self._store.load(profile_id)
        return (0, None, None) if checkpoint is None else (checkpoint.seq, checkpoint.state, None)

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
        self._store.save(Checkpoint(profile_id=profile_id, seq=seq, state=state))

    def register(self, profile_id: str, client_order_id: str) -> None:
        self._claim(client_order_id, profile_id)


class ProfileActor(PooledActor):
    """Owns one profile's handler; applies logged messages exactly once; checkpoints.

    Args:
        profile_id: the profile this actor serves.
        incarnation: increases with every (re)start; stale reports are ignored upstream.
        factory: builds the handler from the last checkpoint (or from config).
        durability: where checkpoints go (memory, or the fenced journal store).
        supervisor: the supervisor's ref, for ``tell`` only (never ``ask`` from here).
        checkpoint_every: checkpoint after this many messages even while the inbox is busy.
        dispatcher: the threads that run this actor with the other profiles' (None: a thread
            of its own, as ``pykka.ThreadingActor``).
    """

    def __init__(
        self,
        *,
        profile_id: str,
        incarnation: int,
        factory: HandlerFactory,
        durability: Durability,
        supervisor: pykka.ActorRef[Any],
        checkpoint_every: int = 64,
        unsafe_no_dedupe: bool = False,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        super().__init__(dispatcher=dispatcher)
        self.profile_id = profile_id
        self._unsafe = unsafe_no_dedupe
        self.incarnation = incarnation
        self._factory = factory
        self._durability = durability
        self._supervisor = supervisor
        self._checkpoint_every = checkpoint_every
        self._handler: ProfileHandler | None = None
        self._applied_seq = 0
        self._checkpointed_seq = 0
        self._since_checkpoint = 0
        self._offset: str | None = None
        self._acks: list[str] = []
        self._unpublished: collections.deque[tuple[int, list[Any]]] = collections.deque()
        self._current_seq: int | None = None
        self._checkpoints = 0  # this incarnation's checkpoint counter
        self._resume_after: int | None = None  # resume once this checkpoint is durable

    # -- lifecycle -------------------------------------------------------------------------
    def on_start(self) -> None:
        try:
            seq, state, offset = self._durability.load(self.profile_id)
            self._handler = self._factory(self.profile_id, state, self._register)
            self._applied_seq = self._checkpointed_seq = seq
            self._offset = offset
        except Exception as exc:
            # pykka stops an actor whose on_start raises without calling on_failure: report it.
            # The store being down is retried without limit; a corrupt snapshot is not.
            self._report_crash(exc, retryable=isinstance(exc, StoreUnavailable))
            raise
        self._supervisor.tell(
            BootstrapDone(
                profile_id=self.profile_id,
                incarnation=self.incarnation,
                applied_seq=self._applied_seq,
            )
        )

    def on_stop(self) -> None:
        # A requested stop is queued behind the messages already delivered: make them durable,
        # so that the next incarnation (a held bootstrap waits for this) starts from them.
        try:
            self._checkpoint()
        except pykka.ActorDeadError:
            return  # the supervisor is stopping too
        except Exception as exc:
            # Not durable: the next incarnation must replay them from the log, as after a crash.
            with contextlib.suppress(pykka.ActorDeadError):
                self._report_crash(exc)
            return
        with contextlib.suppress(pykka.ActorDeadError):
            self._supervisor.tell(
                ProfileStopped(profile_id=self.profile_id, incarnation=self.incarnation)
            )

    def _register(self, client_order_id: str) -> None:
        # Synchronous: the claim is visible to every router before the order is sent.
        self._durability.register(self.profile_id, client_order_id)
        self._supervisor.tell(
            RegisterOrder(profile_id=self.profile_id, client_order_id=client_order_id)
        )

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._report_crash(exception_value)

    def _report_crash(self, error: BaseException | None, *, retryable: bool = False) -> None:
        self._supervisor.tell(
            ProfileCrashed(
                profile_id=self.profile_id,
                incarnation=self.incarnation,
                seq=self._current_seq,
                error=repr(error),
                retryable=retryable,
            )
        )

    # -- messages --------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Deliver):
            self._apply(message)
            self._maybe_checkpoint()
            return None
        if isinstance(message, DeliverBatch):
            for item in message.items:
                self._apply(item)
                if self._since_checkpoint >= self._checkpoint_every:
                    self._checkpoint()
            self._maybe_checkpoint()
            return None
        if isinstance(message, Reconcile):
            # After the journal replay (so the replay repeats the dead incarnation's decisions
            # exactly): trades and orders the exchange has that the journal did not carry.
            # Their order differs from the journal's, so the books may now decide differently
            # from a replay: nothing is sent until this state is durable (``_resume``).
            self._books().reconcile()
            self._checkpoint(force=True)
            if self._durability.synchronous:
                self._resume()
            else:
                self._resume_after = self._checkpoints
            return None
        if isinstance(message, Committed):
            self._publish_committed(message.seq)
            if self._resume_after is not None and message.number >= self._resume_after:
                self._resume()
            return None
        if isinstance(message, Sync):
            self._checkpoint()
            return self._applied_seq
        if isinstance(message, GetBooks):
            return self._books().summary()
        if isinstance(message, Halt):
            self._books().halt(message.reason)
            self._checkpoint(force=True)
            return None
        if isinstance(message, CrashNow):
            raise InjectedCrash(f"profile {self.profile_id}: crash injected by a drill")
        return super().on_receive(message)

    def _resume(self) -> None:
        """The reconciled books are durable: send what they decided, then go live.

        A crash from here on restarts from that checkpoint, whose handler resumes the same way
        before the replay, so the orders sent now are sent again with the same ids.
        """
        self._resume_after = None
        self._books().resume()
        self._checkpoint(force=True)
        self._supervisor.tell(Reconciled(profile_id=self.profile_id, incarnation=self.incarnation))

    def _books(self) -> ProfileHandler:
        if self._handler is None:  # pragma: no cover - on_start either sets it or stops us
            raise RuntimeError(f"profile {self.profile_id} has no books loaded")
        return self._handler

    def _apply(self, item: Deliver) -> None:
        if item.offset is not None:
            self._acks.append(item.offset)  # applied now or inside the snapshot: ack either way
        payload = item.payload
        if self._unsafe:
            # Drills only: every protection off — no offset check, and each delivery of a fill
            # looks new to the books' trade-id dedupe. A replay then applies fills twice.
            if isinstance(payload, Fill):
                payload = dataclasses.replace(
                    payload, trade_id=f"{payload.trade_id}~{self.incarnation}.{item.seq}"
                )
        elif item.seq <= self._applied_seq:
            if not item.reapply:
                return  # redelivered after a restart, already inside the checkpoint
            # Claimed out of order from a fenced-out consumer: maybe never applied. The books
            # are idempotent (trade ids, client order ids), so applying it again is exact.
            self._current_seq = item.seq
            self._books().handle(payload)
            self._since_checkpoint += 1
            self._current_seq = None
            return
        self._current_seq = item.seq
        self._books().handle(payload)
        self._applied_seq = item.seq
        self._offset = item.offset if item.offset is not None else self._offset
        self._since_checkpoint += 1
        self._current_seq = None

    def _maybe_checkpoint(self) -> None:
        pending = self._since_checkpoint or self._acks
        if pending and (
            self._since_checkpoint >= self._checkpoint_every or self.actor_inbox.empty()
        ):
            self._checkpoint()

    def _checkpoint(self, *, force: bool = False) -> None:
        handler = self._books()
        if not (force or self._since_checkpoint or self._acks):
            return
        events = handler.take_events()
        self._checkpoints += 1
        self._durability.checkpoint(
            profile_id=self.profile_id,
            incarnation=self.incarnation,
            seq=self._applied_seq,
            offset=self._offset,
            state=handler.to_state(),
            acks=tuple(self._acks),
            number=self._checkpoints,
        )
        self._checkpointed_seq = self._applied_seq
        self._since_checkpoint = 0
        self._acks = []
        if self._durability.synchronous:
            handler.publish_events(events)
            self._supervisor.tell(
                Checkpointed(
                    profile_id=self.profile_id, incarnation=self.incarnation, seq=self._applied_seq
                )
            )
        elif events:
            self._unpublished.append((self._applied_seq, events))

    def _publish_committed(self, seq: int) -> None:
        while self._unpublished and self._unpublished[0][0] <= seq:
            self._books().publish_events(self._unpublished.popleft()[1])
