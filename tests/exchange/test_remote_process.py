"""The exchange server outlives its clients (SIGKILL included) and never outlives its parent.

Clients here are real child processes killed with SIGKILL at arbitrary points.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from exchange import ExchangeServer, PartialFill, PriceDriver, RemoteExchange
from tests.exchange.conftest import BTC_USDT, D
from tests.exchange.test_remote import eventually, gone, server_children

ROOT = Path(__file__).resolve().parents[2]
BALANCES = {"USDT": 10_000_000, "BTC": 10 * 10**8}

PLACER = """
import sys
from decimal import Decimal
from exchange import RemoteExchange
ex = RemoteExchange(("127.0.0.1", int(sys.argv[1])), bytes.fromhex(sys.argv[2]))
for i in range(int(sys.argv[3])):
    cid = f"cf-{i}"
    ex.create_order("BTC/USDT", "limit", "buy", 10**6 + i, Decimal(95 + i), {"clientOrderId": cid})
    print(cid, flush=True)
sys.stdin.read()  # until killed
"""

CONSUMER = """
import json, sys, time
from decimal import Decimal
from exchange import RemoteExchange
ex = RemoteExchange(("127.0.0.1", int(sys.argv[1])), bytes.fromhex(sys.argv[2]), consumer="runtime")
for i, price in enumerate(("99", "98", "97", "96", "95", "94")):
    ex.create_order("BTC/USDT", "limit", "buy", 10**7, Decimal(price), {"clientOrderId": f"r{i}"})
assert ex.drain_fills() == []
ex.resume()
batch = []
while not batch:  # bounded by the test's timeout
    batch = ex.drain_fills()
    time.sleep(0.002)
print(json.dumps([t["id"] for t in batch]), flush=True)
sys.stdin.read()  # until killed: the batch is never acknowledged
"""

OWNER = """
import sys
from exchange import ExchangeServer
from tests.exchange.conftest import BTC_USDT
server = ExchangeServer([BTC_USDT], {"USDT": 100})
server.start()
print(server.pid, flush=True)
sys.stdin.read()  # until killed, without stopping the server
"""

CLI_OWNER = """
import subprocess, sys
command = [sys.executable, "-m", "exchange.server", "--port", "0", "--seed", "1",
           "--markets", "BTC/USDT", "ETH/USDT:8:2", "--balance", "USDT=1000000",
           "--balance", "BTC=100000000", "--walk", "100:30:0.01", "--rate", "1000",
           "--print-address"]
