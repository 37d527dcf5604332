"""``--metrics-port`` and ``--log-json`` on ``capflow run`` and ``capflow drill``, end to end.

The real HTTP endpoint is scraped while the command runs (in a child process, so that it can
be stopped with Ctrl-C like a user would); conditions are waited for with generous deadlines,
never timed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.metrics import Metrics
from persistence.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
#: Deadlines for conditions on a loaded 2-core machine (never asserted as durations).
DEADLINE = 120.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of the endpoint, by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode("utf-8")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def scrape_until(
    url: str, ready: Callable[[Samples], bool], proc: subprocess.Popen[Any]
) -> Samples:
    """Scrape until ``ready`` holds (endpoint errors are retried while ``proc`` runs)."""
    deadline = time.monotonic() + DEADLINE
    last: Samples = {}
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            samples = scrape(url)
        except OSError:
            samples = {}
        if samples and ready(samples):
            return samples
        last = samples or last
        time.sleep(0.2)  # polling another process's endpoint
    pytest.fail(f"not met (exit status {proc.poll()}); last scrape: {last}")


def spawn(args: list[str], stderr: IO[bytes]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "capflow.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[Any]]]:
    """Children a test starts; killed at the end if still running."""
    started: list[subprocess.Popen[Any]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaps it and closes its pipes


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_run_serves_metrics_and_writes_a_json_line_per_event(
    tmp_path: Path, processes: list[subprocess.Popen[Any]]
) -> None:
    log = tmp_path / "stderr.log"
    with log.open("wb") as stderr:
        proc = spawn(
            [
                "run",
                *("--grid-profiles", "2", "--signal-profiles", "2", "--duration", "600"),
                *("--no-progress", "--metrics-port", "0", "--log-json", "--log-level", "DEBUG"),
            ],
            stderr,
        )
    processes.append(proc)
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    assert first.startswith("metrics: http://127.0.0.1:"), first
    url = first.removeprefix("metrics: ")

    def booked(samples: Samples) -> bool:
        applied = value(samples, "capflow_fills_applied_total") or 0
        commits = value(samples, "capflow_commit_latency_seconds_count") or 0
        polled = value(samples, "capflow_profiles", status="live") == 4  # gauges: once a second
        return applied > 0 and commits > 0 and polled

    samples = scrape_until(url, booked, proc)
    for name in (
        "capflow_fills_duplicate_total",
        "capflow_invariant_violations_total",
        "capflow_actor_restarts_total",
        "capflow_dead_letters_total",
        "capflow_mailbox_depth",
        "capflow_mailbox_depth_max",
        "capflow_journal_lag",
        "capflow_checkpoints_committed_total",
    ):
        assert value(samples, name) is not None, name
    assert value(samples, "capflow_store_available") == 1
    assert value(samples, "capflow_invariant_violations_total") == 0
    assert (value(samples, "capflow_checkpoints_committed_total") or 0) >= (
        value(samples, "capflow_commit_latency_seconds_count") or 0
    )

    proc.send_signal(signal.SIGINT)  # Ctrl-C: the run stops early and still verifies
    out, _ = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, out
    assert "books verified" in out

    lines = json_lines(log)
    ports = [line["port"] for line in lines if "port" in line]
    assert ports == [int(url.split(":")[2].split("/")[0])]
    fills = [line for line in lines if line.get("event") == "FillApplied"]
    assert fills
    assert all(line["profile_id"] and line["correlation_id"] for line in fills)


def test_a_metrics_port_is_free_again_right_after_a_sigkill() -> None:
    # A served and scraped endpoint in a child, then SIGKILL: its port (with a connection
    # just closed on it) can be bound at once, as the drill's next worker does.
    serve = (
        "import threading; from actors.metrics import Metrics;"
        " print(Metrics().serve(0).port, flush=True); threading.Event().wait()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", serve], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline())
            url = f"http://127.0.0.1:{port}/metrics"
            assert value(scrape(url), "capflow_store_available") == 1
        finally:
            child.kill()  # SIGKILL
    metrics = Metrics()
    metrics.fills_applied.inc(3)
    server = metrics.serve(port)
    try:
        assert server.port == port
        assert value(scrape(url), "capflow_fills_applied_total") == 3
    finally:
        server.close()


@pytest.mark.integration
@pytest.mark.slow
def test_every_drill_worker_serves_durable_metrics_on_the_same_port(
    tmp_path: Path, processes: list[subprocess.Popen[Any]]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    workdir = tmp_path / "work"
    report = tmp_path / "drill.json"
    with (tmp_path / "stderr.log").open("wb") as stderr:
        proc = spawn(
            [
                "drill",
                *("--profiles", "4", "--grids", "0", "--duration", "8", "--kills", "1"),
                *("--boot-kill-share", "0", "--actor-crashes", "1", "--supervisor-crashes", "0"),
                *("--redis-restarts", "0", "--seed", "3", "--signal-rate", "0.5"),
                "--no-progress",
                *("--workdir", str(workdir), "--report", str(report)),
                *("--metrics-port", str(port), "--log-json"),
            ],
            stderr,
        )
    processes.append(proc)

    def committed(samples: Samples) -> bool:
        commits = value(samples, "capflow_commit_latency_seconds_count") or 0
        return commits > 0 and (value(samples, "capflow_fills_applied_total") or 0) > 0

    samples = scrape_until(url, committed, proc)
    assert value(samples, "capflow_store_available") == 1
    assert value(samples, "capflow_journal_lag") is not None
    assert value(samples, "capflow_checkpoints_committed_total") is not None
    proc.communicate(timeout=300)
    found = json.loads(report.read_text(encoding="utf-8"))
    assert found["kills"] == 1
    assert found["worker_failures"] == []  # every incarnation bound the port
    assert proc.returncode == 0
    # Both incarnations logged their endpoint, structured, on the same port.
    for n in (1, 2):
        lines = json_lines(workdir / f"worker-{n:04d}.log")
        ports = [line["port"] for line in lines if "port" in line]
        assert ports == [port], n
