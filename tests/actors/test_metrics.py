"""Prometheus metrics and structured logs: fed by events and ``inspect()``, isolated registries."""

from __future__ import annotations

import io
import json
import logging
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from actors.events import EventSink
from actors.logs import EventLogger, JsonFormatter, configure_logging
from actors.metrics import Metrics
from messages import (
    DeadLettered,
    FillApplied,
    FillRejected,
    InvariantViolated,
    ReservationRejected,
)
from persistence import Checkpoint, MemoryStore
from tests.actors.conftest import eventually

TS = 1_700_000_000_000_000_000


def applied(n: int, *, duplicate: bool = False) -> FillApplied:
    return FillApplied(
        message_id=f"e{n}",
        ts_ns=TS,
        profile_id="bot-1",
        trade_id=f"t{n}",
        client_order_id="cf-bot-1-s1",
        qty=100,
        duplicate=duplicate,
        correlation_id=f"fill-{n}",
    )


def refused(n: int, reason: str) -> ReservationRejected:
    return ReservationRejected(
        message_id=f"r{n}",
        ts_ns=TS,
        profile_id="bot-2",
        signal_id=f"s{n}",
        reason=reason,
        needed=500,
        available=100,
        detail=f"order needs 500 but only 100 is available in profile bot-2 ({n})",
        correlation_id=f"sig-{n}",
    )


def feed(metrics: Metrics) -> None:
    sink = EventSink()
    sink.subscribe(metrics.on_event)
    for n in range(3):
        sink.publish(applied(n))
    sink.publish(applied(0, duplicate=True))
    for n in range(2):
        sink.publish(
            FillRejected(
                message_id=f"x{n}",
                ts_ns=TS,
                profile_id="bot-1",
                trade_id=f"t9{n}",
                reason="over_fill",
                detail="fill qty 7 exceeds remaining 5 of order cf-bot-1-s1",
            )
        )
    sink.publish(refused(1, "insufficient_capital"))
    sink.publish(refused(2, "insufficient_capital"))
    sink.publish(refused(3, "profile_halted"))
    sink.publish(InvariantViolated(message_id="v1", ts_ns=TS, profile_id="bot-3", detail="x"))
    sink.publish(
        DeadLettered(
            message_id="d1",
            ts_ns=TS,
            profile_id="bot-4",
            seq=7,
            payload_type="Fill",
            error="RuntimeError('boom')",
            attempts=3,
        )
    )


def inspect_info(incarnations: list[int], logs: list[int]) -> dict[str, Any]:
    return {
        "profiles": {
            f"bot-{i}": {
                "status": "live" if i else "restarting",
                "incarnation": inc,
                "next_seq": 11,
                "checkpoint_seq": 10 - log,
                "log": log,
            }
            for i, (inc, log) in enumerate(zip(incarnations, logs, strict=True))
        },
        "parked": 0,
        "dead_letters": [],
        "timers": 0,
    }


def test_event_counters_count_by_type_and_reason() -> None:
    metrics = Metrics()
    feed(metrics)
    value = metrics.registry.get_sample_value
    assert value("capflow_fills_applied_total") == 3
    assert value("capflow_fills_duplicate_total") == 1
    assert value("capflow_fills_rejected_total", {"reason": "over_fill"}) == 2
    assert value("capflow_reservations_rejected_total", {"reason": "insufficient_capital"}) == 2
    assert value("capflow_reservations_rejected_total", {"reason": "profile_halted"}) == 1
    assert value("capflow_invariant_violations_total") == 1
    assert value("capflow_dead_letters_total") == 1


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    feed(first)
    assert first.registry is not second.registry
    assert second.registry.get_sample_value("capflow_fills_applied_total") == 0


def test_inspect_sets_the_gauges_and_counts_new_incarnations_once() -> None:
    metrics = Metrics()
    value = metrics.registry.get_sample_value
    metrics.observe_inspect(inspect_info([1, 2, 1], [0, 3, 5]))
    assert value("capflow_mailbox_depth") == 8
    assert value("capflow_mailbox_depth_max") == 5
    assert value("capflow_journal_lag") == 8  # in memory: messages no checkpoint covers yet
    assert value("capflow_store_available") == 1
    assert value("capflow_profiles", {"status": "live"}) == 2
    assert value("capflow_profiles", {"status": "restarting"}) == 1
    assert value("capflow_actor_restarts_total") == 1
    metrics.observe_inspect(inspect_info([1, 2, 1], [0, 0, 0]))
    assert value("capflow_actor_restarts_total") == 1  # nothing new
    metrics.observe_inspect(
        inspect_info([3, 2, 1], [0, 0, 1]), journal_lag=42, store_available=False
    )
    assert value("capflow_actor_restarts_total") == 3
    assert value("capflow_mailbox_depth") == 1
    assert value("capflow_journal_lag") == 42
    assert value("capflow_store_available") == 0


