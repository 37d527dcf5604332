"""The crash drill's conductor: the schedule, the worker's incarnations, the checks, the report.

Load time is the time the exchange's price driver runs (the worker's death and recovery
included); the checks pause the driver and do not count. The schedule is drawn from the seed
before the drill starts: ``kills`` SIGKILLs of the worker (a share of them during the recovery
of the previous one), ``actor_crashes`` crashes of a few profile actors each, supervisor
crashes and Redis restarts, at instants spread over the load time.
"""

from __future__ import annotations

import contextlib
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capflow.drill_check import CheckResult, check
from capflow.drill_process import WorkerDied, WorkerProcess
from capflow.drill_world import DrillConfig, DrillWorld
from exchange import ExchangeServer, RemoteExchange
from persistence import RedisServer, RedisStore

#: Seconds a worker may take to report ``ready``, and to quiesce.
READY_TIMEOUT = 300.0
QUIESCE_TIMEOUT = 600.0
#: Consecutive worker failures (exits nobody asked for, timeouts) before the drill gives up.
MAX_FAILURES = 3


class DrillAborted(Exception):
    """The drill could not go on (a worker kept failing); the report says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """A drill's knobs (the CLI's flags)."""

    config: DrillConfig
    duration: float
    kills: int
    boot_kill_share: float = 0.25
    actor_crashes: int = 3
    crash_batch: int = 2
    supervisor_crashes: int = 1
    redis_restarts: int = 1
    unsafe_no_dedupe: bool = False
    workdir: Path = Path()
    #: The worker's observability flags (``--metrics-port``, ``--log-json``, ``--log-level``),
    #: passed to every incarnation: each serves its runtime's metrics on the same port.
    observability: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One scheduled disruption, at ``at`` seconds of load time."""

    at: float
    kind: str  # "kill", "actors", "supervisor", "redis"
    profiles: tuple[str, ...] = ()
    boot_kill_after: bool = False  # kill the next incarnation while it recovers
    downtime: float = 0.0


def schedule(options: Options, world: DrillWorld) -> list[Event]:
    """The drill's disruptions, drawn from the seed, in load-time order."""
    rng = random.Random(f"capflow-drill:{options.config.seed}")
    span = (0.05 * options.duration, 0.9 * options.duration)
    boot = max(0, min(options.kills - 1, round(options.kills * options.boot_kill_share)))
    # Each boot kill rides on the kill before it: that many fewer kills are timed.
    timed = options.kills - boot
    chained = set(rng.sample(range(timed), boot)) if boot else set()
    events = [
        Event(at=t, kind="kill", boot_kill_after=i in chained)
        for i, t in enumerate(sorted(rng.uniform(*span) for _ in range(timed)))
    ]
    ids = world.profile_ids
    events += [
        Event(
            at=rng.uniform(*span),
            kind="actors",
            profiles=tuple(rng.sample(ids, min(len(ids), options.crash_batch))),
        )
        for _ in range(options.actor_crashes)
    ]
    events += [
        Event(at=rng.uniform(*span), kind="supervisor") for _ in range(options.supervisor_crashes)
    ]
    events += [
        Event(at=rng.uniform(*span), kind="redis", downtime=rng.uniform(0.5, 2.0))
        for _ in range(options.redis_restarts)
    ]
    return sorted(events, key=lambda e: e.at)


@dataclass(slots=True, kw_only=True)
class Tally:
    """What happened so far (the report's counts)."""

    kills: int = 0
    kills_during_recovery: int = 0
    actor_crashes: int = 0
    supervisor_crashes: int = 0
    redis_restarts: int = 0
    redis_downtime_s: float = 0.0
    incarnations: int = 0
    recovery_s: list[float] = field(default_factory=list)
    bootstrap_s: list[float] = field(default_factory=list)
    supervisor_recovery_s: list[float] = field(default_factory=list)
    worker_failures: list[str] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    worker_counts: dict[int, dict[str, int]] = field(default_factory=dict)
    worker_reasons: dict[int, dict[str, dict[str, int]]] = field(default_factory=dict)
    store_retries: dict[int, int] = field(default_factory=dict)
    dead_letters: dict[int, int] = field(default_factory=dict)
    parked: dict[int, int] = field(default_factory=dict)


