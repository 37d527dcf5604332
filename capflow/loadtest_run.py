"""``capflow loadtest``: one run, phase by phase — baselines, start, resting orders, load, check.

The runtime is used through its public API only: ``Runtime(...)``, ``start``, ``submit``,
``drain``, ``books``, ``inspect``, ``stop``, its ``store`` (checkpoints) and its event sink
(listeners). Nothing here reaches into the supervisor or the profile actors.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.live import Live

from actors.events import EventSink
from actors.runtime import Runtime
from capflow.loadtest_measure import (
    RedisCounters,
    Resources,
    ThreadProfiler,
    TimedStore,
    Timings,
    percentiles_ms,
    pykka_spread_rate,
    pykka_tell_rate,
    redis_xadd_rate,
    top_functions,
)
from capflow.loadtest_report import Sample, progress_line
from capflow.loadtest_verify import Findings, check_books, verify
from capflow.loadtest_world import Workload, build_specs, profile_ids
from messages import Fill, encode

EXIT_OK, EXIT_FAILED = 0, 1
#: Names the runtime's durable-mode parameter may have (checked with inspect.signature).
DURABLE_PARAMETERS = ("journal", "durable", "journal_store")
#: The driver paces in ticks of this many seconds...
TICK_S = 0.005
#: ... and never hands the runtime more than this many messages in one submit.
MAX_BATCH = 2_000
#: The spread baseline tells at most this many actors (one thread each).
SPREAD_ACTORS = 1_000


class UsageError(Exception):
    """A setting this run cannot honour (exit status 2)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """One load test's settings (the CLI flags)."""

    profiles: int = 1000
    duration: float = 20.0
    rate: float | None = None  # messages (fills + signals) per second; None: --max
    window: int = 20_000
    max_messages: int = 5_000_000
    signal_share: float = 0.05
    store: str = "memory"
    baselines: str = "pykka"
    baseline_messages: int = 200_000
    stack_kb: int | None = None
    switch_interval: float | None = None
    dispatch_threads: int = 4  # Runtime(dispatch_threads=...): 0 = one thread per profile
    metrics_port: int | None = None
    cprofile: Path | None = None
    drain_timeout: float = 300.0


def durable_parameter() -> str | None:
    """The name of ``Runtime``'s durable-mode parameter, or None while it has none."""
    params = inspect.signature(Runtime.__init__).parameters
    return next((name for name in DURABLE_PARAMETERS if name in params), None)


@contextlib.contextmanager
def store_url(store: str) -> Iterator[str | None]:
    """None for memory; a Redis URL (starting a server of our own for ``redis``) otherwise.

    Raises:
        UsageError: a Redis store while the runtime has no durable mode yet.
    """
    if store == "memory":
        yield None
        return
    if durable_parameter() is None:
        raise UsageError(
            f"--store {store} is not yet supported by the runtime: Runtime() has no durable"
            f" (Redis journal) parameter yet (looked for {', '.join(DURABLE_PARAMETERS)});"
            " use --store memory"
        )
    if store != "redis":
        yield store
        return
    from persistence import RedisServer  # noqa: PLC0415 - only for Redis runs

    with RedisServer(appendonly=True, appendfsync="everysec") as server:
        yield server.url


def run_loadtest(options: Options, console: Console | None = None) -> dict[str, Any]:
    """Run one load test; returns the report (see ``capflow.loadtest_report.REPORT_KEYS``).

    With a ``console``, a live progress line is shown on it while the load runs (terminals
    only) and the metrics URL is printed on it.

    Raises:
        UsageError: the options ask for something this runtime cannot do yet.
        TimeoutError: the runtime did not settle within ``options.drain_timeout``.
    """
    with store_url(options.store) as url:
        return LoadTest(options, url, console).run()


class _Progress:
    """Samples for the plot, and the live line on a terminal."""

    def __init__(self, console: Console | None, duration: float) -> None:
        self.samples: list[Sample] = []
        self._duration = duration
        self._live = Live(console=console, refresh_per_second=4) if console else None

    def __enter__(self) -> _Progress:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def sample(self, sample: Sample) -> None:
        self.samples.append(sample)
        if self._live is not None:
            self._live.update(progress_line(sample, self._duration))


