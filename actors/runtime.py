"""The embedded runtime: what an application (or ``capflow run``) holds on to.

runtime = Runtime(profiles, balances=...).start()
runtime.submit(OpenPosition(...))           # any thread; never blocks on the books
runtime.drain()                             # wait until everything submitted is applied
runtime.books()                             # {profile_id: summary}
runtime.stop()
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self, cast

import pykka

from actors.events import EventSink
from actors.profile import CrashNow
from actors.protocol import GetBooks, Sync
from actors.supervisor import (
    CompleteBootstrap,
    DeadLetter,
    HoldBootstrap,
    Inspect,
    ProfileSpec,
    Refs,
    RestartPolicy,
    Status,
    Submit,
    Supervisor,
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
    UnknownProfile,
)
from persistence import MemoryStore, SnapshotStore

DEFAULT_POLICY = RestartPolicy()
_SETTLED = {Status.BOOTSTRAP_HELD.value, Status.FAILED.value}


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
    ) -> None:
        self.profiles = list(profiles)
        self.store: SnapshotStore = store if store is not None else MemoryStore()
        self.events = events if events is not None else EventSink()
        self._policy = policy
        self._balances = balances
        self._clock = clock
        self._ids = 0
        self._supervisor: pykka.ActorRef[Supervisor] | None = None

    def start(self) -> Self:
        """Start the supervisor, which starts (bootstraps) every profile."""
        self._supervisor = Supervisor.start(
            profiles=self.profiles,
            store=self.store,
            order_key=exchange_order_key,
            on_unroutable=self._unroutable,
            on_dead_letter=self._dead_letter,
            policy=self._policy,
            balances=self._balances,
        )
        return self

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
        """Stop the supervisor and every profile actor."""
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None

    # -- input -----------------------------------------------------------------------------
    def submit(self, *payloads: Any) -> None:
        """Route messages to their profiles. Thread-safe; returns at once."""
        if payloads:
            self.supervisor.tell(Submit(payloads=payloads))

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
    def inspect(self) -> dict[str, Any]:
        """The supervisor's bookkeeping: statuses, sequence numbers, log sizes, dead letters."""
        return cast(dict[str, Any], self.supervisor.ask(Inspect()))

    def _refs(self) -> dict[str, pykka.ActorRef[Any]]:
        return cast(dict[str, pykka.ActorRef[Any]], self.supervisor.ask(Refs()))

    def drain(self, timeout: float = 30.0) -> None:
        """Block until every submitted message is applied and checkpointed (or held/failed).

        Raises:
            TimeoutError: the runtime did not settle within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.inspect()
            for ref in self._refs().values():
                # A crashed profile is restarted by the supervisor; we simply go round again.
                # An ask that raced the actor's death is never answered: wait for it briefly
                # and go round again too (the next round asks the new incarnation).
                with contextlib.suppress(pykka.ActorDeadError, pykka.Timeout):
                    ref.ask(Sync(), timeout=min(1.0, max(0.01, deadline - time.monotonic())))
            info = self.inspect()
            settled = info["timers"] == 0 and all(
                p["status"] in _SETTLED or (p["status"] == Status.LIVE.value and p["log"] == 0)
                for p in info["profiles"].values()
            )
            if settled:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"runtime did not settle within {timeout} s: {info}")
            time.sleep(0.001)  # a restart timer is pending; this is the runtime, not a test

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
