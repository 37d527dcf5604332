"""``capflow run``: the main job. Many profiles, one simulated account, books checked at the end.

N grid profiles and M signal-driven position profiles share one account of a simulated exchange
(maker/taker fees, partial fills, duplicate fill deliveries, request latency). A driver moves
the price for ``--duration`` seconds, pumps the exchange's fills into the runtime and fires
signals; then every profile's books are recomputed from the exchange's trade record and
compared with the runtime's (:mod:`capflow.run_verify`).

Exit status: 0 when every book matches and no invariant broke; 1 when something did not add
up; 2 for bad input (flags, a malformed ``--prices`` file, an impossible setup).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from accounting import GridBook, PositionLedger
from capflow.argtypes import count
from capflow.driver import Driver, FillCounter, PricePath, Sample
from capflow.plot import plot_available, plot_funds
from capflow.report import books_table, progress_view, summary_table, write_report
from capflow.run_observe import Observer, add_observability_arguments
from capflow.run_setup import DEFAULT_START, Setup, World, build_world, price_tick
from capflow.run_signals import SignalGenerator
from capflow.run_verify import Profiles, Verification, verify
from exchange import load_csv
from messages import FundInvariantViolation, InputError
from persistence import MemoryStore

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: Mismatch lines printed per profile (the report has them all).
_SHOWN = 5


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 86400], got {text}")
    return value


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds, got {text!r}") from None
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"expected milliseconds in (0, 1000], got {text}")
    return value


def _ratio(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not value.is_finite() or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def add_parser(sub: Any) -> None:
    """Register ``capflow run``."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="the main job: grid and signal profiles on one simulated account, books verified",
        description="Run N grid and M signal-driven position profiles on one simulated exchange"
        " account (maker/taker fees, partial fills, duplicate fill deliveries, latency) for"
        " --duration seconds, then recompute every profile's books from the exchange's trade"
        " record and compare them with the runtime's.",
        epilog="exit status: 0 books verified; 1 a mismatch or a broken invariant; 2 bad input",
    )
    parser.add_argument(
        "--grid-profiles",
        type=count,
        default=4,
        metavar="N",
        help="grid profiles (default %(default)s)",
    )
    parser.add_argument(
        "--signal-profiles",
        type=count,
        default=4,
        metavar="M",
        help="position profiles (default %(default)s)",
    )
    parser.add_argument(
        "--duration",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="wall-clock seconds (default %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="K",
        help="seeds the exchange, prices, signals (default %(default)s)",
    )
    parser.add_argument(
        "--prices",
        type=Path,
        metavar="CSV",
        help="replay these prices ('timestamp,price' or 'price' rows), looping (default: a"
        " seeded random walk)",
    )
    parser.add_argument("--report", type=Path, metavar="JSON", help="write the report here")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="plot the funds over time")
    parser.add_argument("--no-progress", action="store_true", help="no live table")
    parser.add_argument(
        "--step-ms",
        type=_milliseconds,
        default=2.0,
        metavar="MS",
        help="driver step interval (default %(default)s)",
    )
    parser.add_argument(
        "--max-steps",
        type=count,
        metavar="N",
        help="stop after N price steps even if --duration is not over (default: no limit)",
    )
    parser.add_argument(
        "--duplicate-rate",
        type=_ratio,
        default=Setup().duplicate_rate,
        metavar="R",
        help="chance that the fill feed delivers a trade twice (default %(default)s)",
    )
    add_observability_arguments(parser)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``capflow run`` with parsed ``args``; returns the exit status."""
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)  # a log file or pipe: room for the tables
    errors = Console(stderr=True)
    if args.grid_profiles + args.signal_profiles == 0:
        errors.print("capflow run: error: no profiles (--grid-profiles + --signal-profiles is 0)")
        return EXIT_USAGE
    try:
        replay = None
        if args.prices is not None:
            replay = [point.price for point in load_csv(args.prices)]
        setup = Setup(
            grid_profiles=args.grid_profiles,
            signal_profiles=args.signal_profiles,
            seed=args.seed,
            start_price=replay[0] if replay else DEFAULT_START,
            duplicate_rate=args.duplicate_rate,
        )
        observer = Observer.from_args(args)
        timed = {} if observer.metrics is None else {"store": observer.store(MemoryStore())}
        world = build_world(setup, **timed)
        observer.listen(world.events)
    except (InputError, OSError) as exc:
        errors.print(f"capflow run: error: {exc}", markup=False, highlight=False)
        return EXIT_USAGE
    if args.plot is not None and not plot_available():
        errors.print("capflow run: error: --plot needs matplotlib (pip install 'capflow[plot]')")
        return EXIT_USAGE
    live = not args.no_progress and console.is_terminal
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(observer.serving(lambda: world.runtime))
        except OSError as exc:
            errors.print(f"capflow run: error: --metrics-port: {exc}", markup=False)
            return EXIT_USAGE
        if url is not None:
            console.print(f"metrics: {url}", markup=False, highlight=False)
        outcome = _execute(args, world, replay, live=live, console=console, errors=errors)
    if outcome is None:
        return EXIT_FAILED
    report, samples = outcome
    return _conclude(args, world, setup, report, samples, console=console, errors=errors)


def _execute(
    args: argparse.Namespace,
    world: World,
    replay: list[Decimal] | None,
    *,
    live: bool,
    console: Console,
    errors: Console,
) -> tuple[dict[str, Any], list[Sample]] | None:
    """:func:`execute` with the flags; None (and a line on ``errors``) if it timed out."""
    try:
        return execute(
            world,
            replay=replay,
            duration=args.duration,
            step_interval=args.step_ms / 1000,
            max_steps=args.max_steps,
            sample=live or args.plot is not None,
            console=console if live else None,
        )
    except TimeoutError as exc:  # the runtime did not settle: nothing can be verified
        errors.print(f"capflow run: FAILED: {exc}", markup=False, highlight=False)
        return None


def _conclude(
    args: argparse.Namespace,
    world: World,
    setup: Setup,
    report: dict[str, Any],
    samples: list[Sample],
    *,
    console: Console,
    errors: Console,
) -> int:
    """Print the books and the verdict, write the report and the plot; the exit status."""
    report["price_source"] = str(args.prices) if args.prices is not None else "random_walk"
    console.print(books_table(world.market, report["books"], "capflow run: final books"))
    console.print(summary_table(report))
    for pid, problems in sorted(report["mismatches"].items()):
        errors.print(f"[bold red]MISMATCH[/] {pid}: {len(problems)} difference(s)")
        for line in problems[:_SHOWN]:
            errors.print(f"  {line}", markup=False, highlight=False)
    if report["exchange_invariants"] != "ok":
        errors.print(f"[bold red]EXCHANGE INVARIANT[/] {report['exchange_invariants']}")
    if args.report is not None:
        write_report(args.report, report)
        console.print(f"report: {args.report}")
    if args.plot is not None:
        title = (
            f"capflow run: {len(world.grids)} grid + {len(world.positions)} position"
            f" profiles, seed {setup.seed}, {report['duration_s']:.0f} s,"
            f" {report['fills_applied']:,} fills"
        )
        grids, positions = list(world.grids), list(world.positions)
        plot_funds(samples, world.market, grids, positions, args.plot, title=title)
        console.print(f"plot: {args.plot}")
    failed = report["exit_code"] != EXIT_OK
    verdict = "[bold red]FAILED[/]" if failed else "[bold green]books verified[/]"
    console.print(
        f"{verdict}: {report['mismatched_profiles']} mismatched profile(s),"
        f" {report['invariant_violations']} invariant violation(s)"
    )
    code: int = report["exit_code"]
    return code


def execute(
    world: World,
    *,
    replay: list[Decimal] | None,
    duration: float,
    step_interval: float = 0.002,
    max_steps: int | None = None,
    sample: bool = False,
    console: Console | None = None,
) -> tuple[dict[str, Any], list[Sample]]:
    """Start the runtime, drive it, verify the books, stop it; returns the report and samples.

    With a ``console``, a live table is shown on it while the driver runs.
    """
    setup = world.setup
    tick = price_tick(setup.start_price)
    fills = FillCounter()
    signals = SignalGenerator(
        {pid: cfg.allocated_capital for pid, cfg in world.positions.items()},
        world.market,
        seed=setup.seed,
        tick=tick,
    )
    world.events.subscribe(fills.on_event)
    world.events.subscribe(signals.on_event)
    world.exchange.advance(setup.start_price)
    runtime = world.runtime.start()
    try:
        runtime.drain()  # the grids have placed their first orders
        live = (
            Live(console=console, refresh_per_second=4)
            if console is not None
            else contextlib.nullcontext()
        )
        with live as shown:
            on_sample: Callable[[Sample], None] | None = None
            if isinstance(shown, Live):

                def on_sample(s: Sample, view: Live = shown) -> None:
                    view.update(progress_view(world.market, s, duration))

            prices: Iterator[Decimal] = PricePath(
                seed=setup.seed, start=setup.start_price, tick=tick, replay=replay
            )
            driver = Driver(
                world,
                prices,
                signals,
                fills,
                duration=duration,
                step_interval=step_interval,
                max_steps=max_steps,
                sample_every=0.25 if sample else 0.0,
                on_sample=on_sample,
            )
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop early, still verify
                driver.run()
        driver.finish()
        if sample:
            driver.sample(driver.stats.elapsed)
        books, problems = collect_books(world)
        verification = verify(
            books,
            world.exchange.fetch_my_trades(),
            world.exchange.fetch_open_orders(),
            signals.sent,
            profiles_of(world),
        )
        for pid, found in problems.items():
            verification.mismatches.setdefault(pid, []).extend(found)
        report = build_report(world, driver, fills, books, verification)
    finally:
        runtime.stop()
    return report, driver.stats.samples


def profiles_of(world: World) -> Profiles:
    """What the verifier needs to know of the world's profiles."""
    return Profiles(
        market=world.market,
        grids={pid: world.initial_totals(pid) for pid in world.grids},
        positions={pid: cfg.allocated_capital for pid, cfg in world.positions.items()},
        max_fee_rate=max(world.setup.maker_fee, world.setup.taker_fee),
    )


