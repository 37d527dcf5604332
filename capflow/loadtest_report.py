"""What ``capflow loadtest`` shows and writes: the live line, the summary table, the plot.

Figures are measurements (floats are fine here: rates, milliseconds, megabytes); the books
themselves were checked exactly before any of this is printed.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

#: Keys every load-test report has (the tests check them).
REPORT_KEYS = (
    "baselines",
    "cpu_percent",
    "fill_commit_latency_ms",
    "fill_latency_ms",
    "fills_applied",
    "fills_per_second",
    "fills_sent",
    "invariant_violations",
    "profiles",
    "ratio_vs_pykka_tell",
    "ratio_vs_redis_xadd",
    "rss_per_1000_profiles_mb",
    "signal_latency_ms",
    "signals_decided",
    "signals_per_second",
    "signals_sent",
    "start_s",
    "window_s",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """Running totals at ``elapsed`` seconds into the load."""

    elapsed: float
    fills_sent: int
    fills_applied: int
    signals_sent: int
    signals_decided: int

    def as_row(self) -> list[float | int]:
        return [
            round(self.elapsed, 3),
            self.fills_sent,
            self.fills_applied,
            self.signals_sent,
            self.signals_decided,
        ]


def progress_line(sample: Sample, duration: float) -> Text:
    """The live line: time, fills sent/applied, outstanding, signals."""
    rate = sample.fills_applied / sample.elapsed if sample.elapsed > 0 else 0.0
    outstanding = sample.fills_sent - sample.fills_applied
    return Text(
        f"t = {sample.elapsed:5.1f} / {duration:g} s   fills sent {sample.fills_sent:,}"
        f"   applied {sample.fills_applied:,} ({rate:,.0f}/s)   outstanding {outstanding:,}"
        f"   signals {sample.signals_decided:,}/{sample.signals_sent:,}"
    )


def _latency(figures: Mapping[str, Any] | None) -> str:
    if not figures:
        return "-"
    return (
        f"p50 {figures['p50']:.2f}  p99 {figures['p99']:.2f}  p999 {figures['p999']:.2f}"
        f"  max {figures['max']:.2f}  (n={figures['count']:,})"
    )


def _maybe(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def summary_table(report: Mapping[str, Any]) -> Table:
    """The run's figures, one per row."""
    mode = report["mode"] if report["mode"] == "max" else f"rate {report['rate_target']:,.0f}/s"
    table = Table(title="capflow loadtest", title_justify="left", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    baselines = report["baselines"]
    rows: list[tuple[str, Any]] = [
        ("profiles / store / mode", f"{report['profiles']:,} / {report['store']} / {mode}"),
        ("start (start + first drain), s", f"{report['start_s']:.3f}"),
        ("resting orders placed in, s", f"{report['preplace_s']:.3f}"),
        ("RSS before / after start / end, MB", _rss(report)),
        ("RSS per 1,000 profiles, MB", f"{report['rss_per_1000_profiles_mb']:.1f}"),
        ("load + drain window, s", f"{report['window_s']:.2f} (drain {report['drain_s']:.2f})"),
        ("fills sent / applied", f"{report['fills_sent']:,} / {report['fills_applied']:,}"),
        ("fills/s (applied and committed)", f"{report['fills_per_second']:,.0f}"),
        ("signals sent / decided", f"{report['signals_sent']:,} / {report['signals_decided']:,}"),
        ("signals/s", f"{report['signals_per_second']:,.0f}"),
        ("fill submit -> FillApplied event, ms", _latency(report["fill_latency_ms"])),
        ("fill submit -> checkpoint saved, ms", _latency(report["fill_commit_latency_ms"])),
        ("signal -> decision, ms", _latency(report["signal_latency_ms"])),
        ("CPU % (of one core)", f"{report['cpu_percent']:.0f} ({report['cpu_count']} cores)"),
        ("load generator CPU, s", f"{report['generator_cpu_s']:.2f}"),
        ("runtime CPU per fill, us", _maybe(report.get("runtime_cpu_us_per_fill"), ".1f")),
        ("baseline: pykka tell, 1 actor, msg/s", _maybe(baselines.get("pykka_tell_per_s"), ",.0f")),
        ("baseline: Redis pipelined XADD/s", _maybe(baselines.get("redis_xadd_per_s"), ",.0f")),
        ("ratio vs pykka tell", _maybe(report["ratio_vs_pykka_tell"], ".3f")),
        ("ratio vs Redis XADD", _maybe(report["ratio_vs_redis_xadd"], ".3f")),
        ("Redis commands per fill", _maybe(report.get("redis_commands_per_fill"), ".2f")),
        ("recovery: 2nd runtime start + drain, s", _maybe(report.get("recovery_s"), ".3f")),
        ("GIL switch interval, s", f"{report['switch_interval_s']:g}"),
        ("dispatch threads (0: one per profile)", str(report.get("dispatch_threads", "-"))),
        ("invariant violations", report["invariant_violations"]),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def _rss(report: Mapping[str, Any]) -> str:
    return (
        f"{report['rss_before_mb']:.0f} / {report['rss_after_start_mb']:.0f}"
        f" / {report['rss_end_mb']:.0f}"
    )


def plot_loadtest(report: Mapping[str, Any], path: Path) -> None:
    """Write a PNG: fills/s sent and applied over time, and the latency percentiles.

    Raises:
        ImportError: matplotlib is not installed.
    """
    # An optional extra (capflow[plot]): imported only when a plot is asked for.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = report["samples"]
    fig, (ax_rate, ax_lat) = plt.subplots(1, 2, figsize=(14, 5))
    for column, label in ((1, "fills sent/s"), (2, "fills applied/s")):
        times, rates = [], []
        for before, after in itertools.pairwise(rows):
            dt = after[0] - before[0]
            if dt > 0:
                times.append(after[0])
                rates.append((after[column] - before[column]) / dt)
        ax_rate.plot(times, rates, label=label)
    baseline = report["baselines"].get("pykka_tell_per_s")
    if baseline:
        ax_rate.axhline(0.7 * baseline, color="grey", linestyle="--", label="0.7 x pykka tell")
    ax_rate.set_xlabel("seconds since the load started")
    ax_rate.set_ylabel("per second")
    ax_rate.set_title(f"{report['profiles']:,} profiles, {report['store']} store")
    ax_rate.legend()
    ax_rate.grid(True, alpha=0.3)

    names = ["p50", "p99", "p999", "max"]
    series = [
        ("fill -> FillApplied", report["fill_latency_ms"]),
        ("fill -> checkpoint saved", report["fill_commit_latency_ms"]),
        ("signal -> decision", report["signal_latency_ms"]),
    ]
    width = 0.25
    for i, (label, figures) in enumerate(series):
        if figures:
            xs = [j + (i - 1) * width for j in range(len(names))]
            ax_lat.bar(xs, [figures[n] for n in names], width, label=label)
    ax_lat.set_xticks(range(len(names)), names)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("ms")
    ax_lat.set_title("latency")
    ax_lat.legend()
    ax_lat.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
