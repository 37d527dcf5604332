"""``capflow loadtest``: throughput, latency, memory and start time of many position profiles.

P position profiles on one simulated account; fills (synthesized for known resting orders, see
:mod:`capflow.loadtest_world`) and a share of signals are submitted at ``--rate`` messages per
second, paced in batches, or as fast as the runtime applies them (``--max``: a closed loop with
at most ``--window`` messages outstanding). The run is bounded by ``--duration`` and
``--max-messages`` and ends with a ``drain``: every message applied and checkpointed. Then every
profile's books are compared with an exact model of what was sent, and the figures are printed
and written (``--report``). Baselines measured in the same run, on the same machine, put the
figures in proportion: raw pykka ``tell`` to one actor and, with Redis, pipelined ``XADD``.

Exit status: 0 when the books match and no invariant broke; 1 otherwise; 2 for bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from capflow.argtypes import count
from capflow.loadtest_micro import micro
from capflow.loadtest_report import REPORT_KEYS, plot_loadtest, summary_table
from capflow.loadtest_run import Options, UsageError, run_loadtest
from capflow.plot import plot_available
from capflow.report import write_report
from capflow.run_observe import add_observability_arguments

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


# -- command line ------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1), got {text}")
    return value


def _store(text: str) -> str:
    if text in ("memory", "redis") or text.startswith(("redis://", "rediss://", "unix://")):
        return text
    raise argparse.ArgumentTypeError(
        f"expected memory, redis (a server of our own) or a redis:// URL, got {text!r}"
    )


def add_parser(sub: Any) -> None:
    """Register ``capflow loadtest``."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "loadtest",
        help="throughput, latency, memory and start time of many profiles; books verified",
        description="Run P position profiles on one simulated account under a load of fills"
        " and signals (--rate R per second, or --max), then verify every profile's books"
        " against an exact model of what was sent. Reports fills/s, latency percentiles,"
        " RSS, CPU and start time, next to raw pykka tell (and Redis XADD) baselines.",
        epilog="exit status: 0 books verified; 1 a mismatch or a broken invariant; 2 bad input",
    )
    add_arguments(parser)
    parser.set_defaults(func=main)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The load test's flags (shared with ``scripts/loadtest.py``)."""
    defaults = Options()
    parser.add_argument(
        "--profiles",
        type=_positive_int,
        default=defaults.profiles,
        metavar="P",
        help="position profiles (default %(default)s)",
    )
    parser.add_argument(
        "--duration",
        type=_positive_float,
        default=defaults.duration,
        metavar="S",
        help="seconds of load, before the final drain (default %(default)s)",
    )
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--rate",
        type=_positive_float,
        metavar="R",
        help="fills + signals per second, paced in 5 ms batches",
    )
    pace.add_argument(
        "--max",
        action="store_true",
        help="as fast as the runtime applies them (the default): at most --window outstanding",
    )
    parser.add_argument(
        "--window",
        type=_positive_int,
        default=defaults.window,
        metavar="N",
        help="--max: messages submitted but not yet applied, at most (default %(default)s)",
    )
    parser.add_argument(
        "--max-messages",
        type=_positive_int,
        default=defaults.max_messages,
        metavar="N",
        help="stop after this many messages even if time is left (default %(default)s)",
    )
    parser.add_argument(
        "--signal-share",
        type=_share,
        default=defaults.signal_share,
        metavar="X",
        help="share of messages that are signals (default %(default)s)",
    )
    parser.add_argument(
        "--store",
        type=_store,
        default="memory",
        metavar="STORE",
        help="memory (default: in-memory checkpoints); redis (durable mode on a"
        " redis-server of our own, AOF everysec) or a redis:// URL",
    )
    parser.add_argument(
        "--baselines",
        choices=["pykka", "all", "none"],
        default=defaults.baselines,
        help="pykka: raw tell to one actor and spread over min(P, 1000) actors (default);"
        " all: also pipelined XADD to a Redis of our own (always with a Redis store); none",
    )
    parser.add_argument(
        "--baseline-messages",
        type=_positive_int,
        default=defaults.baseline_messages,
        metavar="N",
        help="messages per baseline (default %(default)s)",
    )
    parser.add_argument(
        "--stack-kb",
        type=_positive_int,
        metavar="KB",
        help="threading.stack_size for the actor threads (default: the OS default)",
    )
    parser.add_argument(
        "--switch-interval",
        type=_positive_float,
        metavar="S",
        help="sys.setswitchinterval for the run (default: Python's 0.005); see"
        " docs/performance.md: with many actor threads, a longer interval avoids a storm of"
        " GIL wake-ups",
    )
    parser.add_argument(
        "--dispatch-threads",
        type=count,
        default=defaults.dispatch_threads,
        metavar="N",
        help="threads that run the profile actors (default %(default)s); 0: one thread per"
        " profile, pykka.ThreadingActor",
    )
    add_observability_arguments(parser, what="the load test's runtime", logs=False)
    parser.add_argument(
        "--cprofile",
        type=Path,
        metavar="PSTATS",
        help="profile every thread with cProfile (slows the run 2-3x) and dump the stats",
    )
    parser.add_argument(
        "--micro",
        action="store_true",
        help="instead: the CPU cost of one fill's parts, on one thread without actors",
    )
    parser.add_argument("--report", type=Path, metavar="JSON", help="write the report here")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="plot throughput and latency")
    parser.add_argument("--no-progress", action="store_true", help="no live progress line")


