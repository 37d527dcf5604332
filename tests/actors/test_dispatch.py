"""The dispatcher: many pykka actors on a few threads, each actor still one at a time.

What a profile relies on from its actor: its messages are handled one at a time, in the order
each sender sent them; pykka's failure semantics (a failing ``tell`` stops the actor after
``on_failure``, a failing ``ask`` answers the caller, a failing ``on_start`` stops it); and a
stopped actor answers every ``ask`` instead of leaving it waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pykka
import pytest

from actors.dispatch import Dispatcher, PooledActor


class Recorder(PooledActor):
    """Records what it handles and whether two threads ever ran it at once."""

    last: Recorder | None = None  # the instance behind the latest ref (tests look inside)

    def __init__(self, dispatcher: Dispatcher | None, *, fail_start: bool = False) -> None:
        super().__init__(dispatcher=dispatcher)
        Recorder.last = self
        self.seen: list[Any] = []
        self.threads: set[str] = set()
        self.overlaps = 0
        self._inside = False
        self.started = threading.Event()
        self.stopped_on: str | None = None
        self.failures: list[BaseException | None] = []
        self._fail_start = fail_start

    def on_start(self) -> None:
        if self._fail_start:
            raise RuntimeError("cannot start")
        self.started.set()

    def on_stop(self) -> None:
        self.stopped_on = threading.current_thread().name

    def on_failure(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.failures.append(exc)

    def on_receive(self, message: Any) -> Any:
        if self._inside:
            self.overlaps += 1
        self._inside = True
        try:
            self.threads.add(threading.current_thread().name)
            time.sleep(0)  # let another thread in, if one could run this actor at the same time
            if message == "boom":
                raise ValueError("boom")
            if message == "report":
                return (list(self.seen), self.overlaps)
            self.seen.append(message)
            return len(self.seen)
        finally:
            self._inside = False


def start(dispatcher: Dispatcher | None, **kwargs: Any) -> tuple[pykka.ActorRef[Any], Recorder]:
    ref = Recorder.start(dispatcher, **kwargs)
    assert Recorder.last is not None
    return ref, Recorder.last


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    pool = Dispatcher(2, throughput=4, name="test")
    try:
        yield pool
    finally:
        pykka.ActorRegistry.stop_all()
        pool.close(timeout=10)


def test_each_actor_handles_its_messages_one_at_a_time_in_each_senders_order(
    dispatcher: Dispatcher,
) -> None:
    refs = [Recorder.start(dispatcher) for _ in range(20)]
    senders = []
    for number in range(4):

        def send(sender: int = number) -> None:
            for i in range(500):
                for ref in refs:
                    ref.tell((sender, i))

        senders.append(threading.Thread(target=send))
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join()

    for ref in refs:
        seen, overlaps = cast(tuple[list[tuple[int, int]], int], ref.ask("report", timeout=30))
        assert overlaps == 0
        assert len(seen) == 4 * 500
        for sender in range(4):
            assert [i for s, i in seen if s == sender] == list(range(500))
    # 20 actors ran on the dispatcher's two threads, not on 20 of their own.
    names = set().union(*(ref.proxy().threads.get(timeout=30) for ref in refs))
    assert names <= {"test-dispatch-0", "test-dispatch-1"}


def test_a_busy_actor_yields_its_thread_after_throughput_messages() -> None:
    pool = Dispatcher(1, throughput=4, name="fair")
    release = threading.Event()
    order: list[str] = []

    class Busy(PooledActor):
        def on_receive(self, message: Any) -> Any:
            if message == "gate":
                release.wait(30)
            order.append(str(message))

    try:
        busy = Busy.start(dispatcher=pool)
        other = Busy.start(dispatcher=pool)
        busy.tell("gate")  # holds the only thread until the backlog below is queued
        for i in range(20):
            busy.tell(f"busy{i}")
        other.tell("other")
        release.set()
        assert other.ask("done", timeout=30) is None
        busy.ask("done", timeout=30)
        # The other actor ran after at most one turn (4 messages) of the busy one's backlog.
        assert order.index("other") <= 1 + 4
        assert [m for m in order if m.startswith("busy")] == [f"busy{i}" for i in range(20)]
    finally:
        pykka.ActorRegistry.stop_all()
        pool.close(timeout=10)


def test_a_failing_tell_stops_the_actor_after_on_failure_and_later_asks_fail_at_once(
    dispatcher: Dispatcher,
) -> None:
    ref, actor = start(dispatcher)
    ref.tell("before")
    ref.tell("boom")
    ref.tell("lost")  # queued behind the failure: never handled, like pykka's threads
    assert actor.actor_stopped.wait(30)
    assert [type(e) for e in actor.failures] == [ValueError]
    assert actor.seen == ["before"]
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("after", timeout=30)
    # An ask that raced the stop (put straight into the closed inbox) is answered too.
    future = pykka.ThreadingFuture[Any]()
    from pykka._envelope import Envelope

    actor.actor_inbox.put(Envelope("late", reply_to=future))
    with pytest.raises(pykka.ActorDeadError):
        future.get(timeout=30)


def test_a_failing_ask_answers_the_caller_and_the_actor_lives(dispatcher: Dispatcher) -> None:
    ref = Recorder.start(dispatcher)
    with pytest.raises(ValueError, match="boom"):
        ref.ask("boom", timeout=30)
    assert ref.ask("still here", timeout=30) == 1
    assert ref.is_alive()


def test_a_failing_on_start_stops_the_actor_and_its_asks_fail(dispatcher: Dispatcher) -> None:
    ref, actor = start(dispatcher, fail_start=True)
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("hello", timeout=30)
    assert not ref.is_alive()
    assert actor.failures == []  # pykka: on_start failing skips on_failure
    assert dispatcher.live == 0


def test_stop_runs_on_stop_on_a_dispatcher_thread_and_close_waits_for_it(
    dispatcher: Dispatcher,
) -> None:
    started = [start(dispatcher) for _ in range(50)]
    for ref, _ in started:
        ref.tell("x")
        ref.stop(block=False)
    assert dispatcher.close(timeout=30) is True
    assert dispatcher.live == 0
    for _, actor in started:
        assert actor.seen == ["x"]
        assert actor.stopped_on is not None
        assert actor.stopped_on.startswith("test-dispatch-")
    with pytest.raises(RuntimeError, match="closed"):
        Recorder.start(dispatcher)


def test_close_reports_actors_that_did_not_stop_in_time() -> None:
    pool = Dispatcher(1, name="slow")
    ref = Recorder.start(pool)
    assert ref.ask("x", timeout=30) == 1
    ref.tell("queued")
    assert pool.close(timeout=0.05) is False  # nobody asked it to stop
    # Stopped where it stood: nothing can wait on it forever.
    assert not ref.is_alive()
    assert ref.stop(block=True, timeout=30) is False
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("x", timeout=30)


def test_without_a_dispatcher_the_actor_has_a_thread_of_its_own() -> None:
    refs = [Recorder.start(None) for _ in range(3)]
    try:
        for ref in refs:
            assert ref.ask("x", timeout=30) == 1
        names = [ref.proxy().threads.get(timeout=30) for ref in refs]
        assert len(set().union(*names)) == 3
        with pytest.raises(ValueError, match="boom"):
            refs[0].ask("boom", timeout=30)
    finally:
        for ref in refs:
            ref.stop()


def test_a_dispatcher_needs_a_thread_and_a_positive_throughput() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        Dispatcher(0)
    with pytest.raises(ValueError, match="throughput"):
        Dispatcher(1, throughput=0)


def test_ready_counts_the_actors_waiting_for_a_thread() -> None:
    pool = Dispatcher(1, name="ready")
    release, inside = threading.Event(), threading.Event()

    class Gate(PooledActor):
        def on_receive(self, message: Any) -> Any:
            if message == "hold":
                inside.set()
                release.wait(30)
            return message

    try:
        holder = Gate.start(dispatcher=pool)
        holder.tell("hold")
        assert inside.wait(30)  # the only thread is inside this actor now
        others = [Gate.start(dispatcher=pool) for _ in range(5)]
        for ref in others:
            ref.tell("x")
        # Each of the five (started and told while the thread is held) is queued once.
        assert pool.ready == 5
        release.set()
        for ref in others:
            assert ref.ask("y", timeout=30) == "y"
        assert pool.ready == 0
    finally:
        release.set()
        pykka.ActorRegistry.stop_all()
        pool.close(timeout=10)
