"""Thread-safety smoke tests: many threads place, cancel and move the market at once."""

from __future__ import annotations

import random
import threading

from exchange import PartialFill, SimulatedExchange, Trade
from messages import InsufficientCapital
from tests.exchange.conftest import BTC_USDT, D

THREADS = 8
OPS = 150


def _run(workers: list[threading.Thread]) -> None:
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert not worker.is_alive(), "a worker is stuck"


def test_concurrent_placing_cancelling_and_matching_keeps_the_books_exact():
    ex = SimulatedExchange(
        [BTC_USDT],
        {"USDT": 50_000_00, "BTC": 5 * 10**8},
        maker_fee=D("0.001"),
        taker_fee=D("0.002"),
        partial_fill=PartialFill(),
        reject_rate=D("0.05"),
        duplicate_rate=D("0.1"),
        seed=1,
    )
    ex.advance(D("100"))
    pushed: list[Trade] = []
    ex.subscribe(pushed.append)
    start = threading.Barrier(THREADS + 1)
    created: list[list[str]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []

    def trader(n: int) -> None:
        rng = random.Random(n)
        start.wait()
        try:
            for i in range(OPS):
                side = rng.choice(["buy", "sell"])
                try:
                    if rng.random() < 0.1:
                        order = ex.create_order("BTC/USDT", "market", side, rng.randint(1, 10**6))
                    else:
                        price = D(rng.randint(9_500, 10_500)) / 100
                        amount = rng.randint(1, 5 * 10**6)
                        order = ex.create_order(
                            "BTC/USDT", "limit", side, amount, price, {"clientOrderId": f"t{n}-{i}"}
                        )
                except InsufficientCapital:
                    continue
                created[n].append(order["id"])
                if rng.random() < 0.4:
                    ex.cancel_order(rng.choice(created[n]))
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    def market() -> None:
        rng = random.Random(99)
        start.wait()
        try:
            for _ in range(OPS * 2):
                ex.advance(D(rng.randint(9_500, 10_500)) / 100)
        except BaseException as exc:
            errors.append(exc)

    _run(
        [threading.Thread(target=trader, args=(n,)) for n in range(THREADS)]
        + [threading.Thread(target=market)]
    )
    assert errors == []
    ex.check_invariants()

    ids = [order_id for per_thread in created for order_id in per_thread]
    assert len(ids) == len(set(ids)) > THREADS * OPS // 2
    assert all(ex.fetch_order(order_id)["id"] == order_id for order_id in ids)
    record = ex.fetch_my_trades()
    assert len(record) == len({t["id"] for t in record}) > 0
    assert {t["id"] for t in pushed} == {t["id"] for t in record}  # at least once each

    for order in ex.fetch_open_orders():
        ex.cancel_order(order["id"])
    balance, house, supply = ex.fetch_balance(), ex.house_balance(), ex.supply()
    assert balance["used"] == {"BTC": 0, "USDT": 0}
    assert all(balance["free"][a] + house[a] == supply[a] for a in supply)
    ex.check_invariants()


def test_a_client_order_id_sent_by_many_threads_at_once_makes_one_order():
    ex = SimulatedExchange([BTC_USDT], {"USDT": 10**6})
    start = threading.Barrier(THREADS)
    results: list[str] = []

    def send() -> None:
        start.wait()
        order = ex.create_order("BTC/USDT", "limit", "buy", 1_000, D("100"), {"clientOrderId": "x"})
        results.append(order["id"])

    _run([threading.Thread(target=send) for _ in range(THREADS)])
    assert results == ["O000001"] * THREADS
    assert len(ex.fetch_open_orders()) == 1
    assert ex.fetch_balance()["used"]["USDT"] == 1
