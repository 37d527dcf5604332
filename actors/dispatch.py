"""Many pykka actors on a few threads: a dispatcher, as in Akka, built on pykka's actor API.

``pykka.ThreadingActor`` gives every actor its own OS thread. With thousands of profiles each
message then wakes a different thread, which waits for the GIL; the process spends its time in
futex wake-ups (docs/performance.md, "Threads and the GIL": ``tell`` round robin over 1,000
actors is 10 x slower than over 10). A :class:`PooledActor` is still a pykka actor (an
``ActorRef``, ``tell``/``ask``/proxies, the registry, ``on_start``/``on_stop``/``on_failure``
with pykka's semantics) and its mailbox is still its serialization: at most one thread runs it
at a time, messages in the order they were put. What changes is who runs it: a
:class:`Dispatcher` with a few threads takes actors whose mailbox is non-empty from a ready
queue and runs up to ``throughput`` messages of one before moving on to the next.

The rule that comes with it (as with any dispatcher): a handler must not block for long. A
blocked handler holds one of the dispatcher's threads; a blocking ``ask`` to another actor of
the same dispatcher can deadlock once every thread waits. Capflow's profile actors only
``tell`` the supervisor, and their blocking calls are short (the store; the in-process
exchange). An exchange client that blocks on the network belongs on a dispatcher of its own,
or on ``ThreadingActor`` (``Runtime(dispatch_threads=0)``).
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, cast

import pykka
from pykka import ActorDeadError, ActorRegistry
from pykka._envelope import Envelope
from pykka.messages import _ActorStop

if TYPE_CHECKING:
    from pykka._actor import ActorInbox

__all__ = ["Dispatcher", "PooledActor", "PooledInbox"]

log = logging.getLogger("capflow.dispatch")
_threads = itertools.count()  # own-thread actors' thread names


class Dispatcher:
    """A fixed set of daemon threads running :class:`PooledActor` s, one turn at a time.

    Args:
        threads: how many actors may run at once (they share the GIL: more threads only help
            while handlers wait on I/O).
        throughput: messages an actor handles per turn before the thread moves on to the next
            ready actor (fairness between busy profiles).
        name: thread name prefix.
    """

    def __init__(self, threads: int = 4, *, throughput: int = 64, name: str = "capflow") -> None:
        if threads < 1:
            raise ValueError(f"a dispatcher needs at least one thread, got {threads}")
        if throughput < 1:
            raise ValueError(f"throughput must be at least 1, got {throughput}")
        self.threads = threads
        self.throughput = throughput
        self._name = name
        self._ready: queue.SimpleQueue[PooledActor | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._live: set[PooledActor] = set()
        self._idle = threading.Condition(self._lock)
        self._closed = False

    # -- actors ----------------------------------------------------------------------------
    def _attach(self, actor: PooledActor) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("this dispatcher is closed")
            self._live.add(actor)
            if not self._workers:
                self._start_workers()

    def _detach(self, actor: PooledActor) -> None:
        with self._lock:
            self._live.discard(actor)
            if not self._live:
                self._idle.notify_all()

    def schedule(self, actor: PooledActor) -> None:
        self._ready.put(actor)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def live(self) -> int:
        """Actors started on this dispatcher and not stopped yet."""
        return len(self._live)

    @property
    def ready(self) -> int:
        """Actors with mail waiting for a thread (approximate: read without a lock). Near the
        number of busy profiles all the time means the dispatcher is saturated."""
        return self._ready.qsize()

    # -- threads ---------------------------------------------------------------------------
    def _start_workers(self) -> None:
        for number in range(self.threads):
            worker = threading.Thread(
                target=self._work, name=f"{self._name}-dispatch-{number}", daemon=True
            )
            worker.start()
            self._workers.append(worker)

    def _work(self) -> None:
        ready = self._ready
        throughput = self.throughput
        while True:
            actor = ready.get()
            if actor is None:
                return
            try:
                actor._run_turn(throughput)
            except BaseException:  # pragma: no cover - _run_turn handles everything itself
                log.exception("dispatcher thread: %s failed outside its handler", actor)

    def close(self, timeout: float = 10.0) -> bool:
        """Wait (bounded) until every actor has stopped, then end the threads.

        Returns:
            True when every actor stopped in time. False when some were still alive: they are
            stopped where they stand, as a daemon thread is at exit (no ``on_stop``; their
            queued ``ask`` s fail with ``ActorDeadError``), so that nothing waits on them.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
            while self._live:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._idle.wait(remaining)
            abandoned = list(self._live)
            workers, self._workers = self._workers, []
        for _ in workers:
            self._ready.put(None)
        current = threading.current_thread()
        for worker in workers:
            if worker is not current:
                worker.join(max(0.0, deadline - time.monotonic()) + 1.0)
        if abandoned:
            log.warning("dispatcher closed with %d actors still running", len(abandoned))
        for actor in abandoned:
            actor._abandon()
        return not abandoned


