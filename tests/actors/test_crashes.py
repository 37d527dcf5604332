"""Crashes, redelivery and supervision: books stay exactly-once whatever dies when.

The reference for every comparison is one ledger applying the same messages once each, in order,
with no actors and no crashes (``reference_apply``); the runtime's books are compared with it
through the full ``to_state()`` of the profile's checkpoint.
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Collection, Sequence
from typing import Any, cast

import pykka
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accounting import PositionLedger
from actors.events import EventSink
from actors.profile import CrashNow
from actors.runtime import Runtime, exchange_order_key
from actors.supervisor import Inspect, RestartPolicy, Submit, Supervisor
from exchange import SimulatedExchange
from messages import (
    CrashProfile,
    DeadLettered,
    Fill,
    FillApplied,
    OpenPosition,
    OrderAccepted,
    ReservationRejected,
)
from persistence import MemoryStore
from tests.actors.conftest import (
    FAST_RESTARTS,
    PRICE,
    QTY,
    Recorder,
    cid,
    eventually,
    ledger_of,
    new_exchange,
    open_signal,
    position_spec,
    reference_apply,
    running,
    step,
    stored_state,
)

# Every test here runs on each way of scheduling the profile actors.
pytestmark = pytest.mark.usefixtures("dispatch_mode")

PROFILES = ("pa", "pb")
#: Fast restarts, and never FAILED however many crashes a drill injects.
NEVER_FAIL = RestartPolicy(backoff_base=0.001, backoff_max=0.005, max_restarts=1000)


def place_and_fill(
    exchange: SimulatedExchange, runtime: Runtime, *, orders: int, steps: int
) -> list[Fill]:
    """Each profile places ``orders`` entries; ``steps`` price steps fill parts of them.

    Profiles place theirs one after the other, so that the exchange's (seeded) fills are the
    same on every run. Returns the fills, not yet submitted, in feed order.
    """
    for p in PROFILES:
        runtime.submit(
            *(
                open_signal(p, f"e{n}", qty=(n + 1) * QTY, position_id=f"pos{n % 2}")
                for n in range(orders)
            )
        )
        runtime.drain()
    fills: list[Fill] = []
    for _ in range(steps):
        fills += step(exchange, PRICE - 1)
    return fills


def crash(pid: str) -> CrashNow:
    return CrashNow(profile_id=pid)


def play(runtime: Runtime, stream: Sequence[object], cuts: Collection[int]) -> dict[str, int]:
    """Submit ``stream`` in batches; a batch ends after the i-th item (from 1) for i in ``cuts``.

    A batch also ends at each crash, and the next batch waits until that crash has restarted
    the profile: so every crash lands on a running actor, wherever it sits in the stream (while
    the new incarnation may still be replaying its log). Returns the crashes per profile.
    """
    crashes = dict.fromkeys(PROFILES, 0)
    batch: list[object] = []
    for i, item in enumerate(stream, start=1):
        batch.append(item)
        if not isinstance(item, CrashNow) and i not in cuts and i < len(stream):
            continue
        if isinstance(item, CrashNow):
            pid = item.profile_id
            crashes[pid] += 1
            incarnation = 1 + crashes[pid]
            runtime.submit(*batch)
            eventually(
                functools.partial(is_live, runtime, pid, incarnation),
                what=f"restart {incarnation} of {pid}",
            )
        else:
            runtime.submit(*batch)
        batch = []
    return crashes


def is_live(runtime: Runtime, pid: str, incarnation: int) -> bool:
    info = runtime.inspect()["profiles"][pid]
    return (info["incarnation"], info["status"]) == (incarnation, "live")


def check_against_reference(
    runtime: Runtime, before: dict[str, dict[str, Any]], stream: Sequence[object]
) -> None:
    for pid in PROFILES:
        reference = PositionLedger.from_state(before[pid])
        for payload in stream:
            if isinstance(payload, CrashNow):
                continue
            owner = getattr(payload, "profile_id", None)
            if owner == pid or (owner is None and payload_cid(payload).startswith(f"cf-{pid}-")):
                reference_apply(reference, payload)
        assert stored_state(runtime, pid) == reference.to_state(), pid
        ledger_of(runtime, pid)  # and the books add up


def payload_cid(payload: object) -> str:
    value = getattr(payload, "client_order_id", "")
    return value if isinstance(value, str) else ""


def test_crashes_at_random_points_leave_books_as_if_applied_once_in_order(
    exchange: SimulatedExchange, events: EventSink
) -> None:
    specs = [position_spec(p, exchange=exchange, events=events) for p in PROFILES]
    with running(specs, events=events, policy=NEVER_FAIL) as runtime:
        fills = place_and_fill(exchange, runtime, orders=3, steps=4)
        before = {p: stored_state(runtime, p) for p in PROFILES}
        rng = random.Random(20240601)
        stream: list[object] = [crash("pa"), crash("pb")]  # both certainly crash once
        for n, fill in enumerate(fills):
            stream.append(fill)
            if rng.random() < 0.3:
                stream.append(crash(rng.choice(PROFILES)))
            if rng.random() < 0.2:
                stream.append(rng.choice(fills[: n + 1]))  # a redelivered trade
            if n % 5 == 0:  # new signals replay too: their order must not be placed twice
                pid = rng.choice(PROFILES)
                stream.append(open_signal(pid, f"late{n}", position_id=f"late{n}"))
        cuts = set(rng.sample(range(1, len(stream) + 1), k=len(stream) // 3))
        crashes = play(runtime, stream, cuts)
        runtime.drain()

        check_against_reference(runtime, before, stream)
        info = runtime.inspect()
        for pid in PROFILES:
            assert crashes[pid] >= 3, pid  # the seed above crashes each profile a few times
            assert info["profiles"][pid]["incarnation"] == 1 + crashes[pid], pid
            assert info["profiles"][pid]["restarts"] == crashes[pid], pid
            assert info["profiles"][pid]["status"] == "live", pid
        assert info["dead_letters"] == []
        # Each late signal reached the exchange once, however often it was replayed.
        late = [p for p in stream if isinstance(p, OpenPosition)]
        assert late
        placed = [o["clientOrderId"] for o in exchange.fetch_open_orders()]
        for signal in late:
            assert placed.count(cid(signal.profile_id, signal.signal_id)) == 1
        exchange.check_invariants()


def test_a_crash_lands_where_it_was_submitted(
    exchange: SimulatedExchange, events: EventSink
) -> None:
    appliers: list[tuple[str, threading.Thread]] = []  # (trade id, the actor thread applying it)
    events.subscribe(
        lambda e: (
            appliers.append((e.trade_id, threading.current_thread()))
            if isinstance(e, FillApplied)
            else None
        )
    )
    specs = [position_spec(p, exchange=exchange, events=events) for p in PROFILES]
    with running(specs, events=events) as runtime:
        runtime.submit(open_signal("pa", "a1", qty=4 * QTY))
        runtime.drain()
        first, second, *_ = step(exchange, PRICE - 1) + step(exchange, PRICE - 1)
        runtime.submit(first, crash("pa"), second)
        runtime.drain()

        # Events are published once, when the checkpoint covering them is durable: whether the
        # first incarnation made the first fill durable before dying or the second replayed it,
        # each fill's FillApplied appears exactly once, in order.
        assert [t for t, _ in appliers] == [first.trade_id, second.trade_id]
        assert runtime.inspect()["profiles"]["pa"]["incarnation"] == 2
        assert stored_state(runtime, "pa")["applied_trade_ids"] == sorted(
            [first.trade_id, second.trade_id]
        )


@settings(max_examples=6)
@given(
    data=st.data(),
    seed=st.integers(0, 2**16),
    steps=st.integers(1, 4),
)
def test_any_interleaving_of_fills_and_crashes_applies_each_fill_once(
    data: st.DataObject, seed: int, steps: int
) -> None:
    events = EventSink(keep=10)
    exchange = new_exchange(seed=seed)
    specs = [position_spec(p, exchange=exchange, events=events) for p in PROFILES]
    with running(specs, events=events, policy=NEVER_FAIL) as runtime:
        fills = place_and_fill(exchange, runtime, orders=2, steps=steps)
        before = {p: stored_state(runtime, p) for p in PROFILES}
        stream: list[object] = list(fills)
        stream += data.draw(st.lists(st.sampled_from(fills), max_size=4), label="redelivered")
        stream += data.draw(
            st.lists(st.sampled_from([crash(p) for p in PROFILES]), max_size=6), label="crashes"
        )
        stream = data.draw(st.permutations(stream), label="interleaving")
        cuts = data.draw(st.sets(st.integers(1, len(stream))), label="cuts")
        crashes = play(runtime, stream, cuts)
        runtime.drain()
        check_against_reference(runtime, before, stream)
        info = runtime.inspect()
        assert info["dead_letters"] == []
        for pid in PROFILES:
            assert info["profiles"][pid]["incarnation"] == 1 + crashes[pid], pid


def test_poison_message_is_dead_lettered_and_halts_its_profile_only(
    exchange: SimulatedExchange, events: EventSink, recorder: Recorder
) -> None:
    specs = [position_spec(p, exchange=exchange, events=events) for p in PROFILES]
    policy = FAST_RESTARTS
    with running(specs, events=events, policy=policy) as runtime:
        runtime.submit(open_signal("pa", "a1", qty=4 * QTY), open_signal("pb", "b1"))
        runtime.drain()
        before = {p: stored_state(runtime, p) for p in PROFILES}
        fills = step(exchange, PRICE - 1) + step(exchange, PRICE - 1)
        a_fills = [f for f in fills if f.client_order_id == cid("pa", "a1")]
        b_fills = [f for f in fills if f.client_order_id == cid("pb", "b1")]
        assert a_fills
        assert b_fills

        poison = CrashProfile(message_id="poison", ts_ns=1, profile_id="pa")
        behind = [*a_fills, open_signal("pa", "a2")]
        runtime.submit(poison, *behind, *b_fills)
        runtime.drain()

        info = runtime.inspect()
        (letter,) = info["dead_letters"]
        assert (letter.profile_id, letter.seq, letter.payload) == ("pa", 2, poison)
        assert letter.attempts == policy.max_attempts
        assert "InjectedCrash" in letter.error
        (event,) = recorder.of(DeadLettered)
        assert (event.profile_id, event.seq, event.payload_type, event.attempts) == (
            "pa",
            2,
            "CrashProfile",
            policy.max_attempts,
        )
        pa = info["profiles"]["pa"]
        assert pa["status"] == "live"
        assert pa["incarnation"] == 1 + policy.max_attempts
        assert pa["halted"] == f"dead letter seq 2: {letter.error}"
        assert runtime.books()["pa"]["halted"] is True

        # Behind the poison: each fill applied exactly once, the signal refused (halted).
        applied = recorder.of(FillApplied, profile_id="pa")
        assert [(e.trade_id, e.duplicate) for e in applied] == [
            (f.trade_id, False) for f in a_fills
        ]
        refused = recorder.of(ReservationRejected, profile_id="pa")
        assert [(r.signal_id, r.reason) for r in refused] == [("a2", "profile_halted")]
        reference = PositionLedger.from_state(before["pa"])
        reference.halt(pa["halted"])
        for payload in behind:
            reference_apply(reference, payload)
        assert stored_state(runtime, "pa") == reference.to_state()

        # Halted: new entries refused, fills still applied.
        more = [f for f in step(exchange, PRICE - 1) if f.client_order_id == cid("pa", "a1")]
        assert more
        runtime.submit(open_signal("pa", "a3"), *more)
        runtime.drain()
        refused = recorder.of(ReservationRejected, profile_id="pa")
        assert [(r.signal_id, r.reason) for r in refused][-1] == ("a3", "profile_halted")
        for payload in more:
            reference_apply(reference, payload)
        assert stored_state(runtime, "pa") == reference.to_state()
        assert [
            o["clientOrderId"] for o in exchange.fetch_open_orders() if "pa" in o["clientOrderId"]
        ] in (
            [],
            [cid("pa", "a1")],
        )

        # The other profile never noticed.
        reference_b = PositionLedger.from_state(before["pb"])
        for fill in b_fills:
            reference_apply(reference_b, fill)
        assert stored_state(runtime, "pb") == reference_b.to_state()
        assert info["profiles"]["pb"]["incarnation"] == 1
        assert info["profiles"]["pb"]["halted"] is None


def test_a_profile_that_keeps_crashing_fails_and_the_others_keep_working(
    exchange: SimulatedExchange, events: EventSink, recorder: Recorder
) -> None:
    specs = [position_spec(p, exchange=exchange, events=events) for p in PROFILES]
    policy = RestartPolicy(backoff_base=0.001, backoff_max=0.004, max_restarts=2, max_attempts=100)
    with running(specs, events=events, policy=policy) as runtime:
        runtime.submit(open_signal("pb", "b1"))
        runtime.drain()
        # Crashes with drains between, so each lands on a live actor: 1 start + 2 restarts.
        for _ in range(policy.max_restarts + 1):
            runtime.crash_profile("pa")
            runtime.drain()
        info = runtime.inspect()["profiles"]
        assert info["pa"]["status"] == "failed"
        assert info["pa"]["incarnation"] == 1 + policy.max_restarts
        assert "pa" not in runtime.books()

        runtime.submit(open_signal("pa", "a1"), open_signal("pb", "b2"))
        runtime.drain()
        info = runtime.inspect()["profiles"]
        assert info["pa"]["log"] == 1  # kept, not applied
        assert info["pb"]["status"] == "live"
        placed = {o["clientOrderId"] for o in exchange.fetch_open_orders()}
        assert placed == {cid("pb", "b1"), cid("pb", "b2")}
        assert [e.client_order_id for e in recorder.of(OrderAccepted, profile_id="pa")] == []
        assert runtime.books()["pb"]["pending_orders"] == 2


def test_a_poison_message_that_outlives_the_restart_budget_fails_the_profile(
    exchange: SimulatedExchange, events: EventSink
) -> None:
    specs = [position_spec(p, exchange=exchange, events=events) for p in PROFILES]
    policy = RestartPolicy(backoff_base=0.001, backoff_max=0.004, max_restarts=3, max_attempts=100)
    with running(specs, events=events, policy=policy) as runtime:
        runtime.submit(CrashProfile(message_id="poison", ts_ns=1, profile_id="pa"))
        runtime.submit(open_signal("pb", "b1"))
        runtime.drain()
        info = runtime.inspect()
        assert info["profiles"]["pa"]["status"] == "failed"
        assert info["profiles"]["pa"]["incarnation"] == 1 + policy.max_restarts
        assert info["dead_letters"] == []  # 4 attempts < max_attempts: never set aside
        assert info["profiles"]["pb"]["status"] == "live"
        assert runtime.books()["pb"]["pending_orders"] == 1


def test_backoff_doubles_from_its_base_up_to_its_cap() -> None:
    policy = RestartPolicy(backoff_base=0.01, backoff_max=0.05)
    assert [policy.delay(n) for n in range(5)] == [0.01, 0.02, 0.04, 0.05, 0.05]


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_restarts_older_than_the_window_do_not_count_towards_failure(
    exchange: SimulatedExchange, events: EventSink
) -> None:
    clock = ManualClock()
    policy = RestartPolicy(backoff_base=0.001, backoff_max=0.004, max_restarts=2, window=10.0)
    supervisor = Supervisor.start(
        profiles=[position_spec("pa", exchange=exchange, events=events)],
        store=MemoryStore(),
        order_key=exchange_order_key,
        policy=policy,
        clock=clock,
    )
    try:
        for incarnation, now in enumerate([0.0, 1.0, 20.0, 21.0], start=1):
            eventually(
                functools.partial(supervisor_shows, supervisor, incarnation, "live"),
                what=f"incarnation {incarnation} live",
            )
            clock.now = now
            supervisor.tell(Submit(payloads=(crash("pa"),)))
        # The restarts at 0 and 1 were forgotten by 20: still live after a 4th crash.
        eventually(functools.partial(supervisor_shows, supervisor, 5, "live"), what="incarnation 5")
        clock.now = 22.0  # but those at 20 and 21 use up the budget of 2
        supervisor.tell(Submit(payloads=(crash("pa"),)))
        eventually(functools.partial(supervisor_shows, supervisor, 5, "failed"), what="failure")
    finally:
        supervisor.stop()


def supervisor_shows(supervisor: pykka.ActorRef[Any], incarnation: int, status: str) -> bool:
    info = cast(dict[str, Any], supervisor.ask(Inspect()))["profiles"]["pa"]
    return bool(info["incarnation"] == incarnation and info["status"] == status)
