"""Prometheus metrics of a runtime, on a registry of their own (never the process-global one).

::

    metrics = Metrics()                          # its own CollectorRegistry
    runtime.events.subscribe(metrics.on_event)   # counters, from the event sink
    poller = metrics.watch(runtime)              # gauges, from runtime.inspect(), every second
    server = metrics.serve(9108)                 # GET http://127.0.0.1:9108/metrics
    ...
    server.close(); poller.stop()

Counters come from events as they are published (on the publisher's thread: a lock-protected
increment each), gauges from a periodic ``Runtime.inspect()``, and the commit-latency
histogram from whoever times commits (:meth:`Metrics.observe_commit`: durable mode's
``Runtime(..., on_commit=metrics.observe_commit)``, or :meth:`Metrics.timed` around an
in-memory checkpoint store). Needs the ``metrics``
extra (``prometheus-client``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from messages import (
    DeadLettered,
    FillApplied,
    FillRejected,
    InvariantViolated,
    Message,
    ReservationRejected,
)
from persistence import Checkpoint, SnapshotStore

logger = logging.getLogger("capflow.metrics")

#: Commit latency buckets, seconds: 100 µs to 5 s (the issue's target is p99 <= 20 ms).
COMMIT_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class Observable(Protocol):
    """What :meth:`Metrics.watch` needs of a runtime (``actors.runtime.Runtime`` is one).

    ``store_available`` (bool) and ``journal`` (a ``JournalStore`` or None) are read too,
    when the object has them.
    """

    def inspect(self) -> Mapping[str, Any]: ...


class Poller:
    """A daemon thread calling ``fn`` every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, fn: Callable[[], None], interval: float) -> None:
        self._fn = fn
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="capflow-metrics", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._fn()
            except Exception:
                # The runtime stopping under us is the normal end; anything else is worth a
                # line, never a dead poller thread taking the gauges with it.
                logger.debug("metrics poll failed", exc_info=True)
            self._stop.wait(self._interval)

    def stop(self) -> None:
        """Stop polling and wait (briefly) for the thread."""
        self._stop.set()
        self._thread.join(timeout=5)


class MetricsServer:
    """The HTTP endpoint serving a registry; :attr:`port` is the bound port."""

    def __init__(self, port: int, addr: str, registry: CollectorRegistry) -> None:
        self._server, self._thread = start_http_server(port, addr=addr, registry=registry)
        self.port: int = self._server.server_port
        self.url = f"http://{addr}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _TimedStore:
    """A snapshot store that reports how long each save took."""

    def __init__(self, store: SnapshotStore, observe: Callable[[float], None]) -> None:
        self._store = store
        self._observe = observe

    def save(self, checkpoint: Checkpoint) -> None:
        started = time.perf_counter()
        self._store.save(checkpoint)
        self._observe(time.perf_counter() - started)

    def load(self, profile_id: str) -> Checkpoint | None:
        return self._store.load(profile_id)


