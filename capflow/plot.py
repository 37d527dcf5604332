"""``capflow run --plot``: each profile's funds over the run, from the driver's samples.

Floats appear here only, for drawing: the samples hold exact ints, converted to major units
at the last moment. matplotlib is an optional extra (``capflow[plot]``) and imported lazily.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from capflow.driver import Sample
from messages import Asset, Market


def plot_available() -> bool:
    """Whether matplotlib (the ``plot`` extra) is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def _funds(books: Mapping[str, Any] | None, asset: Asset, which: str) -> float:
    """A profile's ``available`` or ``committed`` units of ``asset``, in major units."""
    if books is None:
        return float("nan")
    if books.get("kind") == "grid":
        units = books.get("funds", {}).get(asset.symbol, {}).get(which)
    elif which == "available":
        units = books.get("available")
    else:
        units = books.get("reserved_for_orders", 0) + books.get("reserved_for_positions", 0)
    return float("nan") if units is None else float(asset.to_decimal(units))


def plot_funds(
    samples: Sequence[Sample],
    market: Market,
    grids: Sequence[str],
    positions: Sequence[str],
    path: Path,
    *,
    title: str,
) -> None:
    """Write a PNG: the price, then available (solid) and committed (dashed) per profile.

    Raises:
        ImportError: matplotlib is not installed (see :func:`plot_available`).
    """
    # An optional extra (capflow[plot]): imported only when a plot is asked for.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    base, quote = market.base, market.quote
    t = [s.elapsed for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(14, 9), sharex=True)
    (ax_price, ax_pos), (ax_gq, ax_gb) = axes
    ax_price.plot(t, [float(s.price) for s in samples], color="black", linewidth=1.2)
    ax_price.set_title(f"{market.symbol} price")
    ax_price.set_ylabel(quote.symbol)

    panels = [
        (ax_pos, positions, quote, "position profiles"),
        (ax_gq, grids, quote, "grid profiles"),
        (ax_gb, grids, base, "grid profiles"),
    ]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, pids, asset, what in panels:
        for i, pid in enumerate(pids):
            color = colors[i % len(colors)]
            for which, style in (("available", "-"), ("committed", "--")):
                ax.plot(
                    t,
                    [_funds(s.books.get(pid), asset, which) for s in samples],
                    color=color,
                    linestyle=style,
                    label=f"{pid} {which}",
                )
        ax.set_title(f"{what}: {asset.symbol} available (solid) / committed (dashed)")
        ax.set_ylabel(asset.symbol)
        if pids:
            ax.legend(fontsize="small", ncol=2, loc="best")
        else:
            ax.text(0.5, 0.5, "none in this run", ha="center", va="center", transform=ax.transAxes)
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("seconds since start")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