def collect_books(world: World) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Every live profile's books, and where a profile's checkpoint disagrees with them.

    The live summaries come from the profiles (``Runtime.books``); the open positions of a
    position profile, which its summary only counts, come from its checkpoint. After
    ``drain`` the checkpoint must describe exactly the live books, which is checked too.
    """
    live = world.runtime.books()
    books: dict[str, dict[str, Any]] = {}
    problems: dict[str, list[str]] = {}
    for pid in world.profile_ids:
        summary = live.get(pid)
        checkpoint = world.runtime.store.load(pid)
        if summary is None or checkpoint is None:
            continue
        books[pid] = dict(summary)
        if world.kind(pid) == "position":
            ledger = PositionLedger.from_state(checkpoint.state)
            books[pid]["positions"] = {
                pos_id: {"qty": ledger.positions[pos_id].qty, "cost": ledger.positions[pos_id].cost}
                for pos_id in sorted(ledger.positions)
            }
            live_part, saved_part = summary, {"kind": "position", **ledger.summary()}
        else:
            book_state = checkpoint.state.get("book")
            funds = (
                {} if book_state is None else GridBook.from_state(book_state).recalculate_funds()
            )
            live_part = summary.get("funds", {})
            saved_part = {
                asset: {key: getattr(funds[asset], key) for key in parts}
                for asset, parts in live_part.items()
                if asset in funds
            }
        if saved_part != live_part:
            problems[pid] = [f"checkpoint {saved_part} disagrees with the live books {live_part}"]
    return books, problems


def build_report(
    world: World,
    driver: Driver,
    fills: FillCounter,
    books: dict[str, dict[str, Any]],
    verification: Verification,
) -> dict[str, Any]:
    """The run's figures as plain, exact data (see :data:`capflow.report.REPORT_KEYS`)."""
    exchange, events = world.exchange, world.events
    counts = events.counts()
    try:
        exchange.check_invariants()
        exchange_invariants = "ok"
    except FundInvariantViolation as exc:
        exchange_invariants = str(exc)
    inspect = world.runtime.inspect()
    applied, duplicates = fills.snapshot()
    stats = driver.stats
    violations = counts.get("InvariantViolated", 0) + (exchange_invariants != "ok")
    mismatched = len(verification.mismatches)
    failed = violations or mismatched or verification.unattributed
    return {
        "profiles": len(world.profile_ids),
        "grid_profiles": len(world.grids),
        "signal_profiles": len(world.positions),
        "seed": world.setup.seed,
        "duration_s": round(stats.elapsed, 3),
        "steps": stats.steps,
        "last_price": driver.price,
        "signals": stats.signals,
        "oversized_signals": driver.signals.oversized,
        "trades_delivered": stats.trades_delivered,
        "fills_on_exchange": len(exchange.fetch_my_trades()),
        "fills_applied": applied,
        "fills_per_s": round(applied / stats.elapsed, 1) if stats.elapsed > 0 else 0.0,
        "duplicates_ignored": duplicates,
        "orders_placed": counts.get("OrderAccepted", 0),
        "orders_rejected": counts.get("OrderRejected", 0),
        "fills_rejected": counts.get("FillRejected", 0),
        "reservations_rejected": counts.get("ReservationRejected", 0),
        "rejections_by_reason": events.reasons(),
        "invariant_violations": violations,
        "exchange_invariants": exchange_invariants,
        "dead_letters": len(inspect["dead_letters"]),
        "parked_messages": inspect["parked"],
        "mismatched_profiles": mismatched,
        "mismatches": verification.mismatches,
        "unattributed_trades": len(verification.unattributed),
        "account": {
            "initial": world.balances,
            "final": exchange.fetch_balance()["total"],
            "fees_collected": exchange.fees_collected(),
        },
        "books": books,
        "recomputed": verification.recomputed,
        "exit_code": EXIT_FAILED if failed else EXIT_OK,
    }
