"""End-of-run verification: every profile's books recomputed from the exchange's own record.

The exchange's ``fetch_my_trades()`` is the authority. Each trade is attributed to a profile by
its client order id alone (position orders are ``<prefix>-<profile>-<signal>``, grid orders
``<profile>-g<slot>-<seq>``), and the books are recomputed from scratch with nothing but the
trades, the exchange's open orders, the profiles' starting amounts and the orders the driver's
signals asked for. No ledger or grid code is used, so a bug there cannot hide itself.

Grid, per asset: ``total = initial + Σ deltas`` (buy: base += qty, quote -= cost; sell:
base -= qty, quote += cost; then the fee's asset -= fee); ``open_orders`` = the profile's orders
open on the exchange.

Position: trades in exchange order; an entry adds ``qty`` (less a base fee) and ``cost`` (plus
a quote fee) to its position; an exit releases ``cost_basis * qty // position_qty`` (the whole
basis on the last slice) and books ``cost - fee - released`` as realized PnL. An entry still
open on the exchange keeps ``estimate - Σ min(consumed, still reserved)`` reserved, where the
estimate is ``ceil(qty * limit) + ceil(that * max_fee_rate)``. Then ``available`` follows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from capflow.run_signals import SentOrder
from exchange import Order, Trade
from messages import Market, Rounding, Side, fee_for

_GRID_ID = re.compile(r"^(?P<profile>.+)-g\d+-\d+$")
_POSITION_ID = re.compile(r"^(?P<prefix>[^-]+)-(?P<profile>.+)-(?P<signal>[^-]+)$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Profiles:
    """What the verifier knows of the profiles, fixed before the run.

    Attributes:
        market: the market traded.
        grids: grid profile id -> initial totals per asset.
        positions: position profile id -> allocated capital (quote units).
        max_fee_rate: the position profiles' entry estimates cover this fee rate.
        order_prefix: the position profiles' client order id prefix.
    """

    market: Market
    grids: Mapping[str, Mapping[str, int]]
    positions: Mapping[str, int]
    max_fee_rate: Decimal
    order_prefix: str = "cf"


@dataclass(slots=True, kw_only=True)
class Verification:
    """The outcome: the recomputed books and, per profile, what disagrees."""

    recomputed: dict[str, dict[str, Any]] = field(default_factory=dict)
    mismatches: dict[str, list[str]] = field(default_factory=dict)
    unattributed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.unattributed


def owner(client_order_id: str, profiles: Profiles) -> str | None:
    """The profile a client order id belongs to, from the id alone (None if no profile's)."""
    grid = _GRID_ID.match(client_order_id)
    if grid is not None and grid["profile"] in profiles.grids:
        return grid["profile"]
    position = _POSITION_ID.match(client_order_id)
    if (
        position is not None
        and position["prefix"] == profiles.order_prefix
        and position["profile"] in profiles.positions
    ):
        return position["profile"]
    return None


def recompute_grid(
    initial: Mapping[str, int], trades: Iterable[Trade], open_orders: int, market: Market
) -> dict[str, Any]:
    """A grid profile's per-asset totals from its starting amounts and its trades."""
    total = dict(initial)
    base, quote = market.base.symbol, market.quote.symbol
    for trade in trades:
        sign = 1 if trade["side"] == Side.BUY else -1
        total[base] = total.get(base, 0) + sign * trade["amount"]
        total[quote] = total.get(quote, 0) - sign * trade["cost"]
        fee = trade["fee"]
        total[fee["currency"]] = total.get(fee["currency"], 0) - fee["cost"]
    return {"kind": "grid", "total": dict(sorted(total.items())), "open_orders": open_orders}


def entry_reservation(market: Market, qty: int, limit: Decimal, max_fee_rate: Decimal) -> int:
    """What an entry reserves: its notional rounded up plus the largest fee, rounded up."""
    notional = market.notional(qty, limit, Rounding.UP)
    return notional + fee_for(notional, max_fee_rate, Rounding.UP)


def recompute_position(
    allocated: int,
    trades: Iterable[Trade],
    sent: Mapping[str, SentOrder],
    open_orders: Mapping[str, Order],
    profiles: Profiles,
) -> tuple[dict[str, Any], list[str]]:
    """A position profile's books from its trades; also the trades it could not explain."""
    market, quote = profiles.market, profiles.market.quote.symbol
    positions: dict[str, list[int]] = {}  # position id -> [qty, cost basis]
    reserved: dict[str, int] = {}  # entry client order id -> still reserved
    realized = fees_paid = 0
    problems: list[str] = []

    def estimate(order: SentOrder) -> int:
        assert order.qty is not None  # entries always carry their qty
        return entry_reservation(market, order.qty, order.limit_price, profiles.max_fee_rate)

    for trade in trades:
        cid, tid, fee = trade["clientOrderId"], trade["id"], trade["fee"]
        order = sent.get(cid)
        if order is None:
            problems.append(f"trade {tid} is for order {cid}, which no signal asked for")
            continue
        if fee["currency"] == quote:
            fees_paid += fee["cost"]
        if trade["side"] == Side.BUY:
            fee_in_base = fee["currency"] == market.base.symbol
            consumed = trade["cost"] + (0 if fee_in_base else fee["cost"])
            held = positions.setdefault(order.position_id, [0, 0])
            held[0] += trade["amount"] - (fee["cost"] if fee_in_base else 0)
            held[1] += consumed
            left = reserved.setdefault(cid, estimate(order))
            reserved[cid] = left - min(consumed, left)
            continue
        held_or_none = positions.get(order.position_id)
        if held_or_none is None or trade["amount"] > held_or_none[0] or fee["currency"] != quote:
            problems.append(f"exit trade {tid} of {cid} does not fit position {order.position_id}")
            continue
        qty, cost = held_or_none
        released = cost if trade["amount"] == qty else cost * trade["amount"] // qty
        realized += trade["cost"] - fee["cost"] - released
        if trade["amount"] == qty:
            del positions[order.position_id]
        else:
            positions[order.position_id] = [qty - trade["amount"], cost - released]
    for cid, order in sent.items():
        if cid in open_orders and order.side is Side.BUY:
            reserved.setdefault(cid, estimate(order))
    for_orders = sum(v for cid, v in reserved.items() if cid in open_orders)
    for_positions = sum(cost for _, cost in positions.values())
    books = {
        "kind": "position",
        "allocated_capital": allocated,
        "realized_pnl": realized,
        "fees_paid": fees_paid,
        "reserved_for_orders": for_orders,
        "reserved_for_positions": for_positions,
        "available": allocated - for_orders - for_positions + realized,
        "pending_orders": len(open_orders),
        "positions": {
            pid: {"qty": qty, "cost": cost} for pid, (qty, cost) in sorted(positions.items())
        },
    }
    return books, problems


def comparable(books: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a profile's runtime books the recomputation covers, in its shape."""
    if books.get("kind") == "grid":
        funds = books.get("funds", {})
        return {
            "kind": "grid",
            "total": {asset: f.get("total") for asset, f in sorted(funds.items())},
            "open_orders": books.get("open_orders"),
        }
    keys = (
        "allocated_capital",
        "realized_pnl",
        "fees_paid",
        "reserved_for_orders",
        "reserved_for_positions",
        "available",
        "pending_orders",
        "positions",
    )
    return {"kind": books.get("kind"), **{key: books.get(key) for key in keys}}


def differences(books: Any, expected: Any, path: str = "") -> list[str]:
    """Every leaf where ``books`` and ``expected`` differ, as ``path: books X, recomputed Y``."""
    if isinstance(books, Mapping) and isinstance(expected, Mapping):
        out: list[str] = []
        for key in sorted(set(books) | set(expected), key=str):
            where = f"{path}.{key}" if path else str(key)
            out += differences(books.get(key), expected.get(key), where)
        return out
    same = type(books) is type(expected) and books == expected
    return [] if same else [f"{path}: books {books!r}, recomputed {expected!r}"]


def verify(
    books: Mapping[str, Mapping[str, Any]],
    trades: Iterable[Trade],
    open_orders: Iterable[Order],
    sent: Mapping[str, SentOrder],
    profiles: Profiles,
) -> Verification:
    """Recompute every profile's books and compare them with ``books`` (the runtime's).

    Args:
        books: per profile, the runtime's books: the summary, plus for position profiles a
            ``positions`` mapping (position id -> ``{"qty", "cost"}``).
        trades: the exchange's trade record, in its order.
        open_orders: the exchange's open orders.
        sent: the orders the signals asked for, by client order id.
        profiles: the profiles' fixed facts.
    """
    result = Verification()
    by_profile: dict[str, list[Trade]] = {p: [] for p in [*profiles.grids, *profiles.positions]}
    for trade in trades:
        pid = owner(trade["clientOrderId"], profiles)
        if pid is None:
            result.unattributed.append(trade["id"])
        else:
            by_profile[pid].append(trade)
    open_by_profile: dict[str, dict[str, Order]] = {p: {} for p in by_profile}
    for order in open_orders:
        pid = owner(order["clientOrderId"], profiles)
        if pid is not None:
            open_by_profile[pid][order["clientOrderId"]] = order
    for pid, initial in profiles.grids.items():
        result.recomputed[pid] = recompute_grid(
            initial, by_profile[pid], len(open_by_profile[pid]), profiles.market
        )
    for pid, allocated in profiles.positions.items():
        mine = {cid: order for cid, order in sent.items() if order.profile_id == pid}
        result.recomputed[pid], problems = recompute_position(
            allocated, by_profile[pid], mine, open_by_profile[pid], profiles
        )
        if problems:
            result.mismatches[pid] = problems
    for pid, expected in result.recomputed.items():
        got = books.get(pid)
        found = ["no books (profile not live)"] if got is None else []
        if got is not None:
            found = differences(comparable(got), expected)
        if found:
            result.mismatches.setdefault(pid, []).extend(found)
    return result
