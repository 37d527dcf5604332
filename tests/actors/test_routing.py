"""Routing by the order-ownership index only, and messages queued through a held bootstrap."""

from __future__ import annotations

import dataclasses

import pytest

from accounting import PositionLedger
from actors.events import EventSink
from actors.runtime import Runtime
from actors.supervisor import CompleteBootstrap, HoldBootstrap
from exchange import SimulatedExchange
from messages import (
    FillApplied,
    FillRejected,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    UnknownProfile,
)
from tests.actors.conftest import (
    ESTIMATE,
    MARKETS,
    PRICE,
    QTY,
    BlockingExchange,
    Recorder,
    cid,
    fill_until_closed,
    ledger_of,
    open_signal,
    position_spec,
    reference_apply,
    running,
    step,
    stored_state,
)

# Every test here runs on each way of scheduling the profile actors.
pytestmark = pytest.mark.usefixtures("dispatch_mode")


def test_exchange_events_go_to_the_owner_of_their_client_order_id_only(
    exchange: SimulatedExchange, events: EventSink, recorder: Recorder
) -> None:
    specs = [position_spec(p, exchange=exchange, events=events) for p in ("pa", "pb")]
    with running(specs, events=events) as runtime:
        runtime.submit(*(open_signal("pa", s) for s in ("a1", "a2", "a3")), open_signal("pb", "b1"))
        runtime.drain()
        b_order = exchange.fetch_order(cid("pb", "b1"))
        before_b = stored_state(runtime, "pb")
        reference = ledger_of(runtime, "pa")

        # A real trade of pa's order a1, dressed up to look like pb's: pb's exchange order id,
        # a message id naming pb. Only the client order id decides where it goes.
        fills = step(exchange, PRICE - 1)
        disguised = [
            dataclasses.replace(f, order_id=b_order["id"], message_id=f"pb-{f.trade_id}")
            for f in fills
            if f.client_order_id == cid("pa", "a1")
        ]
        assert disguised
        # pa's order a2 canceled at the exchange, reported with pb's profile id on it.
        canceled = exchange.cancel_order(cid("pa", "a2"))
        cancel = OrderCanceled(
            message_id="cancel-a2",
            ts_ns=1,
            profile_id="pb",
            client_order_id=cid("pa", "a2"),
            exchange_order_id=canceled["id"],
            remaining=canceled["remaining"],
        )
        # The exchange's ack of a1 and a (late) refusal of a3, also with pb's id on them.
        a1 = exchange.fetch_order(cid("pa", "a1"))
        ack = OrderAccepted(
            message_id="ack-a1",
            ts_ns=1,
            profile_id="pb",
            client_order_id=a1["clientOrderId"],
            exchange_order_id=a1["id"],
            symbol=a1["symbol"],
            side=a1["side"],
            qty=a1["amount"],
            price=a1["price"],
        )
        refusal = OrderRejected(
            message_id="rej-a3",
            ts_ns=1,
            profile_id="pb",
            client_order_id=cid("pa", "a3"),
            reason="x",
        )
        # a2's own trades from that step arrive *after* its cancel: the release of a2's
        # reservation must wait for them (releasing at once would reject them later).
        late = [f for f in fills if f.client_order_id == cid("pa", "a2")]
        exchange_events = (ack, *disguised, cancel, *late, refusal)
        runtime.submit(*exchange_events)
        runtime.drain()

        for payload in (ack, *disguised, *late, cancel, refusal):
            reference_apply(reference, payload)
        assert stored_state(runtime, "pa") == reference.to_state()
        assert set(reference.orders) == {cid("pa", "a1")}  # a2 and a3 released
        info = runtime.inspect()
        assert info["dead_letters"] == []
        assert {p: (v["incarnation"], v["halted"]) for p, v in info["profiles"].items()} == {
            "pa": (1, None),
            "pb": (1, None),
        }
        assert reference.reserved_for_positions == sum(f.cost for f in (*disguised, *late))
        assert stored_state(runtime, "pb") == before_b
        applied = recorder.of(FillApplied)
        assert {(e.profile_id, e.trade_id) for e in applied} == {
            ("pa", f.trade_id) for f in (*disguised, *late)
        }


def test_a_fill_nobody_owns_is_parked_reported_and_changes_no_books(
    exchange: SimulatedExchange, events: EventSink, recorder: Recorder
) -> None:
    specs = [position_spec(p, exchange=exchange, events=events) for p in ("pa", "pb")]
    with running(specs, events=events) as runtime:
        runtime.submit(open_signal("pa", "a1"), open_signal("pb", "b1"))
        runtime.drain()
        before = {p: stored_state(runtime, p) for p in ("pa", "pb")}
        (fill, *_) = step(exchange, PRICE - 1)
        # Everything about it is a real trade of one of our orders, except the client order id.
        stray = dataclasses.replace(fill, client_order_id=cid("pc", "x"), message_id="stray")
        runtime.submit(stray)
        runtime.drain()

        assert runtime.inspect()["parked"] == 1
        rejected = recorder.of(FillRejected)
        assert [(r.reason, r.trade_id, r.profile_id, r.correlation_id) for r in rejected] == [
            ("unroutable", fill.trade_id, None, "stray")
        ]
        assert rejected[0].detail == "no profile owns client order id 'cf-pc-x'"
        assert {p: stored_state(runtime, p) for p in ("pa", "pb")} == before
        assert recorder.of(FillApplied) == []