def options_from(args: argparse.Namespace) -> Options:
    """:class:`Options` from parsed flags."""
    return Options(
        profiles=args.profiles,
        duration=args.duration,
        rate=args.rate,
        window=args.window,
        max_messages=args.max_messages,
        signal_share=args.signal_share,
        store=args.store,
        baselines=args.baselines,
        baseline_messages=args.baseline_messages,
        stack_kb=args.stack_kb,
        switch_interval=args.switch_interval,
        dispatch_threads=args.dispatch_threads,
        metrics_port=args.metrics_port,
        cprofile=args.cprofile,
    )


def main(args: argparse.Namespace) -> int:
    """Run ``capflow loadtest`` with parsed ``args``; returns the exit status."""
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)
    errors = Console(stderr=True)
    if args.plot is not None and not plot_available():
        errors.print(
            "capflow loadtest: error: --plot needs matplotlib (pip install 'capflow[plot]')"
        )
        return EXIT_USAGE
    if args.micro:
        figures = micro()
        table = Table(title="capflow loadtest --micro: one thread, no actors", show_header=False)
        table.add_column("operation")
        table.add_column("us", justify="right")
        for name, value in figures.items():
            table.add_row(name, f"{value:.2f}")
        console.print(table)
        if args.report is not None:
            write_report(args.report, figures)
        return EXIT_OK
    try:
        report = run_loadtest(options_from(args), console if not args.no_progress else None)
    except UsageError as exc:
        errors.print(f"capflow loadtest: error: {exc}", markup=False, highlight=False)
        return EXIT_USAGE
    except TimeoutError as exc:
        errors.print(f"capflow loadtest: FAILED: {exc}", markup=False, highlight=False)
        return EXIT_FAILED
    console.print(summary_table(report))
    if report.get("cprofile"):
        console.print(report["cprofile"]["top"], markup=False, highlight=False)
    for line in report["problems"][:10]:
        errors.print(f"[bold red]PROBLEM[/] {line}", highlight=False)
    if args.report is not None:
        write_report(args.report, report)
        console.print(f"report: {args.report}")
    if args.plot is not None:
        plot_loadtest(report, args.plot)
        console.print(f"plot: {args.plot}")
    code: int = report["exit_code"]
    return code


__all__ = ["REPORT_KEYS", "Options", "UsageError", "add_arguments", "main", "run_loadtest"]
