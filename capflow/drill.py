"""``capflow drill``: kill the runtime at random instants and check that no fill is lost or doubled.

The drill starts its own ``redis-server`` (AOF, ``everysec``, a temporary directory, a free
loopback port) and the simulated exchange in a process of its own (a seeded price driver moves
the market and the exchange outlives every kill), then runs the durable runtime as a child
process (:mod:`capflow.drill_worker`) under load for ``--duration`` seconds. Meanwhile, on a
seeded schedule (:mod:`capflow.drill_run`), it

* SIGKILLs the worker ``--kills`` times (a share of them while the previous one is recovering)
  and starts the next incarnation, which recovers from Redis and the exchange;
* crashes profile actors inside the worker (``Runtime.crash_profile``), and the supervisor actor
  (the worker then restarts its runtime in-process);
* kills ``redis-server`` and restarts it on its AOF (the worker fails closed and retries).

After every restart, and at the end, it pauses the market, lets the worker drain, and checks
every profile's committed books against the exchange's trade record and the independent oracle
(:mod:`capflow.drill_check`). ``--unsafe-no-dedupe`` switches the runtime's exactly-once
protections off: the drill must then fail.

Exit status: 0 when every check passed; 1 on any loss, duplicate, mismatch, invariant violation
or worker failure; 2 when the drill could not run; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from capflow.argtypes import count
from capflow.drill_report import EXIT_OK, build_report, summary_line
from capflow.drill_run import Drill, DrillAborted, Options, Tally
from capflow.drill_world import DrillConfig
from capflow.report import write_report
from capflow.run_observe import add_observability_arguments, observability_args

EXIT_USAGE = 2


# -- command line ------------------------------------------------------------------------------
def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text}")
    return value


def _rate(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected a rate in [0, 1), got {text!r}") from None
    if not (value.is_finite() and 0 <= value < 1):
        raise argparse.ArgumentTypeError(f"expected a rate in [0, 1), got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The drill's flags (shared by ``capflow drill`` and ``scripts/restart_drill.py``)."""
    p.add_argument("--profiles", type=count, default=10, help="profiles in all (default 10)")
    p.add_argument(
        "--grids", type=count, default=None, help="how many are grids (default: a quarter)"
    )
    p.add_argument("--duration", type=_seconds, default=30.0, help="seconds of load (default 30)")
    p.add_argument("--kills", type=count, default=3, help="SIGKILLs of the worker (default 3)")
    p.add_argument(
        "--boot-kill-share",
        type=_share,
        default=0.25,
        help="share of the kills that hit a worker while it recovers (default 0.25)",
    )
    p.add_argument(
        "--actor-crashes",
        type=count,
        default=None,
        help="profile-actor crash events (default: as many as kills, at least 1)",
    )
    p.add_argument("--crash-batch", type=count, default=2, help="actors per crash event")
    p.add_argument("--supervisor-crashes", type=count, default=1, help="default 1")
    p.add_argument("--redis-restarts", type=count, default=1, help="default 1")
    p.add_argument("--seed", type=int, default=0, help="seeds everything (default 0)")
    p.add_argument(
        "--duplicate-rate",
        type=_rate,
        default=Decimal("0.02"),
        help="chance the exchange's feed re-sends a trade (default 0.02)",
    )
    p.add_argument("--price-rate", type=count, default=20, help="price steps per second")
    p.add_argument(
        "--signal-rate",
        type=float,
        default=0.02,
        help="chance of a signal per position profile and signal step, 10 a second",
    )
    p.add_argument(
        "--unsafe-no-dedupe",
        action="store_true",
        help="switch the runtime's exactly-once protections off: the drill must fail",
    )
    p.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the worker logs and sent-order log here (default: a temporary directory, "
        "removed unless the drill fails)",
    )
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    add_observability_arguments(
        p,
        what="each worker incarnation (the same port every time)",
        logs_to="each worker's stderr (its log in the drill directory)",
    )


def add_parser(sub: Any) -> None:
    """Register ``capflow drill``."""
    p = sub.add_parser(
        "drill",
        help="crash drill: kill -9 the runtime, restart Redis, check no fill is lost or doubled",
        description=__doc__.split("\n\n")[0],
    )
    add_arguments(p)
    p.set_defaults(func=main)


# -- running -----------------------------------------------------------------------------------
def options_from(args: argparse.Namespace, workdir: Path) -> Options:
    """The drill's options from parsed flags (ValueError for an impossible combination)."""
    grids = args.profiles // 4 if args.grids is None else args.grids
    config = DrillConfig(
        profiles=args.profiles,
        grids=grids,
        seed=args.seed,
        duplicate_rate=args.duplicate_rate,
        price_rate=max(1, args.price_rate),
        signal_rate=args.signal_rate,
    )
    crashes = max(1, args.kills) if args.actor_crashes is None else args.actor_crashes
    return Options(
        config=config,
        duration=args.duration,
        kills=args.kills,
        boot_kill_share=args.boot_kill_share,
        actor_crashes=crashes,
        crash_batch=max(1, args.crash_batch),
        supervisor_crashes=args.supervisor_crashes,
        redis_restarts=args.redis_restarts,
        unsafe_no_dedupe=args.unsafe_no_dedupe,
        workdir=workdir,
        observability=tuple(observability_args(args)),
    )


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so that the drill's cleanup runs either way."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(args: argparse.Namespace) -> int:
    """Run the drill; print a summary; write the report."""
    console = Console(stderr=True)
    own_workdir = args.workdir is None
    try:
        options = options_from(args, Path())
    except ValueError as exc:
        console.print(f"capflow drill: {exc}")
        return EXIT_USAGE
    workdir = Path(tempfile.mkdtemp(prefix="capflow-drill-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    options = dataclasses.replace(options, workdir=workdir)
    started = time.monotonic()
    aborted: str | None = None
    progress = Progress(
        TextColumn("[bold]drill[/]"),
        BarColumn(bar_width=24),
        TextColumn("{task.completed:>5.0f}/{task.total:.0f} s load"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=args.no_progress,
    )
    task = progress.add_task("drill", total=options.duration, status="starting")

    def on_progress(load: float, tally: Tally, line: str) -> None:
        status = (
            f"kills {tally.kills}/{options.kills} · actor crashes {tally.actor_crashes}"
            f" · checks {len(tally.checks)} · fills "
            f"{tally.checks[-1].fills_on_exchange if tally.checks else 0}"
        )
        progress.update(task, completed=min(load, options.duration), status=status)
        # A worker's metrics URL is shown even without progress: port 0 differs every time.
        if line and (not args.no_progress or " metrics: " in line):
            progress.console.log(line)

    drill = Drill(options, on_progress)
    try:
        with _terminate_as_interrupt(), progress:
            drill.run()
    except KeyboardInterrupt:
        aborted = "interrupted"
    except DrillAborted as exc:
        aborted = str(exc)
    report = build_report(options, drill, time.monotonic() - started, aborted)
    if args.report is not None:
        write_report(args.report, report)
    console.print(summary_line(report))
    if report["exit_code"] == EXIT_OK and own_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    elif report["exit_code"] != EXIT_OK:
        console.print(f"drill directory (worker logs, sent orders): {workdir}")
    code: int = report["exit_code"]
    return code
