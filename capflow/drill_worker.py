"""The crash drill's worker: one incarnation of the durable runtime, in its own process.

    python -m capflow.drill_worker --store URL --exchange HOST:PORT --authkey HEX \\
        --workdir DIR --incarnation N --profiles P --grids G --seed S [--unsafe-no-dedupe] \\
        [--metrics-port PORT] [--log-json] [--log-level LEVEL]

It builds the drill's profiles (:class:`capflow.drill_world.DrillWorld`, the same in every
incarnation), starts ``Runtime(..., journal=RedisStore(url), holder="drill")`` (which recovers
from the snapshots, the journal's pending entries and the exchange) and, once every profile is
live, prints ``ready`` (with the URL of its metrics endpoint, ``--metrics-port``: bound before
the runtime starts, so that recovery can be watched too). Then, until it is told to stop or is
killed, it pumps the exchange's feed (``drain_fills(consumer="drill")``) into
``Runtime.submit`` — retrying with backoff while the store is down, never dropping a batch —
fires seeded signals (ids tagged with the incarnation, each written to the sent-order log
before it is submitted) and a price tick a second.

The parent talks to it in JSON lines: commands on stdin, events on stdout (nothing else is
printed there; logs go to stderr). Commands: ``quiesce`` (stop signals, pump and drain until
the feed is empty, write the live books to a file, answer ``quiesced``), ``resume``, ``crash``
(crash these profile actors), ``crash-supervisor`` (see :meth:`Worker.crash_supervisor`) and
``stop``. End of stdin means the parent is gone: the worker exits.

Exit status: 0 stopped, 2 the metrics port cannot be bound, 3 the runtime lost its lease, 4
bootstrap did not finish, 5 a bug.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pykka

from accounting import PositionLedger
from actors.events import EventSink
from actors.profile import CrashNow, ProfileActor
from actors.protocol import Checkpointed
from actors.runtime import Runtime
from capflow.drill_world import (
    FEED_CONSUMER,
    HOLDER,
    ORDER_PREFIX,
    DrillConfig,
    DrillWorld,
    SentLog,
    plain,
)
from capflow.run_observe import Observer, add_observability_arguments
from capflow.run_setup import MARKET
from capflow.run_signals import SignalGenerator
from capflow.tuning import tune_gc
from exchange import RemoteExchange, trade_to_fill
from messages import (
    DeadLettered,
    ExchangeUnavailable,
    FillRejected,
    InvariantViolated,
    Message,
    PriceTick,
    StaleFence,
    StoreUnavailable,
)
from persistence import RedisStore

EXIT_OK = 0
EXIT_METRICS = 2
EXIT_FENCED = 3
EXIT_BOOTSTRAP = 4
EXIT_BUG = 5
#: Seconds between signal steps, and between price ticks.
SIGNAL_EVERY = 0.1
TICK_EVERY = 1.0
#: How long a bootstrap (every profile live) may take.
BOOTSTRAP_TIMEOUT = 300.0
#: How long the runtime may take to settle when the parent asks for a check (a runtime that
#: does not settle fails the worker, and so the drill).
QUIESCE_DRAIN_TIMEOUT = 60.0
#: A profile id no drill has: a message for it makes the supervisor's handler raise.
_NO_SUCH_PROFILE = "~no-such-profile~"

logger = logging.getLogger("capflow.drill.worker")


class Fenced(Exception):
    """The runtime lost its lease: another runtime owns the profiles now."""


class Out:
    """The event channel to the parent: one JSON object per stdout line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, default=str, sort_keys=True)
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def read_commands(commands: queue.SimpleQueue[dict[str, Any]]) -> None:
    """Stdin reader thread: each line a command; end of input is a stop (the parent died)."""
    for raw in sys.stdin:
        with contextlib.suppress(json.JSONDecodeError):
            commands.put(json.loads(raw))
    commands.put({"cmd": "stop", "reason": "stdin closed"})


