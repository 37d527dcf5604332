"""``kill -9`` of a durable runtime: a new one on the same store and exchange ends exactly right.

The runtime under test runs in a child process (this module, run with ``python -m``) against a
hosted exchange (``ExchangeServer``: it outlives the child) and a real store. The child kills
itself with SIGKILL at a chosen point — just before or just after a commit, right after the
exchange accepted an order — wherever its other threads are, so nothing is flushed and nothing
is stopped. The test then starts a new runtime on the same store and exchange, finishes the
script (redoing the phase the child was in, idempotently) and compares with a run that never
died, and with the exchange's own record. Each published fill event is recorded (by the child
line by line, as it happens), so the test can also tell that no event was published twice.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.events import EventSink
from capflow.run_setup import MARKET
from exchange import ExchangeServer, RemoteExchange, StepClock, Trade
from messages import FillApplied, Message
from persistence import JournalStore, RedisStore, SqliteStore
from tests.actors.test_durable_world import (
    EXCHANGE_SETTINGS,
    POSITIONS,
    SCRIPT,
    SEED,
    AppliedFills,
    Runtimes,
    account,
    check_against_exchange,
    check_orders,
    durable_runtime,
    reference,
    resume_phase,
    run_phase,
    states,
)
from tests.persistence.backends import PARTITIONS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FEED = "feed"  # the fill-feed consumer: its cursor lives in the exchange server


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Where the child dies: at the ``n``-th ``what`` ("commit" or "order": a call of the
    store's ``commit`` or of the exchange's ``create_order``), ``when`` ("before" or "after")
    the call. Counted from 1, over the whole run.

    ``replans``: the kill interrupts a grid's rebalance, and the restarted grid plans again
    from the exchange's record; its plan (earmarks, later sizes) may differ from the run
    without a kill, its accounting may not (see ``test_..._replans_exactly_as_before``).
    """

    what: str
    n: int
    when: str = "after"
    replans: bool = False


# -- the child -------------------------------------------------------------------------------------


def open_store(target: dict[str, str]) -> JournalStore:
    if "sqlite" in target:
        return SqliteStore(target["sqlite"], partitions=PARTITIONS)
    return RedisStore(target["redis"], prefix=target["prefix"], partitions=PARTITIONS)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def trap(obj: Any, method: str, plan: Plan) -> None:
    """Replace ``obj.method`` by one that dies at its ``plan.n``-th call."""
    original = getattr(obj, method)
    calls = itertools.count(1)
    lock = threading.Lock()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with lock:
            n = next(calls)
        if n == plan.n and plan.when == "before":
            die()
        result = original(*args, **kwargs)
        if n == plan.n:
            die()
        return result

    setattr(obj, method, wrapper)


