"""The fill feed: at-least-once delivery, re-delivered duplicates, subscribers, draining."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from exchange import PartialFill, SimulatedExchange, Trade, trade_to_fill
from tests.exchange.conftest import D


def _busy_exchange(
    make_exchange: Callable[..., SimulatedExchange], **overrides: Any
) -> SimulatedExchange:
    ex = make_exchange(partial_fill=PartialFill(), seed=21, **overrides)
    for i in range(12):
        side = "buy" if i % 2 else "sell"
        ex.create_order("BTC/USDT", "limit", side, 50_000 + i, D("100"))
    return ex


def test_duplicates_are_redelivered_later_while_the_record_stays_unique(make_exchange):
    ex = _busy_exchange(make_exchange, duplicate_rate=D("0.5"))
    pushed: list[Trade] = []
    ex.subscribe(pushed.append)
    batches = []
    for _ in range(40):
        ex.advance(D("100"))
        batches.append(ex.drain_fills())
    drained = [t for batch in batches for t in batch]

    record = ex.fetch_my_trades()
    record_ids = [t["id"] for t in record]
    assert len(record_ids) == len(set(record_ids))  # the record never repeats a trade
    counts = Counter(t["id"] for t in drained)
    assert set(counts) == set(record_ids)  # every trade delivered at least once
    duplicated = [i for i, n in counts.items() if n == 2]
    assert duplicated  # and some twice (rate 0.5, seed 21)
    assert max(counts.values()) == 2
    by_id = {t["id"]: t for t in record}
    assert all(t == by_id[t["id"]] for t in drained)  # a duplicate is an identical copy
    # A duplicate arrives in a later batch than the original: dedupe must outlive a batch.
    for trade_id in duplicated:
        where = [n for n, batch in enumerate(batches) for t in batch if t["id"] == trade_id]
        assert where[0] < where[1]
    assert pushed == drained  # subscribers and the poller see the same sequence


def test_without_duplicate_rate_each_trade_is_delivered_once(make_exchange):
    ex = _busy_exchange(make_exchange)
    for _ in range(40):
        ex.advance(D("100"))
    drained = ex.drain_fills()
    assert [t["id"] for t in drained] == [t["id"] for t in ex.fetch_my_trades()]
    assert ex.drain_fills() == []


def test_a_redelivered_trade_gives_an_equal_fill(make_exchange):
    ex = _busy_exchange(make_exchange, duplicate_rate=D(1))
    ex.advance(D("100"))
    ex.advance(D("100"))
    drained = ex.drain_fills()
    first, again = [trade_to_fill(t) for t in drained if t["id"] == "T000001"]
    assert first == again
    assert first.message_id == "fill-T000001"


def test_a_subscriber_may_call_the_exchange_and_can_unsubscribe(make_exchange):
    ex = make_exchange()
    statuses = []

    def on_trade(trade: Trade) -> None:
        statuses.append(ex.fetch_order(trade["order"])["status"])  # re-entrant: no deadlock

    unsubscribe = ex.subscribe(on_trade)
    ex.create_order("BTC/USDT", "limit", "buy", 1_000, D("100"))
    ex.advance(D("100"))
    assert statuses == ["closed"]
    unsubscribe()
    unsubscribe()  # twice is harmless
    ex.create_order("BTC/USDT", "market", "buy", 1_000)
    assert statuses == ["closed"]
    assert len(ex.drain_fills()) == 2  # the poller is independent of subscribers
