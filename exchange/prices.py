"""Price paths for the simulated exchange: a seeded random walk, or a user's CSV file.

Prices are exact ``Decimal`` values; nothing here goes through ``float``.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Literal

from messages import InvalidMessage, check_price, check_ratio

#: Resolution of the random walk's uniform step, in parts of ``vol``.
_GRID = 10_000
_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


@dataclass(frozen=True, slots=True, kw_only=True)
class PricePoint:
    """One price of a path, with its timestamp in nanoseconds when the source had one."""

    price: Decimal
    ts_ns: int | None = None


def random_walk(
    seed: int, start: Decimal, steps: int, vol: Decimal, *, tick: Decimal = Decimal("0.01")
) -> list[Decimal]:
    """``steps`` prices following ``start``: each one moves the previous by a factor
    ``1 + vol * u``, ``u`` uniform on ``[-1, 1]`` (on a grid of 1/10,000), quantized to a
    multiple of ``tick`` (half-even) and never below one tick.

    Deterministic: the same arguments give the same list on every platform (``Decimal``
    arithmetic in a local context with 34 digits, ``random.Random(seed).randint``).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidMessage(f"seed must be an int, got {seed!r}")
    check_price(start, name="start")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InvalidMessage(f"steps must be an int >= 0, got {steps!r}")
    check_ratio(vol, name="vol", low=Decimal(0), high=Decimal(1))
    check_price(tick, name="tick")
    rng = random.Random(seed)
    path: list[Decimal] = []
    with localcontext() as ctx:
        ctx.prec = 34
        ctx.rounding = ROUND_HALF_EVEN
        price = _quantize(start, tick)
        for _ in range(steps):
            move = vol * Decimal(rng.randint(-_GRID, _GRID)) / _GRID
            price = max(tick, _quantize(price * (1 + move), tick))
            path.append(price)
    return path


def _quantize(price: Decimal, tick: Decimal) -> Decimal:
    return (price / tick).to_integral_value(rounding=ROUND_HALF_EVEN) * tick


def load_csv(path: str | Path, *, unit: Literal["s", "ms", "us", "ns"] = "ns") -> list[PricePoint]:
    """Read a price path from a CSV file.

    Two layouts: ``timestamp,price`` rows, or one price per line; an optional header row
    (``timestamp,price`` or ``price``) names the layout, else the first row decides it.
    Timestamps are non-negative integers in ``unit``, non-decreasing; prices are positive,
    finite decimals. Blank lines and lines starting with ``#`` are skipped.

    Raises:
        InvalidMessage: on the first malformed row, naming the file and its line number;
            also for a file with no prices or that is not UTF-8 text.
        OSError: the file cannot be opened.
    """
    if unit not in _UNIT_NS:
        raise InvalidMessage(f"unit must be one of {sorted(_UNIT_NS)}, got {unit!r}")
    scale = _UNIT_NS[unit]
    points: list[PricePoint] = []
    columns: int | None = None
    with open(path, encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file, strict=True)
        try:
            for row in reader:
                cells = [cell.strip() for cell in row]
                if not any(cells) or cells[0].startswith("#"):
                    continue
                where = f"{path}, line {reader.line_num}"
                if columns is None:
                    header = [cell.lower() for cell in cells]
                    if header in (["timestamp", "price"], ["price"]):
                        columns = len(header)
                        continue
                    columns = len(cells)
                    if columns not in (1, 2):
                        raise InvalidMessage(
                            f"{where}: expected 'timestamp,price' or 'price', got {len(cells)}"
                            f" columns: {row!r}"
                        )
                if len(cells) != columns:
                    layout = "timestamp,price" if columns == 2 else "price"
                    raise InvalidMessage(
                        f"{where}: expected {columns} column(s) ({layout}), got {len(cells)}:"
                        f" {row!r}"
                    )
                ts_ns = None
                if columns == 2:
                    ts_ns = _timestamp(cells[0], where) * scale
                    previous = points[-1].ts_ns if points else None
                    if previous is not None and ts_ns < previous:
                        raise InvalidMessage(
                            f"{where}: timestamp {cells[0]} goes back in time"
                            f" (previous row is later)"
                        )
                points.append(PricePoint(price=_price(cells[-1], where), ts_ns=ts_ns))
        except UnicodeDecodeError as exc:
            raise InvalidMessage(f"{path}: not UTF-8 text ({exc.reason})") from None
        except csv.Error as exc:
            raise InvalidMessage(f"{path}, line {reader.line_num}: {exc}") from None
    if not points:
        raise InvalidMessage(f"{path}: no prices")
    return points


def _timestamp(text: str, where: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise InvalidMessage(f"{where}: timestamp must be a non-negative integer, got {text!r}")
    return int(text)


def _price(text: str, where: str) -> Decimal:
    try:
        price = Decimal(text)
    except InvalidOperation:
        raise InvalidMessage(f"{where}: price must be a decimal number, got {text!r}") from None
    if not price.is_finite() or price <= 0:
        raise InvalidMessage(f"{where}: price must be positive and finite, got {text!r}")
    return price