class LoadTest:
    """One load test: build, measure baselines, start, place resting orders, load, verify.

    Args:
        options: the settings.
        url: the Redis URL of a durable run, or None (in-memory checkpoints).
        console: where progress and the metrics URL go (None: nowhere).
    """

    def __init__(self, options: Options, url: str | None, console: Console | None) -> None:
        self.options = options
        self.url = url
        self.console = console
        self.report: dict[str, Any] = {
            "profiles": options.profiles,
            "mode": "max" if options.rate is None else "rate",
            "rate_target": options.rate,
            "window": options.window if options.rate is None else None,
            "signal_share": options.signal_share,
            "store": "memory" if url is None else options.store,
            "stack_kb": options.stack_kb,
            "dispatch_threads": options.dispatch_threads,
            "switch_interval_s": options.switch_interval or sys.getswitchinterval(),
            "gc_threshold": list(gc.get_threshold()),
            "cpu_count": os.cpu_count(),
            "loadavg_1m_before": round(os.getloadavg()[0], 2),
        }
        self.resources = Resources()
        ids = profile_ids(options.profiles)
        self.events = EventSink()
        self.timings = Timings()
        self.workload = Workload(ids, signal_share=options.signal_share)
        self.specs, self.exchange, self.balances = build_specs(ids, self.events)
        self.metrics: Any = None
        on_save: Callable[[float], None] | None = None
        if options.metrics_port is not None:
            from actors.metrics import Metrics  # noqa: PLC0415 - the metrics extra, if asked

            self.metrics = Metrics()
            self.events.subscribe(self.metrics.on_event)
            on_save = self.metrics.observe_commit
        self.store = TimedStore({pid: i for i, pid in enumerate(ids)}, on_save=on_save)
        kwargs: dict[str, Any] = {"store": self.store}
        if url is not None:
            from persistence import RedisStore  # noqa: PLC0415 - only for Redis runs

            kwargs = {str(durable_parameter()): RedisStore(url)}
            if self.metrics is not None:
                kwargs["on_commit"] = self.metrics.observe_commit  # durable commit latency
        kwargs["dispatch_threads"] = self.options.dispatch_threads
        self.runtime = Runtime(self.specs, events=self.events, balances=self.balances, **kwargs)
        self.events.subscribe(self.timings.on_event)
        self.events.subscribe(self.workload.on_event)
        self.samples: list[Sample] = []

    def run(self) -> dict[str, Any]:
        """Every phase, in order; returns the report."""
        options = self.options
        old_stack = threading.stack_size(options.stack_kb * 1024) if options.stack_kb else None
        old_interval = sys.getswitchinterval()
        if options.switch_interval is not None:
            sys.setswitchinterval(options.switch_interval)
        profiler = ThreadProfiler() if options.cprofile is not None else None
        try:
            self.report["baselines"] = self.baselines()
            with profiler.running() if profiler is not None else contextlib.nullcontext():
                self.start()
                with self.observed():
                    self.place_resting_orders()
                    self.load()
                    findings = verify(
                        self.runtime,
                        self.workload,
                        self.timings,
                        self.events,
                        durable=self.url is not None,
                    )
                if self.url is not None:
                    self.recover(findings)
        finally:
            self.runtime.stop()
            if old_stack is not None:
                threading.stack_size(old_stack)
            sys.setswitchinterval(old_interval)
        if profiler is not None and options.cprofile is not None:
            stats = profiler.stats()
            stats.dump_stats(options.cprofile)
            self.report["cprofile"] = {"path": str(options.cprofile), "top": top_functions(stats)}
        self.report["invariant_violations"] = findings.count
        self.report["problems"] = findings.lines
        self.report["exit_code"] = EXIT_FAILED if findings.count else EXIT_OK
        return self.report

    # -- phases ----------------------------------------------------------------------------
    def baselines(self) -> dict[str, Any]:
        """Raw pykka tell (one actor, and spread), and pipelined XADD with Redis or ``all``.

        Measured before the runtime starts, so that nothing else of ours runs meanwhile.
        """
        options, url = self.options, self.url
        out: dict[str, Any] = {"messages": options.baseline_messages}
        if options.baselines == "none":
            return out
        out["pykka_tell_per_s"] = round(pykka_tell_rate(options.baseline_messages), 1)
        spread = min(options.profiles, SPREAD_ACTORS)
        out["pykka_spread_actors"] = spread
        out["pykka_spread_per_s"] = round(pykka_spread_rate(options.baseline_messages, spread), 1)
        if url is None and options.baselines != "all":
            return out
        payload = encode(sample_fill())
        out["xadd_payload_bytes"] = len(payload)
        if url is not None:
            out["redis_xadd_per_s"] = round(
                redis_xadd_rate(url, payload, options.baseline_messages), 1
            )
            return out
        from persistence import RedisServer  # noqa: PLC0415 - only for a Redis baseline

        with RedisServer(appendonly=True, appendfsync="everysec") as server:
            out["redis_xadd_per_s"] = round(
                redis_xadd_rate(server.url, payload, options.baseline_messages), 1
            )
        return out

    def start(self) -> None:
        """Start P profiles: time to ``start()`` + the first ``drain()``, and the RSS they take."""
        gc.collect()
        before = self.resources.rss_mb()
        started = time.perf_counter()
        self.runtime.start()
        returned = time.perf_counter()
        self.runtime.drain(timeout=self.options.drain_timeout)
        done = time.perf_counter()
        self.report["start_s"] = round(done - started, 3)
        self.report["start_call_s"] = round(returned - started, 3)
        self.report["first_drain_s"] = round(done - returned, 3)
        after = self.resources.rss_mb()
        self.report["rss_before_mb"] = round(before, 1)
        self.report["rss_after_start_mb"] = round(after, 1)
        self.report["vms_after_start_mb"] = round(self.resources.vms_mb(), 1)
        self.report["threads_after_start"] = threading.active_count()
        self.report["rss_per_1000_profiles_mb"] = round(
            (after - before) * 1000 / self.options.profiles, 2
        )

    @contextlib.contextmanager
    def observed(self) -> Iterator[None]:
        """With ``--metrics-port``: serve metrics and poll the runtime while the body runs."""
        if self.metrics is None:
            yield
            return
        poller = self.metrics.watch(self.runtime)
        server = self.metrics.serve(self.options.metrics_port or 0)
        if self.console is not None:
            self.console.print(f"metrics: {server.url}")
        else:
            print(f"metrics: {server.url}", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            server.close()
            poller.stop()

    def place_resting_orders(self) -> None:
        """Every profile's resting orders, through the real signal path; then a drain."""
        started = time.perf_counter()
        resting = self.workload.resting_orders(time.time_ns())
        for i in range(0, len(resting), MAX_BATCH):
            self.runtime.submit(*resting[i : i + MAX_BATCH])
        self.runtime.drain(timeout=self.options.drain_timeout)
        self.report["preplace_s"] = round(time.perf_counter() - started, 3)

    def recover(self, findings: Findings) -> None:
        """Durable runs: stop, then time a second runtime on the same store until it settles.

        The second runtime loads every snapshot and replays what the journal holds pending,
        with reconciliation off: the synthesized fills are not on the exchange, which would
        rightly disagree with them. Its books must equal the model too.
        """
        assert self.url is not None
        from persistence import RedisStore  # noqa: PLC0415 - only for Redis runs

        self.runtime.stop()
        kwargs: dict[str, Any] = {str(durable_parameter()): RedisStore(self.url)}
        if "reconcile" in inspect.signature(Runtime.__init__).parameters:
            kwargs["reconcile"] = False
        kwargs["dispatch_threads"] = self.options.dispatch_threads
        runtime = Runtime(self.specs, events=self.events, balances=self.balances, **kwargs)
        started = time.perf_counter()
        try:
            runtime.start()
            runtime.drain(timeout=self.options.drain_timeout)
            self.report["recovery_s"] = round(time.perf_counter() - started, 3)
            check_books(runtime, self.workload, findings, durable=True, label="recovered ")
        finally:
            runtime.stop()

    def load(self) -> None:
        """The load and the final drain, with CPU and RSS around them."""
        cpu_before = self.resources.cpu()
        counters = redis.Redis.from_url(self.url) if self.url is not None else None
        redis_before = RedisCounters.read(counters) if counters is not None else None
        console = self.console if self.console is not None and self.console.is_terminal else None
        with _Progress(console, self.options.duration) as progress:
            window = drive(self.runtime, self.workload, self.timings, self.options, progress)
        seconds = window["window_s"]
        report = self.report
        report.update({key: round(value, 3) for key, value in window.items()})
        cpu_after = self.resources.cpu()
        report.update(cpu_after.since(cpu_before, seconds))
        process_cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        report["rss_end_mb"] = round(self.resources.rss_mb(), 1)
        timings = self.timings
        applied = len(timings.fill_applied)
        decided = sum(1 for m in timings.signal_submitted if m in timings.signal_decided)
        fills_per_second = applied / seconds if seconds > 0 else 0.0
        report["fills_sent"] = timings.fills_sent
        report["fills_applied"] = applied
        report["fills_per_second"] = round(fills_per_second, 1)
        # The process's CPU over the window less the load generator's own: what the runtime
        # spent per fill (an upper bound: the harness's event listeners run on its threads).
        runtime_cpu = process_cpu - window["generator_cpu_s"]
        report["runtime_cpu_us_per_fill"] = (
            round(1e6 * runtime_cpu / applied, 1) if applied else None
        )
        report["fills_not_made"] = self.workload.exhausted
        report["signals_sent"] = len(timings.signal_submitted)
        report["signals_decided"] = decided
        report["signals_per_second"] = round(decided / seconds, 1) if seconds > 0 else 0.0
        report["signals_rejected"] = self.events.count("ReservationRejected")
        report["checkpoints"] = self.store.saves if self.url is None else None
        report["fill_latency_ms"] = percentiles_ms(timings.fill_latencies())
        report["fill_commit_latency_ms"] = (
            percentiles_ms(timings.commit_latencies(self.store.commits()))
            if self.url is None
            else None
        )
        report["signal_latency_ms"] = percentiles_ms(timings.signal_latencies())
        report["events"] = self.events.counts()
        baselines = report["baselines"]
        report["ratio_vs_pykka_tell"] = _ratio(fills_per_second, baselines.get("pykka_tell_per_s"))
        report["ratio_vs_redis_xadd"] = _ratio(fills_per_second, baselines.get("redis_xadd_per_s"))
        report["samples"] = [s.as_row() for s in progress.samples]
        if counters is not None and redis_before is not None:
            # Over the load window and its drain: signals' commands are in it too (5 %).
            per_fill = RedisCounters.read(counters).per(redis_before, applied)
            counters.close()
            report["redis_commands_per_fill"] = per_fill["commands"]
            report["redis_calls_per_fill"] = per_fill["calls"]


def drive(
    runtime: Runtime,
    workload: Workload,
    timings: Timings,
    options: Options,
    progress: _Progress,
) -> dict[str, float]:
    """Submit the load until the time or the message budget is spent; then drain.

    ``--rate``: every tick, what the schedule owes (at most ``MAX_BATCH`` per submit).
    ``--max``: as much as keeps ``options.window`` messages outstanding (submitted, not yet
    applied or decided).
    """
    rate = options.rate
    started = time.perf_counter()
    deadline = started + options.duration
    next_sample = started
    attempted = 0
    generator_cpu = submit_cpu = 0.0
    submit_wall = 0  # ns inside Runtime.submit (durable mode: journaling happens there)
    while attempted < options.max_messages:
        now = time.perf_counter()
        if now >= deadline:
            break
        if now >= next_sample:
            progress.sample(_sample(now - started, timings))
            next_sample = now + 0.25
        if rate is not None:
            n = int(rate * (now - started + TICK_S)) - attempted
        else:
            n = options.window - timings.outstanding()
        n = min(n, MAX_BATCH, options.max_messages - attempted)
        if n <= 0:
            time.sleep(TICK_S if rate is not None else 0.0005)
            continue
        cpu = time.thread_time()
        batch = workload.batch(n, time.time_ns())
        generated = time.thread_time()
        submitted_at = time.perf_counter_ns()
        runtime.submit(*batch.messages)
        submit_wall += time.perf_counter_ns() - submitted_at
        submitted = time.thread_time()
        timings.sent(batch.fill_profiles, batch.fill_seqs, batch.signal_ids, submitted_at)
        # The harness's own work (building and modelling messages, recording send times) apart
        # from the runtime's (``submit``: durable mode journals there, on this thread).
        generator_cpu += (generated - cpu) + (time.thread_time() - submitted)
        submit_cpu += submitted - generated
        attempted += n
    submit_end = time.perf_counter()
    runtime.drain(timeout=options.drain_timeout)
    end = time.perf_counter()
    progress.sample(_sample(end - started, timings))
    return {
        "window_s": end - started,
        "submit_s": submit_end - started,
        "drain_s": end - submit_end,
        "generator_cpu_s": generator_cpu,
        "submit_cpu_s": submit_cpu,
        "submit_wall_s": submit_wall / 1e9,
    }


def _sample(elapsed: float, timings: Timings) -> Sample:
    return Sample(
        elapsed=elapsed,
        fills_sent=timings.fills_sent,
        fills_applied=len(timings.fill_applied),
        signals_sent=len(timings.signal_submitted),
        signals_decided=len(timings.signal_decided),
    )


def _ratio(value: float, baseline: float | None) -> float | None:
    return round(value / baseline, 3) if baseline else None


def sample_fill() -> Fill:
    """A fill as the load sends them (the XADD baseline's payload)."""
    workload = Workload(["lt00000"], signal_share=0.0)
    workload.resting_orders(1)
    for model in workload.models.values():
        for order in model.orders.values():
            order.exchange_id = "O000001"
    message = workload.batch(1, time.time_ns()).messages[0]
    assert isinstance(message, Fill)
    return message
