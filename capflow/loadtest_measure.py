"""``capflow loadtest``: what it measures and how — latencies, resources, baselines, profiling.

Latencies are measured with ``time.perf_counter_ns`` in maps of our own, never from message
fields: a fill's submit time is taken just before ``Runtime.submit`` and its application time
when the ``FillApplied`` event is published (on the profile's thread, inside the handler); a
signal's decision is its ``OrderAccepted`` / ``ReservationRejected`` / ``OrderRejected``
(matched by correlation id = the signal's message id). With the in-memory store, a fill is
*committed* when a checkpoint covering its per-profile sequence number is saved.
"""

from __future__ import annotations

import bisect
import contextlib
import cProfile
import io
import math
import pstats
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pykka

from messages import FillApplied, Message, OrderAccepted, OrderRejected, ReservationRejected
from persistence import Checkpoint, MemoryStore

_DECISIONS = (OrderAccepted, ReservationRejected, OrderRejected)


class Timings:
    """Submit and outcome times of every fill and signal (an event-sink listener).

    Fills are numbered in the order they are sent (trade id ``t<n>``); the arrays below are
    indexed by that number. ``on_event`` runs on profile threads and only does single dict
    stores, which the GIL makes atomic.
    """

    def __init__(self) -> None:
        self.fill_submitted = array("q")
        self.fill_profile = array("i")
        self.fill_seq = array("q")
        self.fill_applied: dict[str, int] = {}
        self.duplicates: list[str] = []
        self.signal_submitted: dict[str, int] = {}
        self.signal_decided: dict[str, tuple[str, int]] = {}

    def on_event(self, event: Message) -> None:
        now = time.perf_counter_ns()
        if type(event) is FillApplied:
            if event.duplicate:
                self.duplicates.append(event.trade_id)
            else:
                self.fill_applied[event.trade_id] = now
        elif isinstance(event, _DECISIONS) and event.correlation_id is not None:
            self.signal_decided.setdefault(event.correlation_id, (type(event).__name__, now))

    def sent(
        self, fill_profiles: Sequence[int], fill_seqs: Sequence[int], signals: Sequence[str], t: int
    ) -> None:
        """Record one submitted batch (all submitted at ``t``)."""
        self.fill_submitted.extend([t] * len(fill_profiles))
        self.fill_profile.extend(fill_profiles)
        self.fill_seq.extend(fill_seqs)
        for message_id in signals:
            self.signal_submitted[message_id] = t

    @property
    def fills_sent(self) -> int:
        return len(self.fill_submitted)

    def outstanding(self) -> int:
        """Fills not yet applied plus signals not yet decided."""
        return (
            len(self.fill_submitted)
            - len(self.fill_applied)
            + len(self.signal_submitted)
            - len(self.signal_decided)
        )

    def fill_latencies(self) -> list[int]:
        """Submit → applied, ns, of every applied fill."""
        out = []
        applied = self.fill_applied
        for n, t in enumerate(self.fill_submitted):
            done = applied.get(f"t{n}")
            if done is not None:
                out.append(done - t)
        return out

    def signal_latencies(self) -> list[int]:
        """Submit → reservation decision, ns, of every decided signal sent during the load."""
        out = []
        for message_id, t in self.signal_submitted.items():
            decided = self.signal_decided.get(message_id)
            if decided is not None:
                out.append(decided[1] - t)
        return out

    def commit_latencies(self, commits: dict[int, tuple[list[int], list[int]]]) -> list[int]:
        """Submit → first checkpoint covering the fill, ns (``commits``: see TimedStore)."""
        out = []
        for n, t in enumerate(self.fill_submitted):
            seqs_times = commits.get(self.fill_profile[n])
            if seqs_times is None:
                continue
            seqs, times = seqs_times
            i = bisect.bisect_left(seqs, self.fill_seq[n])
            if i < len(seqs):
                out.append(times[i] - t)
        return out


class TimedStore(MemoryStore):
    """The in-memory checkpoint store, recording when each checkpoint was saved.

    Args:
        index: profile id → its index in the workload (commit times are kept by index).
        on_save: called with each save's duration in seconds (e.g. a metrics histogram).
    """

    def __init__(
        self, index: dict[str, int], on_save: Callable[[float], None] | None = None
    ) -> None:
        super().__init__()
        self._index = index
        self._on_save = on_save
        self._log: list[tuple[int, int, int]] = []  # (profile index, seq, saved at)

    def save(self, checkpoint: Checkpoint) -> None:
        started = time.perf_counter_ns()
        super().save(checkpoint)
        now = time.perf_counter_ns()
        self._log.append((self._index[checkpoint.profile_id], checkpoint.seq, now))
        if self._on_save is not None:
            self._on_save((now - started) / 1e9)

    def commits(self) -> dict[int, tuple[list[int], list[int]]]:
        """Per profile index: checkpoint seqs (increasing) and the times they were saved."""
        out: dict[int, tuple[list[int], list[int]]] = {}
        for index, seq, t in sorted(self._log):
            seqs, times = out.setdefault(index, ([], []))
            if not seqs or seq > seqs[-1]:
                seqs.append(seq)
                times.append(t)
        return out


