"""The shared observability flags and their wiring (:mod:`capflow.run_observe`)."""

from __future__ import annotations

import argparse
import socket
import urllib.error
import urllib.request

import pytest

from actors.events import EventSink
from capflow.run_observe import Observer, add_observability_arguments, observability_args
from persistence import Checkpoint, MemoryStore
from tests.actors.test_metrics import FakeRuntime, applied


def parse(*argv: str, logs: bool = True) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_observability_arguments(parser, logs=logs)
    return parser.parse_args(argv)


def test_flags_parse_and_round_trip_to_a_child_command_line() -> None:
    args = parse("--metrics-port", "0", "--log-json", "--log-level", "debug")
    assert (args.metrics_port, args.log_json, args.log_level) == (0, True, "DEBUG")
    assert observability_args(args) == ["--metrics-port", "0", "--log-json", "--log-level", "DEBUG"]
    assert observability_args(parse()) == []
    assert observability_args(parse("--metrics-port", "9108", logs=False)) == [
        "--metrics-port",
        "9108",
    ]


@pytest.mark.parametrize("bad", ["-1", "65536", "http"])
def test_a_bad_port_is_refused(bad: str) -> None:
    with pytest.raises(argparse.ArgumentError, match=r"^argument --metrics-port: expected a"):
        parse("--metrics-port", bad)


def test_without_flags_nothing_is_built_or_served() -> None:
    observer = Observer.from_args(parse())
    observer.listen(EventSink())
    store = MemoryStore()
    assert observer.metrics is None
    assert observer.on_commit is None
    assert observer.store(store) is store
    with observer.serving(FakeRuntime) as url:
        assert url is None


def test_metrics_are_fed_timed_and_served_while_the_body_runs() -> None:
    events = EventSink()
    observer = Observer(metrics_port=0)
    observer.listen(events)
    store = observer.store(MemoryStore())
    store.save(Checkpoint(profile_id="bot-1", seq=1, state={}))
    events.publish(applied(1))
    runtime = FakeRuntime()
    with observer.serving(lambda: runtime) as url:
        assert url is not None
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode("utf-8")
    assert "capflow_fills_applied_total 1.0" in text
    assert "capflow_commit_latency_seconds_count 1.0" in text
    assert "capflow_checkpoints_committed_total 1.0" in text
    with pytest.raises(urllib.error.URLError, match=r"Connection refused"):  # closed
        urllib.request.urlopen(url, timeout=10)


def test_a_taken_port_is_an_os_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        observer = Observer(metrics_port=port)
        with pytest.raises(OSError, match=r"Address already in use"), observer.serving(FakeRuntime):
            pass