def child(config: dict[str, Any]) -> None:
    plan = Plan(**config["plan"])
    log = os.open(config["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def record(item: dict[str, Any]) -> None:
        os.write(log, (json.dumps(item) + "\n").encode())  # one write: survives SIGKILL

    def on_event(event: Message) -> None:
        if isinstance(event, FillApplied) and not event.duplicate:
            record({"fill": [event.profile_id, event.trade_id]})

    host, port, key = config["exchange"]
    exchange = RemoteExchange((host, port), bytes.fromhex(key), consumer=FEED)
    store = open_store(config["store"])
    if plan.what == "commit":
        trap(store, "commit_many", plan)  # the committer's one call per batch
    if plan.what == "order":
        trap(exchange, "create_order", plan)
    events = EventSink(keep=10)
    events.subscribe(on_event)
    runtime = durable_runtime(exchange, events, store).start()
    runtime.drain()
    for i, phase in enumerate(SCRIPT):
        record({"begin": i})
        run_phase(phase, runtime, exchange)
        runtime.drain()
    record({"end": True})
    runtime.stop()


# -- the test --------------------------------------------------------------------------------------


Servers = Callable[[int], ExchangeServer]


@pytest.fixture
def exchange_server() -> Iterator[Servers]:
    servers: list[ExchangeServer] = []

    def start(seed: int = SEED) -> ExchangeServer:
        server = ExchangeServer(
            [MARKET], account(), clock=StepClock(), seed=seed, **EXCHANGE_SETTINGS
        )
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def runtimes() -> Iterator[Runtimes]:
    started = Runtimes()
    yield started
    started.stop_all()


def run_child(config: dict[str, Any], tmp_path: Path) -> tuple[int, AppliedFills]:
    """Run the child until it kills itself; the phase it had begun and the fills it published."""
    output = tmp_path / "child.out"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__, json.dumps(config)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            status = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert status == -signal.SIGKILL, f"child exited with {status}:\n{output.read_text()}"
    begun = -1
    published = AppliedFills()
    for line in Path(config["log"]).read_text().splitlines():
        item = json.loads(line)
        begun = item.get("begin", begun)
        if "fill" in item:
            published.counts[tuple(item["fill"])] += 1
    return begun, published


def essentials(trades: list[Trade]) -> list[tuple[Any, ...]]:
    return [(t["id"], t["clientOrderId"], t["side"], t["price"], t["amount"]) for t in trades]


# Commits and orders are counted over the whole run. A run of the script makes about 26
# commits (at least 13, however they are batched) and 17 orders: the grid's first six, then
# s1's two, s2's one, the closes (10th, 11th) and s2's second entry; the grid's rebalances from
# the 13th on.
PLANS = [
    pytest.param(Plan(what="commit", n=8, when="before"), id="before-a-commit"),
    pytest.param(Plan(what="commit", n=12, when="after"), id="after-a-commit"),
    pytest.param(Plan(what="order", n=13, replans=True), id="after-a-grid-order-was-accepted"),
]


def kill_and_recover(
    plan: Plan,
    store_target: dict[str, str],
    server: ExchangeServer,
    tmp_path: Path,
    runtimes: Runtimes,
    *,
    seed: int = SEED,
) -> None:
    (host, port), key = server.endpoint
    config = {
        "plan": dataclasses.asdict(plan),
        "exchange": [host, port, key.hex()],
        "store": store_target,
        "log": str(tmp_path / "events.jsonl"),
    }
    begun, published = run_child(config, tmp_path)

    exchange = RemoteExchange((host, port), key, consumer=FEED)
    store = open_store(store_target)
    applied = AppliedFills()
    runtime = runtimes.start(durable_runtime(exchange, applied.sink(), store))
    runtime.drain()
    for phase in SCRIPT[max(begun, 0) :]:
        resume_phase(phase, runtime, exchange)
        runtime.drain()

    books, final = runtime.books(), states(store)
    trades = exchange.fetch_my_trades()
    check_against_exchange(final, trades)  # every trade once, totals exact
    check_orders(final, exchange)  # and no order that the books do not know
    exchange.close()
    both: collections.Counter[tuple[str, str]] = published.counts + applied.counts
    assert sorted(k for k, n in both.items() if n > 1) == []  # no event ever twice
    expected = reference(seed)
    assert essentials(trades) == essentials(expected.trades)
    for pid in POSITIONS:
        assert books[pid] == expected.books[pid]
        assert final[pid] == expected.states[pid]
    if not plan.replans:
        assert books == expected.books
        assert final == expected.states


@pytest.mark.parametrize("plan", PLANS)
def test_a_runtime_killed_mid_run_is_recovered_exactly_by_the_next_one_on_redis(
    plan: Plan, redis_url: str, exchange_server: Servers, tmp_path: Path, runtimes: Runtimes
) -> None:
    target = {"redis": redis_url, "prefix": f"kill-{uuid.uuid4().hex[:8]}"}
    kill_and_recover(plan, target, exchange_server(SEED), tmp_path, runtimes)


def test_a_runtime_killed_after_the_exchange_took_its_order_is_recovered_exactly_on_sqlite(
    exchange_server: Servers, tmp_path: Path, runtimes: Runtimes
) -> None:
    target = {"sqlite": str(tmp_path / "capflow.db")}
    plan = Plan(what="order", n=10)  # s1's close, before any checkpoint knows of it
    kill_and_recover(plan, target, exchange_server(SEED), tmp_path, runtimes)


def test_a_grid_killed_mid_rebalance_replans_exactly_as_before(
    redis_url: str, exchange_server: Servers, tmp_path: Path, runtimes: Runtimes
) -> None:
    target = {"redis": redis_url, "prefix": f"kill-{uuid.uuid4().hex[:8]}"}
    plan = Plan(what="order", n=14)  # the second order of the grid's last rebalance (seed 1)
    kill_and_recover(plan, target, exchange_server(1), tmp_path, runtimes, seed=1)


if __name__ == "__main__":
    child(json.loads(sys.argv[1]))