def percentiles_ms(samples_ns: list[int]) -> dict[str, float | int]:
    """Nearest-rank p50/p99/p999 and max, in milliseconds, and the sample count."""
    if not samples_ns:
        return {"count": 0, "p50": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0}
    ordered = sorted(samples_ns)
    n = len(ordered)

    def rank(q: float) -> float:
        return round(ordered[min(n - 1, max(0, math.ceil(q * n) - 1))] / 1e6, 3)

    return {
        "count": n,
        "p50": rank(0.5),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": round(ordered[-1] / 1e6, 3),
    }


class Resources:
    """This process's RSS and CPU time (psutil, from the ``dev`` extra)."""

    def __init__(self) -> None:
        try:
            # The dev extra's psutil, needed by this benchmark only: imported when it runs.
            import psutil  # type: ignore[import-untyped]  # noqa: PLC0415
        except ImportError as exc:  # pragma: no cover - the dev extra is installed
            raise RuntimeError(
                "capflow loadtest needs psutil (pip install 'capflow[dev]')"
            ) from exc
        self._process = psutil.Process()

    def rss_mb(self) -> float:
        return float(self._process.memory_info().rss) / 2**20

    def vms_mb(self) -> float:
        """Virtual size: what a smaller thread stack size shrinks (RSS counts touched pages)."""
        return float(self._process.memory_info().vms) / 2**20

    def cpu(self) -> CpuSnapshot:
        times = self._process.cpu_times()
        switches = self._process.num_ctx_switches()
        return CpuSnapshot(
            user=float(times.user),
            system=float(times.system),
            voluntary_switches=int(switches.voluntary),
            involuntary_switches=int(switches.involuntary),
        )


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds (user, system) and context switches of the process so far."""

    user: float
    system: float
    voluntary_switches: int
    involuntary_switches: int

    def since(self, earlier: CpuSnapshot, seconds: float) -> dict[str, float | int]:
        """CPU use between ``earlier`` and this snapshot, over ``seconds`` of wall time."""
        user, system = self.user - earlier.user, self.system - earlier.system
        return {
            "cpu_percent": round(100 * (user + system) / seconds, 1) if seconds > 0 else 0.0,
            "cpu_user_s": round(user, 2),
            "cpu_system_s": round(system, 2),
            "context_switches": (self.voluntary_switches - earlier.voluntary_switches)
            + (self.involuntary_switches - earlier.involuntary_switches),
        }


# -- baselines -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Count:
    """Ask-only: how many messages the sink has seen."""


class _Sink(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Count):
            return self.seen
        self.seen += 1
        return None


def pykka_tell_rate(messages: int) -> float:
    """Raw pykka: ``tell`` of ``messages`` small values to ONE actor with a trivial handler.

    Timed from the first ``tell`` until an ``ask`` queued behind the last one is answered.
    """
    ref = _Sink.start()
    try:
        payload = ("deliver", 1, None)
        tell = ref.tell
        started = time.perf_counter()
        for _ in range(messages):
            tell(payload)
        seen = ref.ask(_Count(), timeout=120)
        took = time.perf_counter() - started
    finally:
        ref.stop()
    if seen != messages:
        raise RuntimeError(f"pykka baseline: sent {messages}, the actor saw {seen}")
    return messages / took


def pykka_spread_rate(messages: int, actors: int) -> float:
    """Raw pykka: ``tell`` round robin to ``actors`` trivial actors (one thread each)."""
    refs = [_Sink.start() for _ in range(actors)]
    try:
        payload = ("deliver", 1, None)
        tells = [ref.tell for ref in refs]
        started = time.perf_counter()
        for i in range(messages):
            tells[i % actors](payload)
        seen = 0
        for ref in refs:
            seen += cast(int, ref.ask(_Count(), timeout=120))
        took = time.perf_counter() - started
    finally:
        for ref in refs:
            ref.stop(block=False)
        deadline = time.monotonic() + 60
        for ref in refs:  # their threads end before the measured run starts
            ref.actor_stopped.wait(max(0.0, deadline - time.monotonic()))
    if seen != messages:
        raise RuntimeError(f"pykka baseline: sent {messages}, the actors saw {seen}")
    return messages / took


def redis_xadd_rate(url: str, payload: bytes, messages: int, *, pipeline: int = 1000) -> float:
    """Pipelined ``XADD`` of ``payload`` (one field) to a fresh stream, ``pipeline`` per trip."""
    import redis  # noqa: PLC0415 - only when a Redis baseline is asked for

    client = redis.Redis.from_url(url)
    key = f"capflow-loadtest:xadd:{uuid.uuid4().hex}"
    try:
        started = time.perf_counter()
        sent = 0
        while sent < messages:
            count = min(pipeline, messages - sent)
            pipe = client.pipeline(transaction=False)
            for _ in range(count):
                pipe.xadd(key, {"m": payload})
            pipe.execute()
            sent += count
        took = time.perf_counter() - started
        length = int(client.xlen(key))
    finally:
        client.delete(key)
        client.close()
    if length != messages:
        raise RuntimeError(f"redis baseline: sent {messages}, the stream holds {length}")
    return messages / took


@dataclass(frozen=True, slots=True)
class RedisCounters:
    """The server's command counters at one moment (``INFO stats`` and ``INFO commandstats``).

    ``commands`` is the server's ``total_commands_processed``: every command it executed, the
    ones a Lua script runs (``redis.call``) included, and the ``EVALSHA`` itself; ``calls`` the
    same by command name (so ``evalsha`` + ``xreadgroup`` + ... are the clients' own calls).
    """

    commands: int
    calls: dict[str, int]

    @classmethod
    def read(cls, client: Any) -> RedisCounters:
        """Read through ``client`` (a ``redis.Redis``; keep one for both ends of a window, so
        that no connection handshake lands in it)."""
        stats = client.info("stats")
        commandstats = client.info("commandstats")
        calls = {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in commandstats.items()
            if isinstance(value, dict) and "calls" in value
        }
        return cls(commands=int(stats["total_commands_processed"]), calls=calls)

    def per(self, earlier: RedisCounters, units: int) -> dict[str, Any]:
        """Commands since ``earlier`` per unit (e.g. per fill applied), rounded; by name too.

        Our own two ``INFO`` calls are not counted.
        """
        if units <= 0:
            return {"commands": None, "calls": {}}
        sent = self.commands - earlier.commands - 2  # the INFO stats/commandstats of ``earlier``
        calls = {
            name: round((count - earlier.calls.get(name, 0)) / units, 3)
            for name, count in sorted(self.calls.items())
            if name not in ("info", "client|setinfo") and count > earlier.calls.get(name, 0)
        }
        return {"commands": round(sent / units, 3), "calls": calls}


# -- profiling ---------------------------------------------------------------------------------
class ThreadProfiler:
    """cProfile in this thread and in every thread started while it is on, merged at the end.

    cProfile only sees the thread that enables it; ``threading.setprofile`` makes every new
    thread (each pykka actor is one) enable a profiler of its own on its first event.
    Profiling slows Python code 2-3x: use the figures for *where* time goes, not for rates.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._profiles: list[cProfile.Profile] = []
        # CPU time of each thread, not wall time: with a thousand threads, wall time is mostly
        # waiting (for the GIL or an empty inbox) and would drown the figures.
        self._main = cProfile.Profile(time.thread_time)
        self._before: set[threading.Thread] = set()

    def _hook(self, frame: Any, event: str, arg: Any) -> None:
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self._profiles.append(profile)
        profile.enable()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self._before = set(threading.enumerate())
        threading.setprofile(self._hook)
        self._main.enable()
        try:
            yield
        finally:
            self._main.disable()
            threading.setprofile(None)

    def stats(self, join_timeout: float = 10.0) -> pstats.Stats:
        """Merged stats; first waits (bounded) for the profiled threads to end."""
        deadline = time.monotonic() + join_timeout
        for thread in threading.enumerate():
            if thread not in self._before and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        stats = pstats.Stats(self._main)
        with self._lock:
            for profile in self._profiles:
                stats.add(profile)
        return stats


def top_functions(stats: pstats.Stats, limit: int = 25, sort: str = "tottime") -> str:
    """The ``limit`` costliest functions as pstats prints them."""
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]  # pstats writes to .stream
    stats.sort_stats(sort).print_stats(limit)
    return out.getvalue()