class Metrics:
    """The runtime's counters, gauges and the commit-latency histogram.

    Args:
        registry: where the metrics live; default: a new ``CollectorRegistry``, so that two
            runtimes (or two tests) in one process never share a sample.
        namespace: prefix of every metric name.

    Exposed (with the default namespace)::

        capflow_fills_applied_total                   counter
        capflow_fills_duplicate_total                 counter  (re-deliveries recognised)
        capflow_fills_rejected_total{reason}          counter
        capflow_reservations_rejected_total{reason}   counter
        capflow_invariant_violations_total            counter
        capflow_actor_restarts_total                  counter  (new incarnations, from inspect)
        capflow_dead_letters_total                    counter
        capflow_mailbox_depth                         gauge    (messages logged, not yet
                                                               checkpointed, all profiles)
        capflow_mailbox_depth_max                     gauge    (the largest profile's)
        capflow_journal_lag                           gauge    (messages not yet committed)
        capflow_store_available                       gauge    (1 or 0)
        capflow_profiles{status}                      gauge
        capflow_checkpoints_committed_total           counter  (profile snapshots made
                                                               durable)
        capflow_commit_latency_seconds                histogram
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "capflow"
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg, ns = self.registry, namespace
        self.fills_applied = Counter(
            "fills_applied", "Fills booked by a profile.", namespace=ns, registry=reg
        )
        self.fills_duplicate = Counter(
            "fills_duplicate",
            "Fill re-deliveries recognised as already booked (nothing changed).",
            namespace=ns,
            registry=reg,
        )
        self.fills_rejected = Counter(
            "fills_rejected",
            "Fills that could not be booked, by reason.",
            ["reason"],
            namespace=ns,
            registry=reg,
        )
        self.reservations_rejected = Counter(
            "reservations_rejected",
            "Reservations a profile refused, by reason.",
            ["reason"],
            namespace=ns,
            registry=reg,
        )
        self.invariant_violations = Counter(
            "invariant_violations",
            "Exact book invariants found broken (a bug; the profile halts).",
            namespace=ns,
            registry=reg,
        )
        self.actor_restarts = Counter(
            "actor_restarts",
            "Profile actors started again (crash restarts and held bootstraps).",
            namespace=ns,
            registry=reg,
        )
        self.dead_letters = Counter(
            "dead_letters",
            "Messages set aside after crashing their profile repeatedly.",
            namespace=ns,
            registry=reg,
        )
        self.mailbox_depth = Gauge(
            "mailbox_depth",
            "Messages routed to profiles and not yet covered by a checkpoint (all profiles).",
            namespace=ns,
            registry=reg,
        )
        self.mailbox_depth_max = Gauge(
            "mailbox_depth_max",
            "The largest single profile's mailbox_depth.",
            namespace=ns,
            registry=reg,
        )
        self.journal_lag = Gauge(
            "journal_lag",
            "Messages accepted by the runtime and not yet committed to the store.",
            namespace=ns,
            registry=reg,
        )
        self.store_available = Gauge(
            "store_available",
            "1 while the store accepts commits, 0 while it is unavailable.",
            namespace=ns,
            registry=reg,
        )
        self.profiles = Gauge(
            "profiles", "Profiles by lifecycle status.", ["status"], namespace=ns, registry=reg
        )
        self.dispatch_ready = Gauge(
            "dispatch_ready",
            "Profile actors with mail waiting for a dispatcher thread (near the number of busy"
            " profiles all the time: the dispatcher is saturated).",
            namespace=ns,
            registry=reg,
        )
        self.dispatch_threads = Gauge(
            "dispatch_threads",
            "Threads running the profile actors (0: one thread per profile).",
            namespace=ns,
            registry=reg,
        )
        self.commit_latency = Histogram(
            "commit_latency_seconds",
            "Duration of one checkpoint commit to the store.",
            namespace=ns,
            registry=reg,
            buckets=COMMIT_BUCKETS,
        )
        self.checkpoints_committed = Counter(
            "checkpoints_committed",
            "Profile checkpoints made durable (several per commit in durable mode).",
            namespace=ns,
            registry=reg,
        )
        self.store_available.set(1)
        self._restarts_seen = 0
        self._last_lag = 0
        self._lock = threading.Lock()

    # -- feeds -----------------------------------------------------------------------------
    def on_event(self, event: Message) -> None:
        """Event-sink listener (``events.subscribe(metrics.on_event)``)."""
        match event:
            case FillApplied(duplicate=True):
                self.fills_duplicate.inc()
            case FillApplied():
                self.fills_applied.inc()
            case FillRejected(reason=reason):
                self.fills_rejected.labels(reason=reason).inc()
            case ReservationRejected(reason=reason):
                self.reservations_rejected.labels(reason=reason).inc()
            case InvariantViolated():
                self.invariant_violations.inc()
            case DeadLettered():
                self.dead_letters.inc()

    def observe_inspect(
        self,
        info: Mapping[str, Any],
        *,
        journal_lag: int | None = None,
        store_available: bool = True,
    ) -> None:
        """Update the gauges (and the restart counter) from one ``Runtime.inspect()``.

        Args:
            info: what ``Runtime.inspect()`` returned.
            journal_lag: journal entries not yet committed, when the runtime is durable;
                None: in-memory mode, where the lag is the messages that no checkpoint
                covers yet (per-profile sequence numbers are dense there).
            store_available: whether the store accepts commits.
        """
        profiles: Mapping[str, Mapping[str, Any]] = info.get("profiles", {})
        depths = [int(p.get("log", 0)) for p in profiles.values()]
        self.mailbox_depth.set(sum(depths))
        self.mailbox_depth_max.set(max(depths, default=0))
        statuses: dict[str, int] = {}
        restarts = 0
        uncovered = 0
        for p in profiles.values():
            status = str(p.get("status", "unknown"))
            statuses[status] = statuses.get(status, 0) + 1
            restarts += max(0, int(p.get("incarnation", 1)) - 1)
            uncovered += max(0, int(p.get("next_seq", 1)) - 1 - int(p.get("checkpoint_seq", 0)))
        for status, count in statuses.items():
            self.profiles.labels(status=status).set(count)
        self._last_lag = uncovered if journal_lag is None else journal_lag
        self.journal_lag.set(self._last_lag)
        self.store_available.set(1 if store_available else 0)
        with self._lock:
            # Incarnations only grow within one runtime: count the new ones since the last
            # look. Fewer than before: the runtime was replaced (the drill worker restarts its
            # runtime in-process), whose restarts so far are all new.
            if restarts < self._restarts_seen:
                self._restarts_seen = 0
            if restarts > self._restarts_seen:
                self.actor_restarts.inc(restarts - self._restarts_seen)
                self._restarts_seen = restarts

    def observe_runtime(self, runtime: Observable) -> None:
        """One look at a runtime: ``inspect()``, its store's availability, its journal's lag.

        In durable mode the lag is the journal entries read and not yet acknowledged by a
        commit (``pending_count`` over every partition); if the journal cannot be asked, the
        store is reported unavailable and the lag keeps its last value.
        """
        info = runtime.inspect()
        stats = getattr(runtime, "dispatch_stats", None)
        dispatch = stats() if callable(stats) else None
        self.dispatch_threads.set(0 if dispatch is None else dispatch["threads"])
        self.dispatch_ready.set(0 if dispatch is None else dispatch["ready"])
        available = bool(getattr(runtime, "store_available", True))
        journal = getattr(runtime, "journal", None)
        if journal is None:
            self.observe_inspect(info, store_available=available)
            return
        try:
            lag = sum(journal.pending_count(p) for p in range(journal.layout.partitions))
        except Exception:
            logger.debug("journal lag unavailable", exc_info=True)
            self.observe_inspect(info, journal_lag=self._last_lag, store_available=False)
            return
        self.observe_inspect(info, journal_lag=lag, store_available=available)

    def observe_commit(self, seconds: float, checkpoints: int = 1) -> None:
        """One commit took ``seconds`` and made ``checkpoints`` profile snapshots durable.

        Fits ``Runtime(..., on_commit=metrics.observe_commit)`` (durable mode: one commit call
        per batch, every partition's fenced commit in it, on the committer's thread) as well
        as a plain ``on_save(seconds)`` hook (one checkpoint per save).
        """
        self.commit_latency.observe(seconds)
        self.checkpoints_committed.inc(checkpoints)

    def timed(self, store: SnapshotStore) -> SnapshotStore:
        """``store`` with every ``save`` timed into ``commit_latency_seconds``.

        For the in-memory (checkpoint) mode: ``Runtime(specs, store=metrics.timed(MemoryStore()))``.
        """
        return _TimedStore(store, self.observe_commit)

    def watch(
        self, runtime: Observable | Callable[[], Observable], *, interval: float = 1.0
    ) -> Poller:
        """Look at ``runtime`` (:meth:`observe_runtime`) every ``interval`` seconds.

        ``runtime`` may be a function returning the current runtime, for a process that
        replaces its runtime (a look that raises is skipped, e.g. while there is none).

        ``Runtime.inspect`` is an ``ask`` of the supervisor that copies one row per profile
        (milliseconds for 10,000 profiles, queued behind the supervisor's mailbox): keep the
        interval near a second.
        """
        if callable(runtime):
            current = runtime
            return Poller(lambda: self.observe_runtime(current()), interval)
        fixed = runtime
        return Poller(lambda: self.observe_runtime(fixed), interval)

    def serve(self, port: int, *, addr: str = "127.0.0.1") -> MetricsServer:
        """Serve ``/metrics`` over HTTP on ``addr:port`` (port 0: any free port).

        Loopback by default: bind another address only on purpose.
        """
        return MetricsServer(port, addr, self.registry)