class PooledInbox:
    """A pykka actor inbox that schedules its actor on a dispatcher when it becomes non-empty.

    ``put`` is thread-safe. ``get`` never blocks (the dispatcher only runs an actor that has
    mail). Once the actor is stopped the inbox is closed: a later ``ask`` fails at once with
    ``ActorDeadError`` instead of waiting forever, and a later ``tell`` is dropped.
    """

    __slots__ = ("_actor", "_closed", "_dispatcher", "_items", "_lock", "_scheduled")

    def __init__(self, actor: PooledActor, dispatcher: Dispatcher) -> None:
        self._actor = actor
        self._dispatcher = dispatcher
        self._items: collections.deque[Envelope[Any]] = collections.deque()
        self._lock = threading.Lock()
        # True while the actor is in the ready queue or running: at most one thread runs it.
        self._scheduled = False
        self._closed = False

    def put(self, envelope: Envelope[Any], /) -> None:
        with self._lock:
            if self._closed:
                _refuse(self._actor, envelope)
                return
            self._items.append(envelope)
            if self._scheduled:
                return
            self._scheduled = True
        self._dispatcher.schedule(self._actor)

    def get(self) -> Envelope[Any]:
        try:
            return self._items.popleft()
        except IndexError:
            raise queue.Empty from None

    def empty(self) -> bool:
        return not self._items

    def _start(self) -> None:
        with self._lock:
            self._scheduled = True
        self._dispatcher.schedule(self._actor)

    def _end_turn(self) -> bool:
        """The actor's turn is over: True if it has more mail (it goes back in the queue)."""
        with self._lock:
            if self._items:
                return True
            self._scheduled = False
            return False

    def _close(self) -> list[Envelope[Any]]:
        with self._lock:
            self._closed = True
            left = list(self._items)
            self._items.clear()
            return left


def _refuse(actor: PooledActor, envelope: Envelope[Any]) -> None:
    if envelope.reply_to is None:
        return
    if isinstance(envelope.message, _ActorStop):
        envelope.reply_to.set(None)  # already stopped: what the caller asked for
        return
    error = ActorDeadError(f"{actor.actor_ref} stopped before handling the message")
    envelope.reply_to.set_exception(exc_info=(ActorDeadError, error, None))


class PooledActor(pykka.Actor):
    """A pykka actor run by a :class:`Dispatcher`, or (``dispatcher=None``) on a thread of its
    own exactly as ``pykka.ThreadingActor``.

    Subclasses call ``super().__init__(dispatcher=...)``. Everything else is pykka's: the loop
    body below is ``Actor._actor_loop_running``'s, one envelope at a time, so a handler that
    raises during a ``tell`` stops the actor after ``on_failure``, an exception during an
    ``ask`` goes back to the caller, and ``SystemExit``/``KeyboardInterrupt`` stops every actor.
    """

    use_daemon_thread = True  # own-thread mode only

    def __init__(self, *, dispatcher: Dispatcher | None) -> None:
        if dispatcher is not None and dispatcher.closed:
            raise RuntimeError("this dispatcher is closed")  # before pykka registers us
        self._dispatcher = dispatcher
        self._set_up = False
        super().__init__()

    def _create_actor_inbox(self) -> ActorInbox:  # type: ignore[override]
        if self._dispatcher is None:
            return pykka.ThreadingActor._create_actor_inbox()
        return PooledInbox(self, self._dispatcher)

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    def _start_actor_loop(self) -> None:
        if self._dispatcher is None:
            threading.Thread(
                target=self._actor_loop, name=f"{type(self).__name__}-{next(_threads)}", daemon=True
            ).start()
            return
        try:
            self._dispatcher._attach(self)
        except RuntimeError:
            # Closed between __init__ and here: pykka registered us already; be dead, not stuck.
            ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
            cast(PooledInbox, self.actor_inbox)._close()
            raise
        cast(PooledInbox, self.actor_inbox)._start()

    def _run_turn(self, budget: int) -> None:
        """Run ``on_start`` (first turn), then up to ``budget`` messages; requeue if more."""
        inbox = cast(PooledInbox, self.actor_inbox)
        dispatcher = cast(Dispatcher, self._dispatcher)
        stopped = self.actor_stopped
        if not self._set_up:
            self._set_up = True
            self._actor_loop_setup()
        handled = 0
        while handled < budget and not stopped.is_set():
            try:
                envelope = inbox.get()
            except queue.Empty:
                break
            self._receive(envelope)
            handled += 1
        if stopped.is_set():
            for envelope in inbox._close():
                _refuse(self, envelope)
            dispatcher._detach(self)
            return
        if inbox._end_turn():
            dispatcher.schedule(self)

    def _abandon(self) -> None:
        """Its dispatcher closed while it was alive: dead from now on, nothing left waiting."""
        ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()
        for envelope in cast(PooledInbox, self.actor_inbox)._close():
            _refuse(self, envelope)
        cast(Dispatcher, self._dispatcher)._detach(self)

    def _receive(self, envelope: Envelope[Any]) -> None:
        # pykka's Actor._actor_loop_running, loop body (pykka 4.x).
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                log.info("Exception returned from %s to caller:", self, exc_info=sys.exc_info())
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())
        except BaseException:
            log.debug("%r in %s. Stopping all actors.", sys.exc_info()[1], self)
            self._stop()
            # Not block=True: this thread is one of the dispatcher's, which the stops need.
            ActorRegistry.stop_all(block=False)