def test_a_flood_of_unowned_fills_is_bounded_and_the_runtime_keeps_serving(
    exchange: SimulatedExchange, events: EventSink, recorder: Recorder
) -> None:
    specs = [position_spec(p, exchange=exchange, events=events) for p in ("pa", "pb")]
    runtime = Runtime(specs, events=events, balances={"main": {"USDT": 10**12}}, parked_limit=5)
    with runtime:
        runtime.submit(open_signal("pa", "a1"), open_signal("pb", "b1"))
        runtime.drain()
        fill_a, fill_b = sorted(step(exchange, PRICE - 1), key=lambda f: f.client_order_id)
        strays = [
            dataclasses.replace(fill_a, client_order_id=f"cf-px-{i}", message_id=f"stray-{i}")
            for i in range(12)
        ]
        runtime.submit(*strays)
        runtime.drain()
        info = runtime.inspect()
        assert (info["parked"], info["parked_dropped"]) == (5, 7)  # the 7 oldest dropped
        assert len(recorder.of(FillRejected)) == 12  # every one reported as unroutable
        runtime.submit(fill_a, fill_b)  # real fills still reach their owners
        runtime.drain()
        assert {(e.profile_id, e.trade_id) for e in recorder.of(FillApplied)} == {
            ("pa", fill_a.trade_id),
            ("pb", fill_b.trade_id),
        }


def test_held_bootstrap_queues_fills_then_applies_them_in_order_exactly_once(
    exchange: SimulatedExchange, events: EventSink, recorder: Recorder
) -> None:
    specs = [position_spec(p, exchange=exchange, events=events) for p in ("pa", "pb")]
    with running(specs, events=events) as runtime:
        runtime.submit(open_signal("pa", "a1", qty=3 * QTY), open_signal("pb", "b1", qty=2 * QTY))
        runtime.drain()
        held_state = stored_state(runtime, "pa")
        held_books = runtime.books()["pa"]

        runtime.hold_bootstrap("pa")
        fills = step(exchange, PRICE - 1)  # fills that arrive while the hold begins
        runtime.submit(*fills)
        runtime.drain()  # settles with pa held
        assert runtime.inspect()["profiles"]["pa"]["status"] == "bootstrap_held"
        fills += fill_until_closed(  # and fills that arrive while it is held
            exchange, runtime, [cid("pa", "a1"), cid("pb", "b1")], price=PRICE - 1
        )
        a_fills = [f for f in fills if f.client_order_id == cid("pa", "a1")]
        assert len(a_fills) >= 3  # partial fills: more than one message waits
        runtime.submit(a_fills[0])  # a redelivered trade waits in line too
        runtime.drain()

        info = runtime.inspect()["profiles"]
        assert info["pa"]["status"] == "bootstrap_held"
        assert info["pa"]["log"] == len(a_fills) + 1
        assert stored_state(runtime, "pa") == held_state
        assert runtime.books()["pa"] == held_books  # the held actor answers, unchanged
        assert recorder.of(FillApplied, profile_id="pa") == []
        # pb kept trading meanwhile: its order filled completely.
        assert runtime.books()["pb"]["reserved_for_positions"] == sum(
            f.cost for f in fills if f.client_order_id == cid("pb", "b1")
        )
        assert runtime.books()["pb"]["pending_orders"] == 0

        runtime.complete_bootstrap("pa")
        runtime.drain()
        applied = recorder.of(FillApplied, profile_id="pa")
        assert [(e.trade_id, e.duplicate) for e in applied] == [
            *((f.trade_id, False) for f in a_fills),
            (a_fills[0].trade_id, True),
        ]
        reference = PositionLedger.from_state(held_state)
        for fill in [*a_fills, a_fills[0]]:
            reference_apply(reference, fill)
        assert stored_state(runtime, "pa") == reference.to_state()
        assert reference.reserved_for_positions == sum(f.cost for f in a_fills)
        assert reference.reserved_for_orders == 0
        assert runtime.inspect()["profiles"]["pa"]["status"] == "live"
        assert held_books["reserved_for_orders"] == 3 * ESTIMATE


