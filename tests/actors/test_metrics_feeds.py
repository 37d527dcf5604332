"""Metrics fed by durable commits and by a runtime that is replaced; one log line per event."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from actors.events import EventSink
from actors.logs import EventLogger, configure_logging
from actors.metrics import Metrics
from actors.runtime import Runtime
from tests.actors.conftest import eventually
from tests.actors.test_metrics import FakeRuntime, applied, inspect_info, refused, restore_logging

__all__ = ["restore_logging"]  # a fixture, used by name


def test_a_durable_commit_counts_once_in_the_histogram_and_per_checkpoint() -> None:
    metrics = Metrics()
    on_commit = metrics.observe_commit  # the shape of Runtime(..., on_commit=...)
    on_commit(0.002, 5)
    on_commit(0.3, 1)
    value = metrics.registry.get_sample_value
    assert value("capflow_commit_latency_seconds_count") == 2
    assert value("capflow_commit_latency_seconds_bucket", {"le": "0.0025"}) == 1
    assert value("capflow_checkpoints_committed_total") == 6


def test_restarts_of_a_replacing_runtime_are_counted_from_zero() -> None:
    metrics = Metrics()
    metrics.observe_inspect(inspect_info([3, 2], [0, 0]))
    value = metrics.registry.get_sample_value
    assert value("capflow_actor_restarts_total") == 3
    # A new runtime in the same process (the drill worker's supervisor crash): its
    # incarnations start again at 1; its one restart is new.
    metrics.observe_inspect(inspect_info([1, 2], [0, 0]))
    assert value("capflow_actor_restarts_total") == 4
    metrics.observe_inspect(inspect_info([1, 3], [0, 0]))
    assert value("capflow_actor_restarts_total") == 5


def test_watch_follows_the_current_runtime() -> None:
    metrics = Metrics()
    first, second = FakeRuntime(), FakeRuntime()
    current: list[Any] = [None]  # no runtime yet: looks fail and are skipped

    def runtime() -> FakeRuntime:
        if current[0] is None:
            raise RuntimeError("the runtime is not started")
        found: FakeRuntime = current[0]
        return found

    poller = metrics.watch(runtime, interval=0.001)
    try:
        current[0] = first
        eventually(lambda: first.looks >= 1, what="a look at the first runtime")
        current[0] = second
        eventually(lambda: second.looks >= 1, what="a look at the second runtime")
    finally:
        poller.stop()
    assert metrics.registry.get_sample_value("capflow_profiles", {"status": "live"}) == 1


@pytest.mark.usefixtures("restore_logging")
def test_at_debug_the_event_logger_writes_one_line_per_event() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    sink = EventSink()
    sink.subscribe(EventLogger())
    sink.publish(applied(1))
    sink.publish(refused(1, "insufficient_capital"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    audit = [line for line in lines if line["logger"] == "capflow.audit"]
    assert [(line["level"], line["event"]) for line in audit] == [
        ("DEBUG", "FillApplied"),
        ("INFO", "ReservationRejected"),
    ]
    fill = audit[0]
    assert (fill["profile_id"], fill["correlation_id"]) == ("bot-1", "fill-1")
    assert (fill["trade_id"], fill["client_order_id"]) == ("t1", "cf-bot-1-s1")
    assert "signal_id" not in fill  # a fill has none: absent, not null


@pytest.mark.parametrize("threads", [4, 0])
def test_the_dispatcher_gauges_follow_the_runtime(threads: int) -> None:
    metrics = Metrics()
    runtime = Runtime([], dispatch_threads=threads).start()
    try:
        metrics.observe_runtime(runtime)
    finally:
        runtime.stop()
    assert metrics.registry.get_sample_value("capflow_dispatch_threads") == threads
    assert metrics.registry.get_sample_value("capflow_dispatch_ready") == 0