def test_commit_latency_is_a_histogram() -> None:
    metrics = Metrics()
    for seconds in (0.0004, 0.003, 0.003, 0.5):
        metrics.observe_commit(seconds)
    value = metrics.registry.get_sample_value
    assert value("capflow_commit_latency_seconds_count") == 4
    assert value("capflow_commit_latency_seconds_bucket", {"le": "0.005"}) == 3
    assert value("capflow_commit_latency_seconds_bucket", {"le": "+Inf"}) == 4


def test_a_timed_store_times_every_save_and_still_stores() -> None:
    metrics = Metrics()
    store = metrics.timed(MemoryStore())
    store.save(Checkpoint(profile_id="bot-1", seq=3, state={"x": 1}))
    assert store.load("bot-1") == Checkpoint(profile_id="bot-1", seq=3, state={"x": 1})
    assert metrics.registry.get_sample_value("capflow_commit_latency_seconds_count") == 1


class FakeRuntime:
    """Answers ``inspect()`` like a runtime; counts the looks."""

    def __init__(self) -> None:
        self.looks = 0
        self.store_available = True

    def inspect(self) -> dict[str, Any]:
        self.looks += 1
        return inspect_info([1, 1], [self.looks, 0])


def test_watch_polls_the_runtime_until_stopped() -> None:
    metrics = Metrics()
    runtime = FakeRuntime()
    runtime.store_available = False
    poller = metrics.watch(runtime, interval=0.001)
    try:
        eventually(lambda: runtime.looks >= 3, what="three looks at the runtime")
    finally:
        poller.stop()
    looks = runtime.looks
    assert metrics.registry.get_sample_value("capflow_store_available") == 0
    assert metrics.registry.get_sample_value("capflow_mailbox_depth") in range(1, looks + 1)


def test_the_http_endpoint_serves_the_registry() -> None:
    metrics = Metrics()
    feed(metrics)
    server = metrics.serve(0)
    try:
        assert server.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
            body = r.read().decode()
    finally:
        server.close()
    assert "capflow_fills_applied_total 3.0" in body
    assert 'capflow_fills_rejected_total{reason="over_fill"} 2.0' in body


# -- structured logs ------------------------------------------------------------------------------
@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    events_level = logging.getLogger("capflow.events").level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    logging.getLogger("capflow.events").setLevel(events_level)


def test_a_record_with_a_profile_id_is_one_json_line() -> None:
    record = logging.LogRecord(
        "capflow.test", logging.WARNING, __file__, 1, "fill %s", ("t1",), None
    )
    record.profile_id = "bot-1"
    record.correlation_id = "sig-7"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "WARNING"
    assert parsed["logger"] == "capflow.test"
    assert parsed["msg"] == "fill t1"
    assert parsed["profile_id"] == "bot-1"
    assert parsed["correlation_id"] == "sig-7"
    assert parsed["ts"].endswith("Z")
    assert "trade_id" not in parsed  # absent context stays absent


@pytest.mark.usefixtures("restore_logging")
def test_configured_logging_writes_json_lines_and_replaces_itself() -> None:
    first, stream = io.StringIO(), io.StringIO()
    configure_logging("INFO", stream=first)
    configure_logging("INFO", stream=stream)  # replaces the first handler, never adds
    logging.getLogger("capflow.x").info("hello", extra={"profile_id": "bot-9"})
    assert first.getvalue() == ""
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["profile_id"] == "bot-9"


@pytest.mark.usefixtures("restore_logging")
def test_the_event_logger_writes_refusals_and_violations_with_their_ids() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    sink = EventSink()
    sink.subscribe(EventLogger())
    sink.publish(applied(1))  # not logged
    sink.publish(refused(1, "insufficient_capital"))
    sink.publish(InvariantViolated(message_id="v1", ts_ns=TS, profile_id="bot-3", detail="x"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["level"], line["event"]) for line in lines] == [
        ("INFO", "ReservationRejected"),
        ("ERROR", "InvariantViolated"),
    ]
    assert lines[0]["profile_id"] == "bot-2"
    assert lines[0]["correlation_id"] == "sig-1"
    assert lines[0]["reason"] == "insufficient_capital"
    assert lines[0]["logger"] == "capflow.audit"
    assert lines[1]["profile_id"] == "bot-3"