class Drill:
    """Runs one drill: Redis, the exchange and the worker's incarnations; checks; tallies.

    Args:
        options: the drill's knobs.
        on_progress: called now and then with (load seconds, the tally, a status line).
    """

    def __init__(
        self,
        options: Options,
        on_progress: Callable[[float, Tally, str], None] = lambda load, tally, line: None,
    ) -> None:
        self.options = options
        self.world = DrillWorld(options.config)
        self.events = schedule(options, self.world)
        self.tally = Tally()
        self._progress = on_progress
        self._rng = random.Random(f"capflow-drill-boot:{options.config.seed}")
        self._redis: RedisServer | None = None
        self._server: ExchangeServer | None = None
        self._exchange: RemoteExchange | None = None
        self._worker: WorkerProcess | None = None
        self._started = 0.0
        self._paused_total = 0.0
        self._checks = 0
        self._seen: set[tuple[str, str]] = set()

    # -- the whole drill -------------------------------------------------------------------
    def run(self) -> Tally:
        """Run the drill to its end; every child process is gone when this returns or raises."""
        options = self.options
        steps = int(options.duration * options.config.price_rate * 1.5) + 200
        try:
            self._redis = RedisServer(appendonly=True, appendfsync="everysec").start()
            self._server = self.world.exchange_server(steps)
            self._server.start()
            self._exchange = self._server.client(timeout_s=120.0)
            self._spawn_ready()
            self._started = time.monotonic()
            self._exchange.resume()
            for event in self.events:
                self._load_until(event.at)
                self._disrupt(event)
            self._load_until(options.duration)
            self._check("final")
            self._stop_worker()
        finally:
            self._cleanup()
        return self.tally

    def load_elapsed(self) -> float:
        if not self._started:
            return 0.0
        return time.monotonic() - self._started - self._paused_total

    def _cleanup(self) -> None:
        if self._worker is not None and self._worker.returncode is None:
            self._worker.kill()
        if self._exchange is not None:
            self._exchange.close()
        if self._server is not None:
            self._server.stop()
        if self._redis is not None:
            self._redis.close()

    # -- the worker ------------------------------------------------------------------------
    @property
    def worker(self) -> WorkerProcess:
        if self._worker is None:
            raise RuntimeError("no worker")
        return self._worker

    def _spawn(self) -> WorkerProcess:
        assert self._redis is not None
        assert self._server is not None
        self.tally.incarnations += 1
        n = self.tally.incarnations
        (host, port), authkey = self._server.endpoint
        args = [
            "--store",
            self._redis.url,
            "--exchange",
            f"{host}:{port}",
            "--authkey",
            authkey.hex(),
            "--workdir",
            str(self.options.workdir),
            "--incarnation",
            str(n),
            *self.options.config.to_args(),
        ]
        if self.options.unsafe_no_dedupe:
            args.append("--unsafe-no-dedupe")
        args += self.options.observability
        self._worker = WorkerProcess(args, self.options.workdir / f"worker-{n:04d}.log")
        return self._worker

    def _spawn_ready(self, *, boot_kill: bool = False) -> float:
        """Spawn an incarnation and wait until it is ready; returns seconds from spawn to ready.

        With ``boot_kill``, the incarnation is killed at a random instant of its recovery
        (between its runtime's start and a while after it is ready; counted as a kill) and
        another one is spawned in its place. A worker that fails is recorded and replaced;
        after ``MAX_FAILURES`` in a row the drill is aborted.
        """
        failures = 0
        while True:
            worker = self._spawn()
            try:
                if boot_kill:
                    boot_kill = False
                    worker.wait_for("starting", READY_TIMEOUT)
                    boots = self.tally.bootstrap_s
                    typical = statistics.median(boots) if boots else 0.2
                    time.sleep(self._rng.uniform(0.0, 1.5 * typical))  # a random instant
                    worker.kill()
                    self.tally.kills += 1
                    self.tally.kills_during_recovery += 1
                    continue
                ready = worker.wait_for("ready", READY_TIMEOUT)
            except WorkerDied as exc:
                failures += 1
                self._failed(worker, exc)
                if failures >= MAX_FAILURES:
                    raise DrillAborted(f"{failures} workers in a row failed to start") from exc
                continue
            self.tally.bootstrap_s.append(float(ready["startup_s"]))
            if ready.get("metrics"):
                line = f"worker {self.tally.incarnations} metrics: {ready['metrics']}"
                self._progress(self.load_elapsed(), self.tally, line)
            return time.monotonic() - worker.spawned

    def _failed(self, worker: WorkerProcess, exc: Exception) -> None:
        worker.kill()
        self.tally.worker_failures.append(f"{exc}; log: {worker.log_tail(5)}")

    def _stop_worker(self) -> None:
        worker = self.worker
        code = worker.stop()
        if code != 0:
            self.tally.worker_failures.append(f"worker {worker.pid} stopped with status {code}")

    # -- load and disruptions --------------------------------------------------------------
    def _load_until(self, at: float) -> None:
        """Let the load run until ``at`` seconds of load time; replace a worker that dies."""
        while (left := at - self.load_elapsed()) > 0:
            time.sleep(min(0.1, left))
            worker = self.worker
            if worker.returncode is not None and not worker.killed:
                self.tally.worker_failures.append(
                    f"worker {worker.pid} exited with status {worker.returncode} unasked;"
                    f" log: {worker.log_tail(5)}"
                )
                self._restart_after("worker failure")
            self._progress(self.load_elapsed(), self.tally, "")

    def _disrupt(self, event: Event) -> None:
        match event.kind:
            case "kill":
                self.worker.kill()
                self.tally.kills += 1
                self._progress(self.load_elapsed(), self.tally, "killed the worker (SIGKILL)")
                seconds = self._spawn_ready(boot_kill=event.boot_kill_after)
                self.tally.recovery_s.append(seconds)
                self._check(f"after kill {self.tally.kills}")
            case "actors":
                try:
                    self.worker.send("crash", profiles=list(event.profiles))
                    done = self.worker.wait_for("crashed", 60.0)
                except WorkerDied as exc:
                    self._failed(self.worker, exc)
                    self._restart_after("worker failure")
                    return
                self.tally.actor_crashes += len(done["profiles"])
            case "supervisor":
                try:
                    self.worker.send("crash-supervisor")
                    done = self.worker.wait_for("supervisor_restarted", READY_TIMEOUT)
                except WorkerDied as exc:
                    self._failed(self.worker, exc)
                    self._restart_after("worker failure")
                    return
                self.tally.supervisor_crashes += 1
                self.tally.supervisor_recovery_s.append(float(done["seconds"]))
                self._check("after supervisor crash")
            case "redis":
                assert self._redis is not None
                self._redis.kill()
                self._progress(self.load_elapsed(), self.tally, "redis-server killed")
                self._load_until(self.load_elapsed() + event.downtime)
                self._redis.restart()
                self.tally.redis_restarts += 1
                self.tally.redis_downtime_s += event.downtime
                self._check("after redis restart")
            case other:  # pragma: no cover - schedule() makes only the kinds above
                raise ValueError(f"unknown event {other!r}")

    def _restart_after(self, why: str) -> None:
        if self._worker is not None and self._worker.returncode is None:
            self._worker.kill()
        self._spawn_ready()
        self._check(f"after {why}")

    # -- checks ----------------------------------------------------------------------------
    def _check(self, label: str) -> None:
        """Pause the market, let the worker quiesce, check every profile, resume."""
        assert self._exchange is not None
        assert self._redis is not None
        paused = time.monotonic()
        self._progress(self.load_elapsed(), self.tally, f"checking ({label})")
        exchange = self._exchange
        exchange.pause()
        try:
            quiesced: dict[str, Any] | None = None
            for _ in range(3):
                steps = _driver_steps(exchange)
                self._checks += 1
                worker = self.worker
                try:
                    worker.send("quiesce", id=self._checks)
                    quiesced = worker.wait_for("quiesced", QUIESCE_TIMEOUT)
                except WorkerDied as exc:
                    quiesced = None
                    self._failed(worker, exc)
                    self._spawn_ready()
                    continue
                if _driver_steps(exchange) == steps:
                    break  # no price step slipped in after the pause: the state is still
            if quiesced is None:
                raise DrillAborted(f"the worker did not quiesce for the check {label!r}")
            self._record(quiesced)
            live = _read_books(Path(quiesced["books"]))
            with contextlib.closing(RedisStore(self._redis.url)) as store:
                result = check(
                    label,
                    self.world,
                    store,
                    exchange,
                    workdir=self.options.workdir,
                    live_books=live,
                )
            self.tally.checks.append(result)
            self._keep_evidence(result)
            self.worker.send("resume")
            self.worker.wait_for("resumed", 60.0)
        finally:
            exchange.resume()
            self._paused_total += time.monotonic() - paused

    def _keep_evidence(self, result: CheckResult) -> None:
        """Write what a check found wrong that no earlier check did (for a post-mortem)."""
        new = {
            pid: lines
            for pid, lines in result.mismatches.items()
            if any((pid, line) not in self._seen for line in lines)
        }
        self._seen.update((pid, line) for pid, lines in new.items() for line in lines)
        evidence = {pid: result.evidence[pid] for pid in new if pid in result.evidence}
        if new:
            path = self.options.workdir / f"failed-check-{len(self.tally.checks):04d}.json"
            found = {"label": result.label, "mismatches": new, **evidence}
            path.write_text(json.dumps(found, indent=1, default=str, sort_keys=True))

    def _record(self, quiesced: dict[str, Any]) -> None:
        n = self.tally.incarnations
        self.tally.worker_counts[n] = dict(quiesced.get("counts", {}))
        self.tally.worker_reasons[n] = dict(quiesced.get("reasons", {}))
        self.tally.store_retries[n] = int(quiesced.get("store_retries", 0))
        self.tally.dead_letters[n] = int(quiesced.get("dead_letters", 0))
        self.tally.parked[n] = int(quiesced.get("parked", 0))
        for pid, status in dict(quiesced.get("not_live", {})).items():
            self.tally.worker_failures.append(f"profile {pid} is {status} at a check")


def _driver_steps(exchange: RemoteExchange) -> int:
    return sum(driver["steps"] for driver in exchange.status()["drivers"])


def _read_books(path: Path) -> dict[str, Any]:
    books: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return books
