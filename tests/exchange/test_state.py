"""to_state/from_state: plain data, exact round trip, and a restored exchange behaves the same."""

from __future__ import annotations

import json

import msgpack
import pytest

from exchange import PartialFill, SimulatedExchange
from messages import CorruptSnapshot
from tests.exchange.conftest import D, ManualClock


def _exercise(ex: SimulatedExchange, clock: ManualClock, start: int) -> None:
    for i in range(start, start + 6):
        clock.now += 10
        side = "buy" if i % 2 else "sell"
        ex.create_order("BTC/USDT", "limit", side, 30_000 + i, D("100"), {"clientOrderId": f"c{i}"})
        ex.advance(D("100"))
    ex.create_order("BTC/USDT", "market", "sell", 1_000 + start)
    ex.cancel_order(f"c{start}")


@pytest.fixture
def busy(make_exchange, clock):
    ex = make_exchange(
        maker_fee=D("0.001"),
        taker_fee=D("0.002"),
        reject_rate=D("0.2"),
        duplicate_rate=D("0.3"),
        partial_fill=PartialFill(low=D("0.1"), high=D("0.4")),
        seed=99,
    )
    _exercise(ex, clock, 0)
    ex.drain_fills()
    ex.advance(D("100"))  # leaves undrained deliveries and scheduled duplicates in the state
    return ex


def test_state_round_trips_through_json_and_msgpack(busy, clock):
    state = busy.to_state()
    assert state["feed"]
    assert state["book"]["orders"]
    for decoded in (
        json.loads(json.dumps(state)),
        msgpack.unpackb(msgpack.packb(state), strict_map_key=False),
    ):
        restored = SimulatedExchange.from_state(decoded, clock=clock)
        assert restored.to_state() == state
        assert restored.fetch_balance() == busy.fetch_balance()
        assert restored.fetch_my_trades() == busy.fetch_my_trades()
        assert restored.fetch_open_orders() == busy.fetch_open_orders()


def test_a_restored_exchange_continues_exactly_like_the_original(busy, clock):
    twin_clock = ManualClock(clock.now)
    restored = SimulatedExchange.from_state(
        json.loads(json.dumps(busy.to_state())), clock=twin_clock
    )
    for ex, its_clock in ((busy, clock), (restored, twin_clock)):
        _exercise(ex, its_clock, 10)
        for price in ("99", "101", "100"):
            ex.advance(D(price))
    assert restored.to_state() == busy.to_state()
    assert restored.drain_fills() == busy.drain_fills()
    restored.check_invariants()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda s: s.update(version=2), "state version 2"),
        (lambda s: s.pop("settings"), "settings"),
        (lambda s: s["book"]["free"].update(USDT=s["book"]["free"]["USDT"] + 1), "does not add up"),
        (
            lambda s: s["book"]["orders"][-1].update(lock=s["book"]["orders"][-1]["lock"] + 1),
            "locks",
        ),
        (lambda s: s["book"]["trades"][0].update(amount=1.5), "amount"),
        (lambda s: s["book"].update(next_trade=1), "not below the next id"),
        (lambda s: s["feed"].append("T999999"), "T999999"),
        (lambda s: s["settings"].update(maker_fee="2"), "maker_fee"),
    ],
)
def test_a_corrupt_state_is_refused(busy, tamper, message):
    state = json.loads(json.dumps(busy.to_state()))
    tamper(state)
    with pytest.raises(CorruptSnapshot, match=message):
        SimulatedExchange.from_state(state)
