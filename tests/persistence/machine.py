"""Stateful property test: random ingest / apply / crash / takeover / zombie schedules.

The real store and the trivial model (``worker.Model``) run side by side; after every step what
the store has committed must be a prefix of the model's exact history for every profile, and
after a final drain it must be all of it, with nothing left pending.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from messages import StaleFence
from tests.persistence.backends import Backend, profiles_in
from tests.persistence.worker import CRASH_POINTS, Crash, Model, Worker, committed, ingest

P = 2


class ExactlyOnceMachine(RuleBasedStateMachine):
    make_backend: Callable[[], Backend]  # set by run_machine on a subclass

    def __init__(self) -> None:
        super().__init__()
        self.backend = self.make_backend()
        self.store = self.backend.open()
        self.profiles = profiles_in(self.store.layout, P, 3)
        self.model = Model()
        self.worker: Worker | None = None
        self.holder: str | None = None  # of the newest incarnation
        self.zombies: list[Worker] = []  # superseded incarnations that might still run

    def _incarnation(self, holder: str) -> Worker:
        if self.worker is None:
            if self.holder is not None and holder != self.holder:
                self.backend.expire_lease(P)  # the dead holder's TTL ran out
            self.store = self.backend.open()  # a new process
            self.worker = Worker(self.store, P, holder, f"c-{holder}")
            self.holder = holder
        return self.worker

    def _applied(self) -> dict[str, list[str]]:
        return committed(self.backend.open(), self.profiles)

    @rule(trades=st.lists(st.integers(0, 25), max_size=6))
    def ingest(self, trades: list[int]) -> None:
        # a trade id always belongs to the same profile; repeats are exchange re-sends
        fills = [(self.profiles[t % 3], f"tr{t}") for t in trades]
        ingest(self.store, fills)
        self.model.ingest(fills)

    @rule(
        count=st.integers(1, 4),
        crash=st.sampled_from([None, *CRASH_POINTS]),
        holder=st.sampled_from(["w1", "w2"]),
    )
    def step(self, count: int, crash: str | None, holder: str) -> None:
        worker = self._incarnation(holder)
        try:
            worker.step(count, crash)  # type: ignore[arg-type]
        except Crash:
            self.zombies.append(worker)
            self.worker = None

    @precondition(lambda self: self.worker is not None)
    @rule()
    def pause_and_lose_the_lease(self) -> None:
        """The worker stalls (GC pause, partition) past its TTL; a successor will take over."""
        assert self.worker is not None
        self.backend.expire_lease(P)
        self.zombies.append(self.worker)
        self.worker = None
        self.holder = None

    @precondition(lambda self: self.zombies and self.worker is not None)
    @rule(data=st.data())
    def zombie_commits(self, data: st.DataObject) -> None:
        zombie = data.draw(st.sampled_from(self.zombies))
        before = self._applied()
        forged = {self.profiles[0]: (["forged"], "99999999999999-0")}
        try:
            zombie.commit(forged, [])
        except StaleFence:
            pass
        else:
            raise AssertionError(f"a superseded fence {zombie.fence} could still commit")
        assert self._applied() == before

    @invariant()
    def committed_history_is_a_prefix_of_the_exact_one(self) -> None:
        for pid, applied in self._applied().items():
            assert applied == self.model.applied[pid][: len(applied)], pid

    def teardown(self) -> None:
        try:
            self._incarnation(self.holder or "w1").drain()
            assert self._applied() == self.model.applied
            assert self.backend.open().pending_count(P) == 0
        finally:
            self.backend.close()


def run_machine(make_backend: Callable[[], Backend], max_examples: int | None = None) -> None:
    """Run the machine on a backend, with the session's Hypothesis profile."""
    machine = type(
        "ExactlyOnce", (ExactlyOnceMachine,), {"make_backend": staticmethod(make_backend)}
    )
    profile = settings()  # the loaded profile (tests/conftest.py)
    run_state_machine_as_test(
        machine,
        settings=settings(
            profile,
            stateful_step_count=25,
            max_examples=profile.max_examples if max_examples is None else max_examples,
        ),
    )