class Worker:
    """One incarnation: the runtime, the feed pump, the signals and the parent's commands."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.config = DrillConfig(
            profiles=args.profiles,
            grids=args.grids,
            seed=args.seed,
            duplicate_rate=Decimal(args.duplicate_rate),
            price_rate=args.price_rate,
            signal_rate=args.signal_rate,
        )
        self.world = DrillWorld(self.config)
        self.incarnation: int = args.incarnation
        self.url: str = args.store
        self.unsafe: bool = args.unsafe_no_dedupe
        self.workdir = Path(args.workdir)
        host, port = args.exchange.rsplit(":", 1)
        self.exchange = RemoteExchange(
            (host, int(port)),
            bytes.fromhex(args.authkey),
            consumer=FEED_CONSUMER,
            timeout_s=30.0,
            max_connections=16,
        )
        self.events = EventSink()
        self.signals = SignalGenerator(
            {pid: cfg.allocated_capital for pid, cfg in self.world.positions.items()},
            MARKET,
            seed=self.config.seed * 100_003 + self.incarnation,
            tick=self.world.tick,
            order_prefix=ORDER_PREFIX,
            rate=self.config.signal_rate,
            id_tag=f"i{self.incarnation}n",
        )
        self.events.subscribe(self.signals.on_event)
        self.observer = Observer.from_args(args)
        self.observer.listen(self.events)
        if not args.log_json:  # JSON logs have an EventLogger writing these, structured
            self.events.subscribe(_log_trouble)
        self.sent = SentLog(self.workdir, self.incarnation)
        self.specs = self.world.specs(self.exchange, self.events)
        self.out = Out()
        self.commands: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._runtime: Runtime | None = None
        self._paused = False
        self._ticks = 0
        self.store_retries = 0

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the runtime is not started")
        return self._runtime

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> int:
        """Serve metrics (with ``--metrics-port``) while :meth:`serve` runs."""
        with contextlib.ExitStack() as stack:
            try:
                url = stack.enter_context(self.observer.serving(lambda: self.runtime))
            except OSError as exc:
                # Asked for a port and cannot have it: say so loudly (the drill records a
                # worker failure) rather than run unobserved.
                logger.error("metrics port %s cannot be bound: %s", self.observer.port, exc)
                self.out.emit("error", incarnation=self.incarnation, error=f"metrics: {exc}")
                return EXIT_METRICS
            return self.serve(url)

    def serve(self, metrics: str | None) -> int:
        """Start the runtime, report ``ready``, then obey the parent until told to stop."""
        threading.Thread(target=read_commands, args=(self.commands,), daemon=True).start()
        started = time.monotonic()
        self.out.emit("starting", incarnation=self.incarnation)
        try:
            self.start_runtime()
        except TimeoutError as exc:
            logger.error("bootstrap did not finish: %s", exc)
            return EXIT_BOOTSTRAP
        self.adopt_positions()
        self.out.emit(
            "ready",
            incarnation=self.incarnation,
            startup_s=round(time.monotonic() - started, 3),
            metrics=metrics,
        )
        try:
            return self.loop()
        except Fenced as exc:
            self.out.emit("fatal", error=str(exc))
            return EXIT_FENCED

    def start_runtime(self) -> None:
        """Start a runtime on the store (retrying while it is down); wait until all are live."""
        backoff = 0.05
        deadline = time.monotonic() + BOOTSTRAP_TIMEOUT
        while True:
            store = RedisStore(self.url)
            runtime = Runtime(
                self.specs,
                events=self.events,
                balances={"main": self.world.balances},
                journal=store,
                holder=HOLDER,
                unsafe_no_dedupe=self.unsafe,
                on_commit=self.observer.on_commit,
            )
            try:
                runtime.start()
                break
            except StoreUnavailable as exc:
                logger.warning("store unavailable at start, retrying: %s", exc)
                with contextlib.suppress(Exception):
                    runtime.stop()
                store.close()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"store unavailable for {BOOTSTRAP_TIMEOUT} s") from exc
                time.sleep(backoff)
                backoff = min(1.0, backoff * 2)
        self._runtime = runtime
        while True:
            profiles = runtime.inspect()["profiles"].values()
            if all(p["status"] == "live" for p in profiles):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"profiles not live after {BOOTSTRAP_TIMEOUT} s")
            time.sleep(0.02)  # polling another process's bootstrap, not a test's sleep

    def adopt_positions(self) -> None:
        """Let this incarnation's signals exit positions that earlier ones opened."""
        try:
            with RedisStore(self.url) as store:
                snapshots = store.load_many(self.world.positions)
        except StoreUnavailable:
            return
        for pid, snapshot in snapshots.items():
            ledger = PositionLedger.from_state(snapshot.state)
            busy = {order.position_id for order in ledger.orders.values()}
            self.signals.adopt(pid, [p for p in sorted(ledger.positions) if p not in busy])

    def loop(self) -> int:
        next_signal = next_tick = time.monotonic()
        while True:
            try:
                command = self.commands.get(timeout=0.02)
            except queue.Empty:
                command = None
            if command is not None and self.command(command):
                return EXIT_OK
            if self.runtime.fatal is not None:
                raise Fenced(str(self.runtime.fatal))
            if self._paused:
                continue
            self.pump()
            now = time.monotonic()
            if now >= next_signal:
                self.fire_signals()
                next_signal = now + SIGNAL_EVERY
            if now >= next_tick:
                self.tick()
                next_tick = now + TICK_EVERY

    def command(self, command: dict[str, Any]) -> bool:
        """Carry out one command from the parent; True: stop."""
        match command.get("cmd"):
            case "quiesce":
                self.quiesce(int(command["id"]))
            case "resume":
                self._paused = False
                self.out.emit("resumed")
            case "crash":
                crashed = []
                for pid in command["profiles"]:
                    self.runtime.crash_profile(pid)
                    crashed.append(pid)
                self.out.emit("crashed", profiles=crashed)
            case "crash-supervisor":
                seconds = self.crash_supervisor()
                self.out.emit("supervisor_restarted", seconds=round(seconds, 3))
            case "stop":
                self.runtime.stop()
                self.out.emit("stopped", reason=command.get("reason", "asked"))
                return True
            case other:
                logger.error("unknown command %r", other)
        return False

    # -- load ------------------------------------------------------------------------------
    def submit(self, *payloads: Any) -> None:
        """``Runtime.submit``, retried with backoff while the store is down (fail closed)."""
        backoff = 0.02
        while True:
            try:
                self.runtime.submit(*payloads)
                return
            except StoreUnavailable as exc:
                self.store_retries += 1
                logger.warning("store unavailable, submit retried in %.2fs: %s", backoff, exc)
                time.sleep(backoff)
                backoff = min(1.0, backoff * 2)
            except StaleFence as exc:
                raise Fenced(str(exc)) from exc

    def pump(self) -> int:
        """Submit what the feed delivered since the last drain (acknowledged by the next one)."""
        try:
            trades = self.exchange.drain_fills(FEED_CONSUMER)
        except ExchangeUnavailable as exc:
            logger.warning("feed unavailable: %s", exc)
            return 0
        if trades:
            self.submit(*[trade_to_fill(t) for t in trades])
        return len(trades)

    def price(self) -> Decimal:
        price = self.exchange.price(MARKET.symbol)
        return self.world.setup.start_price if price is None else price

    def fire_signals(self) -> None:
        signals = self.signals.step(self.price(), time.time_ns())
        for signal in signals:
            cid = f"{ORDER_PREFIX}-{signal.profile_id}-{signal.signal_id}"
            self.sent.write(cid, self.signals.sent[cid])  # before it can reach the exchange
        if signals:
            self.submit(*signals)

    def tick(self) -> None:
        self._ticks += 1
        self.submit(
            PriceTick(
                message_id=f"tick-i{self.incarnation}n{self._ticks}",
                ts_ns=time.time_ns(),
                symbol=MARKET.symbol,
                price=self.price(),
            )
        )

    # -- the parent's requests -------------------------------------------------------------
    def quiesce(self, request: int) -> None:
        """No more signals; pump and drain until the feed has nothing more; report the books."""
        self._paused = True
        rounds = 0
        while True:
            rounds += 1
            while self.pump():
                pass
            self.runtime.drain(timeout=QUIESCE_DRAIN_TIMEOUT)
            # A grid's replacement order may have crossed the market: look once more.
            if not self.pump():
                break
        runtime = self.runtime
        info = runtime.inspect()
        books_path = self.workdir / f"books-{request:04d}.json"
        books_path.write_text(json.dumps(plain(runtime.books()), sort_keys=True))
        not_live = {
            pid: p["status"] for pid, p in info["profiles"].items() if p["status"] != "live"
        }
        self.out.emit(
            "quiesced",
            id=request,
            books=str(books_path),
            rounds=rounds,
            not_live=not_live,
            parked=info["parked"],
            dead_letters=len(info["dead_letters"]),
            counts=self.events.counts(),
            reasons=self.events.reasons(),
            store_retries=self.store_retries,
        )

    def crash_supervisor(self) -> float:
        """Crash the supervisor actor abruptly, then restart the runtime in this process.

        The runtime has no API for it, so: a message the supervisor cannot handle (a
        checkpoint report for a profile it does not run) makes its handler raise, and pykka
        kills it the way it kills any actor whose ``tell`` handler raises — ``on_failure``, no
        ``on_stop``, its inbox dropped. Its profile actors are orphaned; they are crashed the
        same way (each with an injected crash). Then the dead runtime is stopped (its journal
        readers stop; its committer flushes what the orphans had already checkpointed, fenced
        as ever) and a new ``Runtime`` starts on the same journal, exactly as after a process
        restart, under the same holder (a new lease token fences out the old one).

        Returns:
            Seconds from the crash until every profile of the new runtime is live.
        """
        old = self.runtime
        started = time.monotonic()
        supervisor = old.supervisor
        supervisor.tell(Checkpointed(profile_id=_NO_SUCH_PROFILE, incarnation=0, seq=0))
        _wait_dead([supervisor])
        orphans = pykka.ActorRegistry.get_by_class(ProfileActor)
        for orphan in orphans:
            with contextlib.suppress(pykka.ActorDeadError):
                orphan.tell(CrashNow(profile_id=_NO_SUCH_PROFILE))
        _wait_dead(orphans)
        self._runtime = None
        old.stop()
        self.start_runtime()
        return time.monotonic() - started


