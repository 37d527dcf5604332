"""The cross-profile cap: profiles on one account can never together reserve more than it holds."""

from __future__ import annotations

import pykka
import pytest

from actors.events import EventSink
from actors.runtime import Runtime, exchange_order_key
from actors.supervisor import Supervisor
from exchange import SimulatedExchange
from messages import InvalidConfig, OrderAccepted, OrderRejected, ReservationRejected
from persistence import MemoryStore
from tests.actors.conftest import (
    ESTIMATE,
    Recorder,
    new_exchange,
    open_signal,
    position_spec,
    start_threads,
)


def test_runtime_refuses_claims_beyond_the_account_balance(
    exchange: SimulatedExchange, events: EventSink
) -> None:
    specs = [
        position_spec(p, exchange=exchange, events=events, allocated=6_000_00) for p in ("a", "b")
    ]
    runtime = Runtime(specs, events=events, balances={"main": {"USDT": 10_000_00}})
    with pytest.raises(
        InvalidConfig, match=r"^profiles on account main claim 1200000 USDT but it holds 1000000$"
    ):
        runtime.start()
    assert pykka.ActorRegistry.get_all() == []  # nothing was started


def test_supervisor_refuses_claims_on_an_account_it_has_no_balance_for(
    exchange: SimulatedExchange, events: EventSink
) -> None:
    specs = [
        position_spec("a", exchange=exchange, events=events, allocated=100),
        position_spec("b", exchange=exchange, events=events, allocated=1, account_id="side"),
    ]
    with pytest.raises(
        InvalidConfig, match=r"^profiles on account side claim 1 USDT but it holds 0$"
    ):
        Supervisor.start(
            profiles=specs,
            store=MemoryStore(),
            order_key=exchange_order_key,
            balances={"main": {"USDT": 100}},
        )
    assert pykka.ActorRegistry.get_all() == []


def test_claims_that_fit_are_accepted_at_the_exact_balance(
    exchange: SimulatedExchange, events: EventSink
) -> None:
    specs = [position_spec(p, exchange=exchange, events=events, allocated=50) for p in "ab"]
    with Runtime(specs, events=events, balances={"main": {"USDT": 100}}) as runtime:
        runtime.drain()
        assert set(runtime.books()) == {"a", "b"}


PROFILES = ("p0", "p1", "p2", "p3")
BALANCE = 10_000_00  # the account's USDT, minor units
SHARE = BALANCE // len(PROFILES)  # each profile's claim: the claims add up to the balance


def test_profiles_reserving_all_they_can_at_once_stay_within_the_account(
    events: EventSink, recorder: Recorder
) -> None:
    exchange = new_exchange(balances={"USDT": BALANCE})
    specs = [position_spec(p, exchange=exchange, events=events, allocated=SHARE) for p in PROFILES]
    with Runtime(specs, events=events, balances={"main": {"USDT": BALANCE}}) as runtime:
        # 8 threads x 6 signals for each profile: far more than any profile can afford.
        def fire(thread: int) -> None:
            for n in range(6):
                runtime.submit(*(open_signal(p, f"t{thread}-{n}") for p in PROFILES))

        assert start_threads(8, fire) == []
        runtime.drain()

        books = runtime.books()
        fits = SHARE // ESTIMATE  # 8 orders of 30030 in 250000
        for pid in PROFILES:
            assert books[pid]["reserved_for_orders"] == fits * ESTIMATE, pid
            assert books[pid]["available"] < ESTIMATE, pid  # it reserved all it could
        total_reserved = sum(
            b["reserved_for_orders"] + b["reserved_for_positions"] for b in books.values()
        )
        assert total_reserved <= BALANCE

        # The exchange never had to refuse an order for want of funds, and what it locks for
        # our open orders is covered by (at most) what the profiles reserved for them.
        assert recorder.of(OrderRejected) == []
        assert len(recorder.of(OrderAccepted)) == fits * len(PROFILES)
        balance = exchange.fetch_balance()
        assert balance["used"]["USDT"] <= total_reserved <= balance["total"]["USDT"] == BALANCE
        assert len(exchange.fetch_open_orders()) == fits * len(PROFILES)
        rejected = recorder.of(ReservationRejected)
        assert {r.reason for r in rejected} == {"insufficient_capital"}
        assert len(rejected) == len(PROFILES) * (48 - fits)
        exchange.check_invariants()
