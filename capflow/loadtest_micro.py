"""``capflow loadtest --micro``: what one fill costs, piece by piece, on one thread, no actors.

The load test measures the whole runtime; this splits a fill's CPU cost into the parts a
profile actor runs (the handler, its invariant check, the checkpoint's ``to_state``, the event)
and the parts the load generator runs, so that the end-to-end figures can be read against
them: whatever the runtime spends beyond their sum goes to mailboxes, threads and the GIL.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from actors.events import EventSink
from capflow.loadtest_world import PRICE, Workload, build_specs
from capflow.run_setup import MARKET
from messages import Fill, FillApplied, Rounding


def _per_call_us(fn: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return round((time.perf_counter() - started) / calls * 1e6, 2)


def _handler_and_workload(events: EventSink) -> tuple[Any, Workload]:
    workload = Workload(["lt00000"], signal_share=0.0)
    specs, _exchange, _ = build_specs(["lt00000"], events)
    handler = specs[0].factory("lt00000", None, lambda cid: None)
    events.subscribe(workload.on_event)
    for message in workload.resting_orders(time.time_ns()):
        handler.handle(message)
        handler.publish_events(handler.take_events())
    return handler, workload


def micro(fills: int = 20_000) -> dict[str, float]:
    """Microseconds per operation (and ``to_state`` at several book sizes)."""
    events = EventSink()
    handler, workload = _handler_and_workload(events)
    out: dict[str, float] = {}
    started = time.perf_counter()
    batch = workload.batch(fills, time.time_ns())
    out["generator_per_fill_us"] = round((time.perf_counter() - started) / fills * 1e6, 2)
    fill = batch.messages[0]
    assert isinstance(fill, Fill)
    out["fill_construct_validate_us"] = _per_call_us(
        lambda: dataclasses.replace(fill, trade_id="x"), 5000
    )
    out["market_notional_us"] = _per_call_us(
        lambda: MARKET.notional(300_000, PRICE, Rounding.UP), 5000
    )
    ledger = handler.ledger
    out["ledger_check_invariants_us"] = _per_call_us(ledger.check_invariants, 5000)
    out["to_state_0_trades_us"] = _per_call_us(ledger.to_state, 500)
    started = time.perf_counter()
    for message in batch.messages:
        handler.handle(message)
        handler.publish_events(handler.take_events())
    out["handle_and_publish_per_fill_us"] = round((time.perf_counter() - started) / fills * 1e6, 2)
    out[f"to_state_{fills}_trades_us"] = _per_call_us(ledger.to_state, 50)
    event = FillApplied(
        message_id="m:1",
        ts_ns=time.time_ns(),
        profile_id="lt00000",
        trade_id="t1",
        client_order_id="lt-lt00000-r0",
        qty=1,
        duplicate=False,
    )
    out["event_publish_us"] = _per_call_us(lambda: events.publish(event), 5000)
    return out