def _log_trouble(event: Message) -> None:
    """Event-sink listener: what the drill's checks may have to explain, into the log."""
    if isinstance(event, FillRejected | InvariantViolated | DeadLettered):
        logger.warning("event %r", event)


def _wait_dead(refs: Sequence[pykka.ActorRef[Any]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while any(ref.is_alive() for ref in refs):
        if time.monotonic() > deadline:
            raise TimeoutError(f"actors still alive after {timeout} s")
        time.sleep(0.005)  # waiting for other threads to finish dying


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m capflow.drill_worker", description=__doc__)
    p.add_argument("--store", required=True, help="redis:// URL of the journal store")
    p.add_argument("--exchange", required=True, help="HOST:PORT of the exchange server")
    p.add_argument("--authkey", required=True, help="the exchange server's key, hex")
    p.add_argument("--workdir", required=True, help="the drill's directory (sent-order log)")
    p.add_argument("--incarnation", type=int, required=True, help="this worker's number")
    p.add_argument("--profiles", type=int, required=True)
    p.add_argument("--grids", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--duplicate-rate", default="0.02")
    p.add_argument("--price-rate", type=int, default=20)
    p.add_argument("--signal-rate", type=float, default=0.02)
    p.add_argument("--unsafe-no-dedupe", action="store_true")
    add_observability_arguments(p, what="this worker")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    tune_gc()  # the capflow commands' thresholds (capflow/tuning.py)
    if not args.log_json and args.log_level is None:  # else the Observer configures logging
        logging.basicConfig(
            level=logging.WARNING,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    worker = Worker(args)
    try:
        return worker.run()
    except Exception:
        logger.exception("worker %d failed", args.incarnation)
        worker.out.emit("error", incarnation=args.incarnation)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