server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
print(server.stdout.readline().decode().strip(), flush=True)
sys.stdin.read()  # until killed, without stopping the server
"""


@pytest.fixture(autouse=True)
def _no_orphans() -> Iterator[None]:
    yield
    eventually(lambda: not server_children(), what="every exchange server to exit")


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``spawn(code, *args)``: a child Python process; any still running is killed at the end."""
    started: list[subprocess.Popen[str]] = []

    def run(code: str, *args: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            cwd=ROOT,
        )
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def read_line(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the child printed nothing in time"
    line = proc.stdout.readline()
    assert line, f"the child exited with status {proc.wait()}"
    return line.strip()


def sigkill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def test_client_order_ids_stay_idempotent_across_a_client_killed_mid_way(spawn):
    count = 40
    with ExchangeServer([BTC_USDT], BALANCES, partial_fill=PartialFill(), seed=3) as server:
        (_, port), key = server.endpoint
        placer = spawn(PLACER, port, key.hex(), count)
        placed = [read_line(placer) for _ in range(5)]
        sigkill(placer)  # somewhere in the middle of placing the 6th or a later order
        assert placed == [f"cf-{i}" for i in range(5)]

        remote = server.client(consumer="runtime")
        eventually(lambda: remote.status()["clients"] == 1, what="the dead client to go")
        remote.advance(D("96"), "BTC/USDT")  # the market moves on: some of them fill
        before = remote.to_state()
        record = remote.fetch_my_trades()
        on_server = {o["clientOrderId"]: o for o in before["book"]["orders"]}
        assert set(placed) <= set(on_server)
        assert record  # cf-1 and later buy at >= 96
        orders = {cid: remote.fetch_order(cid) for cid in on_server}

        # The restarted runtime re-sends every order of its write-ahead plan, same ids.
        for i in range(count):
            cid = f"cf-{i}"
            order = remote.create_order(
                "BTC/USDT", "limit", "buy", 10**6 + i, Decimal(95 + i), {"clientOrderId": cid}
            )
            if cid in orders:
                assert order == orders[cid]  # the existing order, as it was
        after = remote.to_state()
        cids = [o["clientOrderId"] for o in after["book"]["orders"]]
        assert sorted(cids) == sorted(f"cf-{i}" for i in range(count))  # each exactly once
        assert remote.fetch_my_trades() == record  # the authoritative record is unchanged
        assert after["book"]["orders"][: len(on_server)] == before["book"]["orders"]
        remote.check_invariants()
        remote.close()


def test_the_driver_fills_while_no_client_is_connected_and_a_new_consumer_gets_them(spawn):
    path = [D("100")] * 40 + [D(100) - Decimal(i) / 10 for i in range(100)]
    driver = PriceDriver(prices=path, rate=D(250), paused=True)
    with ExchangeServer(
        [BTC_USDT], BALANCES, partial_fill=PartialFill(), duplicate_rate=D("0.2"), drivers=[driver]
    ) as server:
        (_, port), key = server.endpoint
        runtime = spawn(CONSUMER, port, key.hex())
        unacknowledged = json.loads(read_line(runtime))
        sigkill(runtime)  # it drained a batch and died before it could apply it

        def finished() -> bool:  # short connections: most steps happen with nobody connected
            with server.client() as probe:
                return probe.status()["drivers"][0]["finished"]

        eventually(finished, what="the driver to reach the end of its path")
        with server.client(consumer="runtime") as restarted:
            status = restarted.status()
            assert status["unattended_trades"] > 0  # fills happened with no client at all
            assert status["drivers"][0]["steps"] == len(path)
            record = restarted.fetch_my_trades()
            delivered = restarted.drain_fills()

        by_id = {t["id"]: t for t in record}
        assert len(by_id) == len(record)  # the record has each trade exactly once
        ids = [t["id"] for t in delivered]
        assert set(ids) == set(by_id)  # the feed has each of them at least once
        assert ids[: len(unacknowledged)] == unacknowledged  # the dead client's batch, again
        assert all(t == by_id[t["id"]] for t in delivered)
        assert {t["clientOrderId"] for t in record} == {f"r{i}" for i in range(6)}


def test_the_server_stops_when_the_script_that_owns_it_is_killed(spawn):
    owner = spawn(OWNER)
    pid = int(read_line(owner))
    assert not gone(pid)
    sigkill(owner)  # no stop(): the server's lifeline pipe breaks
    eventually(lambda: gone(pid), what="the orphaned server to exit")


def test_the_command_line_server_prints_its_address_and_stops_with_its_parent(spawn):
    owner = spawn(CLI_OWNER)
    ready = json.loads(read_line(owner))
    assert ready["host"] == "127.0.0.1"
    with RemoteExchange((ready["host"], ready["port"]), bytes.fromhex(ready["authkey"])) as ex:
        assert ex.fetch_balance()["total"] == {"BTC": 100_000_000, "ETH": 0, "USDT": 1_000_000}
        assert sorted(ex.load_markets()) == ["BTC/USDT", "ETH/USDT"]
        eventually(lambda: ex.status()["drivers"][0]["finished"], what="the --walk driver")
        assert ex.status()["drivers"][0]["steps"] == 30
        assert ex.status()["pid"] == ready["pid"]
    sigkill(owner)  # the server watches its parent's pid
    eventually(lambda: gone(ready["pid"]), what="the orphaned server to exit")
