"""What ``capflow run`` shows and writes: the live table, the summary, and the JSON report.

Amounts stay exact ``int`` minor units in the report; Decimals are written as strings, and the
tables only format them (major units) for reading.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from capflow.driver import Sample
from messages import Asset, Market

#: Keys every report has (the tests check them).
REPORT_KEYS = (
    "books",
    "dead_letters",
    "duplicates_ignored",
    "duration_s",
    "fills_applied",
    "fills_on_exchange",
    "invariant_violations",
    "mismatched_profiles",
    "orders_placed",
    "profiles",
    "rejections_by_reason",
    "reservations_rejected",
    "seed",
)


def plain(value: Any) -> Any:
    """``json.dumps`` default: Decimals (and enums, sets) as exact strings; nothing else."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} {value!r} has no exact JSON form")


def write_report(path: Path, report: Mapping[str, Any]) -> None:
    """Write ``report`` as JSON (ints stay ints, Decimals become strings)."""
    text = json.dumps(report, indent=2, sort_keys=True, default=plain, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")


def _amount(asset: Asset, units: int | None) -> str:
    if units is None:
        return "-"
    return f"{asset.to_decimal(units):,.{asset.precision}f}"


def _grid_cells(market: Market, books: Mapping[str, Any]) -> tuple[str, str, str]:
    funds = books.get("funds", {})
    lines = []
    for which in ("available", "committed"):
        parts = [
            f"{_amount(asset, funds.get(asset.symbol, {}).get(which))} {asset.symbol}"
            for asset in (market.base, market.quote)
        ]
        lines.append("\n".join(parts))
    return lines[0], lines[1], "-"


def _position_cells(market: Market, books: Mapping[str, Any]) -> tuple[str, str, str]:
    quote = market.quote
    committed = books.get("reserved_for_orders", 0) + books.get("reserved_for_positions", 0)
    return (
        f"{_amount(quote, books.get('available'))} {quote.symbol}",
        f"{_amount(quote, committed)} {quote.symbol}",
        f"{_amount(quote, books.get('realized_pnl'))} {quote.symbol}",
    )


def books_table(market: Market, books: Mapping[str, Mapping[str, Any]], title: str) -> Table:
    """One row per profile: kind, available, committed, realized PnL, open orders, state."""
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("profile")
    table.add_column("kind")
    table.add_column("available", justify="right")
    table.add_column("committed", justify="right")
    table.add_column("realized PnL", justify="right")
    table.add_column("open orders", justify="right")
    table.add_column("state")
    for pid, b in books.items():
        if b.get("kind") == "grid":
            cells = _grid_cells(market, b)
            orders = b.get("open_orders", 0)
        else:
            cells = _position_cells(market, b)
            orders = b.get("pending_orders", 0)
        state = "HALTED" if b.get("halted") else "ok"
        table.add_row(pid, str(b.get("kind")), *cells, str(orders), state)
    return table


def progress_view(market: Market, sample: Sample, duration: float) -> Group:
    """The live view: the books of every profile and the running totals."""
    totals = Text(
        f"t = {sample.elapsed:5.1f} / {duration:g} s   price {sample.price}   "
        f"fills applied {sample.fills_applied:,}   fills/s {sample.fills_per_s:,.0f}   "
        f"duplicates ignored {sample.duplicates:,}   rejections {sample.rejections:,}"
    )
    return Group(books_table(market, sample.books, "capflow run: live books"), totals)


def summary_table(report: Mapping[str, Any]) -> Table:
    """The run's figures, one per row."""
    table = Table(title="capflow run: summary", title_justify="left", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, Any]] = [
        ("profiles", report["profiles"]),
        ("seed", report["seed"]),
        ("duration (s)", f"{report['duration_s']:.2f}"),
        ("price steps", report["steps"]),
        ("fills on the exchange", report["fills_on_exchange"]),
        ("fills applied", report["fills_applied"]),
        ("fills/s", f"{report['fills_per_s']:,.0f}"),
        ("duplicate deliveries ignored", report["duplicates_ignored"]),
        ("orders placed", report["orders_placed"]),
        ("reservations rejected", report["reservations_rejected"]),
        ("dead letters", report["dead_letters"]),
        ("invariant violations", report["invariant_violations"]),
        ("mismatched profiles", report["mismatched_profiles"]),
        ("unattributed trades", report["unattributed_trades"]),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    for kind, reasons in sorted(report["rejections_by_reason"].items()):
        for reason, count in sorted(reasons.items()):
            table.add_row(f"  {kind}: {reason}", str(count))
    return table