def test_hold_requested_while_busy_bootstraps_from_everything_delivered_before_it(
    events: EventSink, recorder: Recorder
) -> None:
    exchange = BlockingExchange(cid("pa", "a1"), markets=MARKETS, balances={"USDT": 10**9})
    specs = [position_spec(p, exchange=exchange, events=events) for p in ("pa", "pb")]
    with running(specs, events=events) as runtime:
        runtime.submit(open_signal("pa", "a1"), open_signal("pa", "a2"))
        assert exchange.entered.wait(timeout=30)  # pa's actor is inside the exchange call
        runtime.hold_bootstrap("pa")  # a1 and a2 were delivered to the running incarnation
        runtime.submit(open_signal("pa", "a3"))  # this one arrives during the hold
        try:
            # The next incarnation waits until the busy one has finished what it was given.
            info = runtime.inspect()["profiles"]["pa"]
            assert (info["status"], info["incarnation"]) == ("restarting", 1)
        finally:
            exchange.release.set()
        runtime.drain()

        info = runtime.inspect()["profiles"]["pa"]
        assert (info["status"], info["incarnation"], info["log"]) == ("bootstrap_held", 2, 1)
        held = runtime.books()["pa"]
        assert (held["pending_orders"], held["reserved_for_orders"]) == (2, 2 * ESTIMATE)
        assert stored_state(runtime, "pa")["used_order_ids"] == [cid("pa", "a1"), cid("pa", "a2")]

        runtime.complete_bootstrap("pa")
        runtime.drain()
        assert runtime.books()["pa"]["reserved_for_orders"] == 3 * ESTIMATE
        # Each order was sent, and reported, once: nothing delivered before the hold ran twice.
        accepted = [e.client_order_id for e in recorder.of(OrderAccepted, profile_id="pa")]
        assert accepted == [cid("pa", "a1"), cid("pa", "a2"), cid("pa", "a3")]
        assert len(exchange.fetch_open_orders()) == 3


def test_drain_reports_a_profile_that_does_not_settle_as_a_timeout_error(
    events: EventSink,
) -> None:
    exchange = BlockingExchange(cid("pa", "a1"), markets=MARKETS, balances={"USDT": 10**9})
    specs = [position_spec(p, exchange=exchange, events=events) for p in ("pa", "pb")]
    with running(specs, events=events) as runtime:
        runtime.submit(open_signal("pa", "a1"))
        assert exchange.entered.wait(timeout=30)
        try:
            with pytest.raises(TimeoutError, match=r"^runtime did not settle within 0.2 s: "):
                runtime.drain(timeout=0.2)  # pa is stuck inside the exchange
        finally:
            exchange.release.set()
        runtime.drain()
        assert runtime.books()["pa"]["pending_orders"] == 1


def test_bootstrap_commands_for_an_unknown_profile_are_refused_and_harm_nothing(
    exchange: SimulatedExchange, events: EventSink
) -> None:
    specs = [position_spec(p, exchange=exchange, events=events) for p in ("pa", "pb")]
    with running(specs, events=events) as runtime:
        for command in (runtime.hold_bootstrap, runtime.complete_bootstrap, runtime.crash_profile):
            with pytest.raises(
                UnknownProfile, match=r"^unknown profile 'ghost': this runtime runs \['pa', 'pb'\]$"
            ):
                command("ghost")
        # Told to the supervisor directly, they are ignored (a tell that raised would kill it).
        runtime.supervisor.tell(HoldBootstrap(profile_id="ghost"))
        runtime.supervisor.tell(CompleteBootstrap(profile_id="ghost"))
        runtime.submit(open_signal("pa", "a1"))
        runtime.drain()
        assert runtime.books()["pa"]["pending_orders"] == 1
        assert runtime.inspect()["profiles"]["pa"]["incarnation"] == 1


def test_an_exchange_cancel_waits_for_the_fills_made_before_it(
    exchange: SimulatedExchange, events: EventSink, recorder: Recorder
) -> None:
    # The exchange fills part of an order, then cancels the rest; the cancel notice overtakes
    # the fill notices. Releasing the whole reservation on the cancel would make those late
    # fills unknown (rejected, never booked): the release must wait for them.
    specs = [position_spec("pa", exchange=exchange, events=events)]
    with running(specs, events=events) as runtime:
        runtime.submit(open_signal("pa", "a1"))
        runtime.drain()
        fills = step(exchange, PRICE - 1)
        assert fills
        assert all(f.client_order_id == cid("pa", "a1") for f in fills)
        canceled = exchange.cancel_order(cid("pa", "a1"))
        assert 0 < canceled["remaining"] < canceled["amount"]  # a partial fill, then the cancel
        cancel = OrderCanceled(
            message_id="cancel-a1",
            ts_ns=1,
            client_order_id=cid("pa", "a1"),
            exchange_order_id=canceled["id"],
            remaining=canceled["remaining"],
        )
        runtime.submit(cancel)
        runtime.drain()
        assert cid("pa", "a1") in ledger_of(runtime, "pa").orders  # held for the late fills
        runtime.submit(*fills)
        runtime.drain()

        ledger = ledger_of(runtime, "pa")
        assert ledger.orders == {}  # released once its fills were in
        assert ledger.reserved_for_orders == 0
        assert ledger.positions["pos-a1"].qty == sum(f.qty - f.fee for f in fills)
        assert recorder.of(FillRejected) == []
        ledger.check_invariants()
