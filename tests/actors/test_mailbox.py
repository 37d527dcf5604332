"""One profile is one mailbox: concurrent signals serialize; profiles run in parallel.

Seed 000 scenario 1 (concurrent BUYs on one profile never both reserve against the same
capital) and scenario 2 (two profiles' BUYs proceed at the same time), plus the deterministic
client order id that makes a re-sent signal harmless.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from decimal import Decimal

import pytest

from actors.events import EventSink
from exchange import Order, OrderType, SimulatedExchange
from messages import OrderAccepted, ReservationRejected, Side
from tests.actors.conftest import (
    ESTIMATE,
    MARKETS,
    PRICE,
    QTY,
    BlockingExchange,
    Recorder,
    cid,
    eventually,
    fill_until_closed,
    ledger_of,
    open_signal,
    position_spec,
    running,
    start_threads,
    stored_state,
)

#: For tests of profiles inside a (slow) exchange call at the same time: that needs two threads
#: or more; a single dispatcher thread runs one profile at a time, by design.
TWO_OR_MORE_THREADS = pytest.mark.parametrize(
    "dispatch_mode", [4, 0], ids=["pool4", "thread-per-profile"], indirect=True
)

# Every test here runs on each way of scheduling the profile actors.
pytestmark = pytest.mark.usefixtures("dispatch_mode")

THREADS = 16


@pytest.mark.parametrize("k", [0, 1, 5, 15, 16])
def test_concurrent_buys_on_one_profile_reserve_exactly_what_fits(
    k: int, exchange: SimulatedExchange, events: EventSink, recorder: Recorder
) -> None:
    # Capital for exactly k orders: one unit short of a (k+1)-th.
    allocated = k * ESTIMATE + ESTIMATE - 1
    spec = position_spec("p0", exchange=exchange, events=events, allocated=allocated)
    with running([spec], events=events) as runtime:
        errors = start_threads(
            THREADS, lambda i: runtime.submit(open_signal("p0", f"s{i}", position_id=f"pos{i}"))
        )
        assert errors == []
        runtime.drain()

        # The exchange's own record: exactly k of our orders, each for QTY at PRICE.
        mine = [o for o in exchange.fetch_open_orders() if o["clientOrderId"].startswith("cf-p0-")]
        assert len(mine) == k
        assert {(o["amount"], o["price"], o["side"]) for o in mine} <= {(QTY, PRICE, Side.BUY)}

        placed = {o["clientOrderId"] for o in mine}
        rejected = recorder.of(ReservationRejected, profile_id="p0")
        assert [r.reason for r in rejected] == ["insufficient_capital"] * (THREADS - k)
        assert {r.client_order_id for r in rejected}.isdisjoint(placed)
        assert {r.client_order_id for r in rejected} | placed == {
            cid("p0", f"s{i}") for i in range(THREADS)
        }
        assert {e.client_order_id for e in recorder.of(OrderAccepted)} == placed

        books = runtime.books()["p0"]
        assert books["reserved_for_orders"] == k * ESTIMATE
        assert books["available"] == ESTIMATE - 1
        assert books["pending_orders"] == k
        ledger = ledger_of(runtime, "p0")  # checks every invariant of the books
        assert set(ledger.orders) == placed
        exchange.check_invariants()


class GatedExchange(SimulatedExchange):
    """A slow exchange: ``create_order`` for a gated client order id waits on a barrier.

    Two profiles' orders share one barrier of 2: both calls get through only if both profiles'
    threads are inside ``create_order`` at the same time. A runtime that serialized profiles
    would leave the first caller alone at the barrier, which then breaks (after its timeout).
    """

    def __init__(self, gated: Sequence[str], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        barrier = threading.Barrier(len(gated), timeout=20)
        self._gates = dict.fromkeys(gated, barrier)
        self._lock_gates = threading.Lock()
        self.passed: list[str] = []

    def create_order(  # noqa: PLR0917 - ccxt's positional signature
        self,
        symbol: str,
        type: OrderType,
        side: Side | str,
        amount: int,
        price: Decimal | None = None,
        params: Mapping[str, object] | None = None,
    ) -> Order:
        client_id = (params or {}).get("clientOrderId")
        with self._lock_gates:
            gate = self._gates.pop(str(client_id), None)
        if gate is not None:
            gate.wait()  # raises BrokenBarrierError if the other profile never arrives
            with self._lock_gates:
                self.passed.append(str(client_id))
        return super().create_order(symbol, type, side, amount, price, params)


@TWO_OR_MORE_THREADS
def test_two_profiles_place_orders_at_the_same_time(events: EventSink, recorder: Recorder) -> None:
    cid_a, cid_b = cid("pa", "s1"), cid("pb", "s1")
    exchange = GatedExchange(
        [cid_a, cid_b],
        markets=MARKETS,
        balances={"USDT": 10**9},
        seed=3,
    )
    specs = [position_spec(p, exchange=exchange, events=events) for p in ("pa", "pb")]
    with running(specs, events=events) as runtime:
        runtime.submit(open_signal("pa", "s1", qty=QTY), open_signal("pb", "s1", qty=2 * QTY))
        runtime.drain()
        assert sorted(exchange.passed) == sorted([cid_a, cid_b])
        info = runtime.inspect()
        assert {p: v["incarnation"] for p, v in info["profiles"].items()} == {"pa": 1, "pb": 1}

        fills = fill_until_closed(exchange, runtime, [cid_a, cid_b], price=PRICE - 10)
        runtime.drain()

        # Each profile's books hold its own order and fills, and nothing of the other's.
        for pid, order_id, qty in (("pa", cid_a, QTY), ("pb", cid_b, 2 * QTY)):
            own = [f for f in fills if f.client_order_id == order_id]
            state = stored_state(runtime, pid)
            assert state["used_order_ids"] == [order_id]
            assert state["applied_trade_ids"] == sorted(f.trade_id for f in own)
            assert state["positions"] == [
                {
                    "position_id": "pos-s1",
                    "symbol": "BTC/USDT",
                    "qty": qty,
                    "cost": sum(f.cost for f in own),
                }
            ]
            assert state["reserved_for_orders"] == 0
            assert state["reserved_for_positions"] == sum(f.cost for f in own)
        assert recorder.of(ReservationRejected) == []


def test_resent_signal_is_refused_as_a_duplicate_and_never_reaches_the_exchange_twice(
    exchange: SimulatedExchange, events: EventSink, recorder: Recorder
) -> None:
    specs = [position_spec(p, exchange=exchange, events=events) for p in ("p0", "p1")]
    with running(specs, events=events) as runtime:
        signal = open_signal("p0", "sig-1")
        runtime.submit(signal, signal)  # twice in one batch
        runtime.submit(signal)  # and once more on its own
        runtime.drain()
        before = stored_state(runtime, "p0")

        runtime.crash_profile("p0")  # a replay from the checkpoint must not change that
        runtime.submit(signal)
        runtime.drain()
        assert runtime.inspect()["profiles"]["p0"]["incarnation"] == 2

        orders = [
            o for o in exchange.fetch_open_orders() if o["clientOrderId"] == cid("p0", "sig-1")
        ]
        assert len(orders) == 1
        assert [e.client_order_id for e in recorder.of(OrderAccepted, profile_id="p0")] == [
            cid("p0", "sig-1")
        ]
        rejected = recorder.of(ReservationRejected, profile_id="p0")
        assert [(r.reason, r.client_order_id, r.signal_id) for r in rejected] == [
            ("duplicate_order", cid("p0", "sig-1"), "sig-1")
        ] * 3
        assert stored_state(runtime, "p0") == before
        assert runtime.books()["p0"]["reserved_for_orders"] == ESTIMATE

        # The same signal id in another profile is another order (ids are per profile).
        runtime.submit(open_signal("p1", "sig-1"))
        runtime.drain()
        assert order_ids_of(exchange) == {cid("p0", "sig-1"), cid("p1", "sig-1")}


def order_ids_of(exchange: SimulatedExchange) -> set[str]:
    return {o["clientOrderId"] for o in exchange.fetch_open_orders()}


# One hung call holds one thread (a client that can hang belongs on dispatch_threads=0).
@TWO_OR_MORE_THREADS
def test_a_hung_exchange_call_holds_up_only_its_own_profile(
    events: EventSink, recorder: Recorder
) -> None:
    exchange = BlockingExchange(
        cid("stuck", "s1"), markets=MARKETS, balances={"USDT": 10**9}, seed=3
    )
    profiles = ("stuck", "a", "b")
    specs = [position_spec(p, exchange=exchange, events=events) for p in profiles]
    with running(specs, events=events) as runtime:
        runtime.drain()
        runtime.submit(open_signal("stuck", "s1"))
        assert exchange.entered.wait(30)  # its actor is inside the exchange call, hung

        runtime.submit(open_signal("a", "s1"), open_signal("b", "s1"))
        # The others place their orders while it hangs (no drain: it would wait for "stuck").
        eventually(
            lambda: (
                {cid("a", "s1"), cid("b", "s1")}
                <= {o["clientOrderId"] for o in exchange.fetch_open_orders()}
            ),
            what="the other profiles' orders",
        )
        exchange.release.set()
        runtime.drain()
        placed = {e.client_order_id for e in recorder.of(OrderAccepted)}
        assert placed == {cid(p, "s1") for p in profiles}
