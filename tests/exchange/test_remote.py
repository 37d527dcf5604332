"""RemoteExchange against a real exchange server process: same results as in-process, exact
types, the same errors, the live feed's cursors, outages and restarts, many threads."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

from exchange import (
    Exchange,
    ExchangeServer,
    FillFeed,
    PartialFill,
    PriceDriver,
    RemoteExchange,
    SimulatedExchange,
    StepClock,
)
from messages import (
    DuplicateOrder,
    ExchangeUnavailable,
    InsufficientCapital,
    InvalidAmount,
    InvalidConfig,
    InvalidMessage,
    Side,
    UnknownOrder,
)
from tests.exchange.conftest import BTC_USDT, ETH_USDT, D

MARKETS = {"BTC/USDT": BTC_USDT, "ETH/USDT": ETH_USDT}
BALANCES = {"USDT": 20_000_000, "BTC": 10 * 10**8, "ETH": 50 * 10**8}
SETTINGS: dict[str, Any] = {
    "maker_fee": D("0.001"),
    "taker_fee": D("0.002"),
    "reject_rate": D("0.05"),
    "duplicate_rate": D("0.3"),
    "partial_fill": PartialFill(),
    "seed": 7,
}


def eventually(predicate: Callable[[], bool], *, what: str, timeout: float = 10.0) -> None:
    """Bounded polling: ``predicate()`` becomes true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped counts as exited)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def server_children() -> list[psutil.Process]:
    """Exchange server processes below this one that are still alive."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "exchange.server" in " ".join(child.cmdline()) and not gone(child.pid):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def assert_same(got: Any, want: Any, path: str = "$") -> None:
    """Equal, and of exactly the same types all the way down (int is not bool, Decimal is
    not str, Side is not str)."""
    assert type(got) is type(want), f"{path}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, dict):
        assert list(got) == list(want), f"{path}: keys {list(got)} != {list(want)}"
        for key in want:
            assert_same(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), f"{path}: {len(got)} items != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{path}[{i}]")
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


@pytest.fixture(autouse=True)
def _no_orphans() -> Iterator[None]:
    yield
    eventually(lambda: not server_children(), what="every exchange server to exit")


@pytest.fixture
def server() -> Iterator[ExchangeServer]:
    with ExchangeServer(MARKETS, BALANCES, clock=StepClock(), **SETTINGS) as srv:
        yield srv
    assert not srv.running


@pytest.fixture
def remote(server: ExchangeServer) -> Iterator[RemoteExchange]:
    with server.client() as client:
        yield client


# --- the same as in-process -------------------------------------------------------------


def _ops(rng: random.Random, count: int) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """A seeded mix of valid and invalid requests, with re-sent and clashing client ids."""
    prices = {"BTC/USDT": D(100), "ETH/USDT": D(20)}
    sent: list[tuple[Any, ...]] = []  # create_order args that carried a clientOrderId
    for n in range(count):
        symbol = rng.choice(list(MARKETS))
        near = prices[symbol] + Decimal(rng.randint(-300, 300)) / 100
        roll = rng.random()
        if roll < 0.30:
            side = rng.choice(["buy", "sell", Side.BUY])
            params = {"clientOrderId": f"c{n}"} if rng.random() < 0.7 else None
            args: tuple[Any, ...] = (symbol, "limit", side, rng.randint(1, 3 * 10**7), near, params)
            if params:
                sent.append(args)
            yield "create_order", args
        elif roll < 0.36:
            yield (
                "create_order",
                (symbol, "market", rng.choice(["buy", "sell"]), rng.randint(1, 10**6)),
            )
        elif roll < 0.42 and sent:
            args = rng.choice(sent)
            if rng.random() < 0.5:  # the same order re-sent, or a clash on its id
                args = (*args[:3], args[3] + 1, *args[4:])
            yield "create_order", args
        elif roll < 0.48:
            bad = rng.choice(
                [
                    (symbol, "limit", "buy", 0, near),
                    (symbol, "limit", "buy", 1.5, near),
                    (symbol, "limit", "buy", 10, 1.5),
                    (symbol, "limit", "buy", 10, D("-1")),
                    ("DOGE/USDT", "limit", "buy", 10, near),
                    (symbol, "stop", "buy", 10, near),
                    (symbol, "limit", "hold", 10, near),
                    (symbol, "limit", "buy", 10, near, {"clientOrderID": "typo"}),
                    (symbol, "limit", "buy", 10**14, near),
                ]
            )
            yield "create_order", bad
        elif roll < 0.58:
            yield "cancel_order", (rng.choice([f"O{rng.randint(1, n + 1):06d}", f"c{n - 3}"]),)
        elif roll < 0.63:
            yield "fetch_order", (rng.choice([f"O{rng.randint(1, n + 1):06d}", f"c{n - 5}"]),)
        elif roll < 0.80:
            prices[symbol] = max(D("0.01"), near)
            yield "advance", (prices[symbol], symbol)
        elif roll < 0.84:
            yield "fetch_balance", ()
        elif roll < 0.87:
            yield "fetch_open_orders", (rng.choice([None, symbol]),)
        elif roll < 0.91:
            since = rng.choice([None, 1_000_000_000 + rng.randint(0, 2 * n + 1)])
            yield "fetch_my_trades", (rng.choice([None, symbol]), since, rng.choice([None, 3]))
        elif roll < 0.97:
            yield "drain_fills", ()
        elif roll < 0.985:
            yield "set_available", (rng.random() < 0.6,)
        else:
            yield "check_invariants", ()
    yield "set_available", (True,)


def _outcome(target: Any, method: str, args: tuple[Any, ...]) -> tuple[str, Any]:
    try:
        return "ok", getattr(target, method)(*args)
    except Exception as exc:
        return type(exc).__name__, (type(exc), str(exc))


def test_a_seeded_session_gives_what_the_in_process_exchange_gives(remote):
    local = SimulatedExchange(MARKETS, BALANCES, clock=StepClock(), **SETTINGS)
    counts: dict[str, int] = {}
    for i, (method, args) in enumerate(_ops(random.Random(3), 600)):
        got = _outcome(remote, method, args)
        want = _outcome(local, method, args)
        assert_same(got, want, f"op {i} {method}{args}")
        counts[want[0]] = counts.get(want[0], 0) + 1
    assert_same(remote.to_state(), local.to_state())
    remote.check_invariants()
    # The session went through every kind of outcome, not only the easy ones.
    assert {"ok", "UnknownOrder", "InvalidMessage", "InvalidAmount", "DuplicateOrder"} <= set(
        counts
    )
    assert {"InsufficientCapital", "ExchangeUnavailable"} <= set(counts)
    trades = remote.fetch_my_trades()
    assert len(trades) > 20
    assert len({t["id"] for t in trades}) == len(trades)


def test_values_cross_with_their_exact_types(remote):
    order = remote.create_order(
        "BTC/USDT", "limit", "buy", 12_345_678, D("99.99"), {"clientOrderId": "x1"}
    )
    assert type(order["amount"]) is int
    assert type(order["price"]) is Decimal
    assert order["price"] == D("99.99")
    assert order["side"] is Side.BUY
    remote.advance(D("99.50"), "BTC/USDT")
    (trade, *_) = remote.fetch_my_trades()
    assert (type(trade["amount"]), type(trade["cost"]), type(trade["price"])) == (int, int, Decimal)
    assert type(trade["fee"]["cost"]) is int
    assert remote.price("BTC/USDT") == D("99.50")
    assert remote.load_markets() == MARKETS
    assert isinstance(remote, Exchange)
    assert isinstance(remote, FillFeed)


def test_a_server_started_from_a_state_holds_that_state():
    local = SimulatedExchange(MARKETS, BALANCES, clock=StepClock(), **SETTINGS)
    local.create_order("ETH/USDT", "limit", "sell", 10**8, D("21.5"), {"clientOrderId": "s1"})
    local.advance(D("22"), "ETH/USDT")
    with (
        ExchangeServer.from_state(local.to_state(), clock=StepClock()) as server,
        server.client() as remote,
    ):
        assert_same(remote.to_state(), local.to_state())
        assert_same(remote.fetch_my_trades(), local.fetch_my_trades())


# --- errors -------------------------------------------------------------------------------


def test_errors_are_the_same_types_with_the_same_messages_and_change_nothing(remote):
    remote.create_order("BTC/USDT", "limit", "buy", 10**6, D("100"), {"clientOrderId": "b1"})
    before = remote.to_state()
    with pytest.raises(UnknownOrder, match=r"^no order with id or clientOrderId 'nope'$"):
        remote.fetch_order("nope")
    with pytest.raises(
        InvalidAmount, match=r"^amount must be an int of minor units, got float 1.5$"
    ):
        remote.create_order("BTC/USDT", "limit", "buy", 1.5, D("100"))
    with pytest.raises(
        DuplicateOrder,
        match=r"^clientOrderId 'b1' is order O000001 \(\('BTC/USDT', 'limit', <Side.BUY: 'buy'>,"
        r" 1000000\), price 100\), not \('BTC/USDT', 'limit', <Side.BUY: 'buy'>, 2000000\)"
        r" price 100$",
    ):
        remote.create_order(
            "BTC/USDT", "limit", "buy", 2 * 10**6, D("100"), {"clientOrderId": "b1"}
        )
    with pytest.raises(
        InsufficientCapital,
        match=r"^limit buy 1000000000000 BTC/USDT needs 100000000 USDT, free is 19999900$",
    ):
        remote.create_order("BTC/USDT", "limit", "buy", 10**12, D("100"))
    with pytest.raises(
        InvalidMessage, match=r"^unknown symbol 'X/Y'; markets are \['BTC/USDT', 'ETH/USDT'\]$"
    ):
        remote.fetch_open_orders("X/Y")
    assert remote.to_state() == before

    remote.set_available(False)
    message = r"^the simulated exchange is unavailable \(simulated outage\)$"
    with pytest.raises(ExchangeUnavailable, match=message):
        remote.fetch_balance()
    with pytest.raises(ExchangeUnavailable, match=message):
        remote.drain_fills()
    remote.set_available(True)
    assert remote.to_state() == before

    with pytest.raises(NotImplementedError, match=r"^RemoteExchange has no push feed"):
        remote.subscribe(print)
    with pytest.raises(InvalidMessage, match=r"^unknown request 'shutdown'"):
        remote._call("shutdown")
    with pytest.raises(TypeError, match=r"takes 1 positional argument but 2 were given$"):
        remote._call("fetch_balance", "extra")  # a builtin error keeps its type and message


def test_configuration_errors_are_raised_in_the_caller():
    with pytest.raises(InvalidConfig, match=r"^a price driver needs a symbol: 2 markets"):
        ExchangeServer(MARKETS, BALANCES, drivers=[PriceDriver(prices=[D(1)])])
    with pytest.raises(InvalidConfig, match=r"^price driver for unknown market 'X/Y'$"):
        ExchangeServer(MARKETS, BALANCES, drivers=[PriceDriver(prices=[D(1)], symbol="X/Y")])
    with pytest.raises(InvalidConfig, match=r"^price driver rate must be a Decimal > 0"):
        PriceDriver(prices=[D(1)], rate=D(0))
    with pytest.raises(InvalidConfig, match=r"^price driver path: price must be"):
        PriceDriver(prices=[D(-1)])
    with pytest.raises(InvalidConfig, match=r"^the server configuration is not picklable"):
        ExchangeServer(MARKETS, BALANCES, clock=lambda: 1)
    with pytest.raises(InvalidConfig, match=r"^an exchange server listens on 127.0.0.1 only"):
        RemoteExchange(("0.0.0.0", 1), b"k")


def test_a_wrong_authkey_is_refused(server):
    intruder = RemoteExchange(server.endpoint.address, b"not the key")
    with pytest.raises(ExchangeUnavailable, match=r"authentication failed \(wrong authkey"):
        intruder.fetch_balance()
    intruder.close()


# --- outages of the server itself -----------------------------------------------------------


def test_server_down_is_exchange_unavailable_and_the_client_recovers_after_a_restart(server):
    remote = server.client()
    remote.create_order("BTC/USDT", "limit", "buy", 10**6, D("100"))
    (host, port), _ = server.endpoint
    old_pid = server.pid
    assert old_pid is not None
    server.kill()
    assert gone(old_pid)
    expected = rf"^exchange server 127.0.0.1:{port} unreachable: cannot connect \("
    with pytest.raises(ExchangeUnavailable, match=expected):
        remote.fetch_balance()

    server.start()  # a new exchange (the killed one's books are gone), on the same port if free
    if server.endpoint.address != (host, port):
        remote.reconnect(server.endpoint.address)
    assert remote.fetch_balance()["free"] == BALANCES  # the first call after the restart works
    assert remote.fetch_open_orders() == []
    remote.close()


def test_a_client_can_be_pointed_at_another_server(server):
    remote = server.client()
    remote.create_order("BTC/USDT", "limit", "buy", 10**6, D("100"))
    with ExchangeServer([BTC_USDT], {"USDT": 5}) as other:
        remote.reconnect(*other.endpoint)
        assert remote.fetch_balance()["total"] == {"BTC": 0, "USDT": 5}
    remote.reconnect(*server.endpoint)
    assert len(remote.fetch_open_orders()) == 1
    remote.close()
    with pytest.raises(ExchangeUnavailable, match=r"^this RemoteExchange is closed$"):
        remote.fetch_balance()


def test_no_reply_within_the_timeout_is_exchange_unavailable():
    with ExchangeServer([BTC_USDT], {"USDT": 5}, latency=D(2)) as server:
        impatient = server.client(timeout_s=0.05)
        with pytest.raises(ExchangeUnavailable, match=r"lost during fetch_balance\(\) \(Timeout"):
            impatient.fetch_balance()
        assert impatient.status()["clients"] >= 1  # the server itself answers at once
        impatient.close()


# --- the live feed ------------------------------------------------------------------------


def test_each_consumer_has_its_own_cursor_and_an_unacknowledged_batch_comes_again(server):
    feeder = server.client()
    feeder.create_order("BTC/USDT", "limit", "buy", 10**6, D("100"), {"clientOrderId": "f1"})
    feeder.advance(D("99"), "BTC/USDT")

    first = server.client(consumer="runtime")
    batch = first.drain_fills()
    assert batch
    assert {t["clientOrderId"] for t in batch} == {"f1"}
    # `first` dies before draining again: the batch was never acknowledged.
    again = server.client(consumer="runtime")
    assert again.drain_fills() == batch
    assert again.drain_fills() == []  # that drain acknowledged the batch
    feeder.advance(D("98"), "BTC/USDT")
    later = again.drain_fills()
    assert all(t["id"] not in {b["id"] for b in batch} or t in batch for t in later)
    # Another consumer sees everything from the start, independently.
    assert feeder.drain_fills(consumer="auditor") == batch + later
    status = feeder.status()
    assert set(status["consumers"]) == {"runtime", "auditor"}
    assert status["deliveries"] == len(batch + later)
    for client in (feeder, first, again):
        client.close()


def test_re_deliveries_reach_every_consumer(server):
    remote = server.client()
    for i in range(30):
        remote.create_order("BTC/USDT", "limit", "buy", 10**6, D("100"), {"clientOrderId": f"d{i}"})
    for price in ("99", "98", "97", "96", "95", "94", "93", "92"):
        remote.advance(D(price), "BTC/USDT")
    record = remote.fetch_my_trades()
    for consumer in ("a", "b"):
        delivered = remote.drain_fills(consumer=consumer)
        ids = [t["id"] for t in delivered]
        assert set(ids) == {t["id"] for t in record}  # every trade, at least once
        assert len(ids) > len(set(ids))  # duplicate_rate 0.3: some came twice
    assert len({t["id"] for t in record}) == len(record)  # the record never repeats
    remote.close()


# --- the price driver ---------------------------------------------------------------------


def test_the_driver_pauses_and_resumes():
    driver = PriceDriver.walk(5, D(100), 300, D("0.002"), rate=D(1000), paused=True)
    with ExchangeServer([BTC_USDT], BALANCES, drivers=[driver]) as server, server.client() as ex:
        assert ex.status()["drivers"][0]["steps"] == 0
        assert ex.price("BTC/USDT") is None
        ex.resume()
        eventually(lambda: ex.status()["drivers"][0]["steps"] > 10, what="steps")
        ex.pause()
        steps: list[int] = []

        def settled() -> bool:  # two reads in a row agree: the driver stands still
            steps.append(ex.status()["drivers"][0]["steps"])
            return len(steps) > 1 and steps[-1] == steps[-2]

        eventually(settled, what="the driver to stand still")
        assert ex.status()["drivers"][0]["paused"] is True
        assert steps[-1] < 300
        ex.resume()
        eventually(lambda: ex.status()["drivers"][0]["finished"], what="the path's end")
        status = ex.status()["drivers"][0]
        assert (status["steps"], status["error"]) == (300, None)
        assert ex.price("BTC/USDT") == driver.prices[-1]


# --- many threads ---------------------------------------------------------------------------


@pytest.mark.parametrize("max_connections", [1, 8])
def test_many_threads_share_one_client(server, max_connections):
    remote = server.client(max_connections=max_connections)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(20):
                cid = f"w{worker}-{i}"
                order = remote.create_order(
                    "BTC/USDT", "limit", "buy", 10**5, D("90"), {"clientOrderId": cid}
                )
                assert remote.fetch_order(cid)["id"] == order["id"]  # it may have filled since
                if i % 5 == 0:
                    remote.advance(D("89.5"), "BTC/USDT")
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
        assert not worker.is_alive()
    assert errors == []
    state = remote.to_state()
    assert len(state["book"]["orders"]) == 160
    assert remote.status()["clients"] <= max_connections
    remote.check_invariants()
    remote.close()
