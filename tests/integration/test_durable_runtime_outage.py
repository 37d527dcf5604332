"""Durable mode when the store goes away, and when another runtime takes the partitions over."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pykka
import pytest

from accounting import PositionLedger
from actors.runtime import Runtime
from actors.supervisor import RestartPolicy, Status, Supervisor
from messages import StaleFence, StoreUnavailable
from persistence import JournalStore, RedisStore
from tests.actors.conftest import eventually
from tests.actors.test_durable_world import (
    PROFILES,
    SCRIPT,
    AppliedFills,
    Runtimes,
    check_against_exchange,
    durable_runtime,
    new_exchange,
    open_signal,
    reference,
    run_phase,
    run_script,
    states,
)
from tests.integration.conftest import ServerFactory
from tests.persistence.backends import PARTITIONS, RedisBackend

pytestmark = pytest.mark.integration

#: SCRIPT[FIRST_CLOSE] is the first signal phase after the opening ones (s1 closes pos-a).
FIRST_CLOSE = next(i for i, p in enumerate(SCRIPT) if i > 1 and p.signals)


@pytest.fixture
def runtimes() -> Iterator[Runtimes]:
    started = Runtimes()
    yield started
    started.stop_all()


@pytest.mark.parametrize(
    ("lease_ttl_ms", "down_s"),
    [
        # The lease outlives the outage: renewed every 5 s, it has at least 10 s left when the
        # server dies.
        pytest.param(15_000, 0.0, id="shorter-than-the-lease"),
        # The lease lapses while the server is down; nobody takes it, so the runtime holds it
        # again (same fencing token) instead of stopping as if it had been taken over.
        pytest.param(1_000, 2.5, id="longer-than-the-lease"),
    ],
)
def test_while_redis_is_down_signals_are_refused_and_afterwards_the_runtime_resumes_by_itself(
    fresh_redis: ServerFactory, runtimes: Runtimes, lease_ttl_ms: int, down_s: float
) -> None:
    server = fresh_redis()
    store = RedisStore(server.url, partitions=PARTITIONS)
    exchange = new_exchange()
    applied = AppliedFills()
    runtime = runtimes.start(
        durable_runtime(exchange, applied.sink(), store, lease_ttl_ms=lease_ttl_ms)
    )
    runtime.drain()
    run_script(runtime, exchange, SCRIPT[: FIRST_CLOSE - 1])
    run_phase(SCRIPT[FIRST_CLOSE - 1], runtime, exchange)  # a price step's fills, in flight
    server.kill()

    refused = SCRIPT[FIRST_CLOSE].signals
    with pytest.raises(StoreUnavailable, match=re.escape(server.url)):
        runtime.submit(*refused)
    eventually(lambda: not runtime.store_available, what="the runtime to see the store down")
    books = runtime.books()
    with pytest.raises(StoreUnavailable):
        runtime.submit(*refused)  # fail closed, for as long as it lasts
    assert runtime.books() == books  # nothing reserved, nothing corrupted
    info = runtime.inspect()["profiles"]
    assert {p["status"] for p in info.values()} == {Status.LIVE.value}
    assert all(o["clientOrderId"] != "cf-s1-c" for o in exchange.fetch_open_orders())

    time.sleep(down_s)  # not a timing assertion: the outage must outlast the lease
    server.restart()  # the AOF brings everything acknowledged back (an expired lease: gone)
    eventually(lambda: runtime.store_available, what="the runtime to see the store again")
    runtime.drain()  # the fills that were in flight are applied, their commits retried
    run_script(runtime, exchange, first=FIRST_CLOSE)  # the refused signals, submitted again

    assert runtime.fatal is None
    if down_s * 1000 > lease_ttl_ms:
        assert runtime.lease_revivals >= 1
    expected = reference()
    assert runtime.books() == expected.books
    assert states(store) == expected.states
    assert exchange.fetch_my_trades() == expected.trades
    check_against_exchange(states(store), exchange.fetch_my_trades())
    assert applied.twice() == []
    assert len(applied.counts) == expected.applied  # no stop: nothing lost, events included


def test_a_profile_that_crashes_while_redis_is_down_is_live_again_once_redis_is_back(
    fresh_redis: ServerFactory, runtimes: Runtimes, caplog: pytest.LogCaptureFixture
) -> None:
    server = fresh_redis()
    store = RedisStore(server.url, partitions=PARTITIONS)
    exchange = new_exchange()
    policy = RestartPolicy(backoff_base=0.001, backoff_max=0.005, max_restarts=1)
    runtime = runtimes.start(durable_runtime(exchange, AppliedFills().sink(), store, policy=policy))
    runtime.drain()
    run_script(runtime, exchange, SCRIPT[:FIRST_CLOSE])
    server.kill()
    runtime.crash_profile("s2")  # e.g. a bug; its next incarnation cannot load its snapshot

    def start_refused() -> bool:
        return any(
            "profile s2" in r.getMessage() and "StoreUnavailable" in r.getMessage()
            for r in caplog.records
        )

    eventually(start_refused, what="s2 to try to start while the store is down")
    server.restart()
    eventually(lambda: runtime.store_available, what="the runtime to see the store again")
    runtime.drain()
    assert runtime.inspect()["profiles"]["s2"]["status"] == Status.LIVE.value
    run_script(runtime, exchange, first=FIRST_CLOSE)
    assert runtime.books() == reference().books


@pytest.fixture
def backend(redis_url: str) -> Iterator[RedisBackend]:
    made = RedisBackend(redis_url)
    yield made
    made.close()


def take_over(backend: RedisBackend, runtimes: Runtimes) -> tuple[Runtime, Runtime, JournalStore]:
    """Runtime "a" runs the script's first phases; "b" takes over once a's lease is gone.

    Returns both runtimes ("a" already fenced out) and "b"'s store.
    """
    exchange = new_exchange()
    first = runtimes.start(
        durable_runtime(exchange, AppliedFills().sink(), backend.open(), holder="a")
    )
    first.drain()
    run_script(first, exchange, SCRIPT[:FIRST_CLOSE])

    second = durable_runtime(exchange, AppliedFills().sink(), backend.open(), holder="b")
    with pytest.raises(StaleFence, match=r"^partition \d+ is leased to 'a'"):
        second.start()
    assert len(pykka.ActorRegistry.get_by_class(Supervisor)) == 1  # nothing of it runs

    for partition in range(PARTITIONS):
        backend.expire_lease(partition)  # as if "a" had stalled past its TTL
    store = backend.open()
    second = runtimes.start(durable_runtime(exchange, AppliedFills().sink(), store, holder="b"))
    second.drain()
    fences = {pid: snap.fence for pid, snap in store.load_many(PROFILES).items()}

    # The first runtime's next commit (a restarted profile checkpoints at once) is refused.
    first.crash_profile("s1")
    eventually(lambda: first.fatal is not None, what="the first runtime to lose its lease")
    assert {pid: snap.fence for pid, snap in store.load_many(PROFILES).items()} == fences
    return first, second, store


def test_a_live_lease_keeps_a_second_runtime_out_and_a_takeover_fences_the_first_one_out(
    backend: RedisBackend, runtimes: Runtimes
) -> None:
    first, _, _ = take_over(backend, runtimes)

    assert isinstance(first.fatal, StaleFence)
    assert not first.store_available
    with pytest.raises(StaleFence, match=r"^this runtime lost its lease: "):
        first.submit(open_signal("s1", "late", "29000"))


def test_after_a_takeover_the_new_holder_applies_everything_submitted_to_it(
    backend: RedisBackend, runtimes: Runtimes
) -> None:
    _, second, store = take_over(backend, runtimes)
    late = [open_signal("s2", f"late{i}", "25000", qty=100_000) for i in range(16)]
    for signal in late:
        second.submit(signal)
    second.drain()

    orders = PositionLedger.from_state(states(store)["s2"]).orders
    assert sorted(c for c in orders if "-late" in c) == sorted(f"cf-s2-{s.signal_id}" for s in late)
