"""One check of the crash drill: the committed books against the exchange's record and the oracle.

Run while the exchange's price driver is paused and the worker has quiesced (its feed is empty
and its runtime drained), so the books are meant to be exactly the exchange's record. The books
checked are the **committed snapshots** read straight from Redis (``RedisStore.load_many``),
rebuilt with the profiles' own handler code — what a restart would recover — not what the
worker's memory says; the worker's live books are compared with them separately.

Per profile, with ``T`` the exchange's trades whose client order id is the profile's
(:func:`capflow.run_verify.owner`) and ``A`` the trade ids its snapshot has applied (a position
ledger's ``applied_trade_ids``, a grid book's ``trade_ids``; under the drill's unsafe mode a
re-applied fill is recorded as ``<trade id>~<suffix>``, so ``A`` is a multiset of trade ids):

* **lost**: a trade in ``T`` that is not in ``A``;
* **duplicated**: a trade in ``T`` that is in ``A`` more than once;
* **phantom**: a trade id in ``A`` that is not in ``T`` (the books applied a fill the exchange
  has no record of for this profile);
* **mismatched**: the oracle (:func:`capflow.run_verify.verify`, which recomputes every
  profile's totals, positions, reservations and PnL from ``T``, the open orders and the orders
  the signals asked for, with no ledger code) disagrees with the books, or a phantom was found,
  or the live books differ from the snapshot, or the profile has no snapshot;
* **invariant violations**: a snapshot whose books do not add up (checked on load), a profile
  halted for an invariant violation, or the exchange's own books not adding up.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capflow.drill_world import DrillWorld, Recovered, SentLog, plain
from capflow.run_verify import differences, owner, verify
from exchange import Order, RemoteExchange, Trade
from messages import FundInvariantViolation
from persistence import RedisStore

#: Example lines kept per profile (counts are always complete).
_EXAMPLES = 5


@dataclass(slots=True, kw_only=True)
class CheckResult:
    """What one check found. Pairs are ``(profile id, trade id)``."""

    label: str
    fills_on_exchange: int = 0
    fills_applied: int = 0
    lost: set[tuple[str, str]] = field(default_factory=set)
    duplicated: set[tuple[str, str]] = field(default_factory=set)
    phantom: set[tuple[str, str]] = field(default_factory=set)
    mismatches: dict[str, list[str]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    unattributed: list[str] = field(default_factory=list)
    halted: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.phantom
            or self.mismatches
            or self.violations
            or self.unattributed
        )

    def mismatch(self, profile_id: str, line: str) -> None:
        lines = self.mismatches.setdefault(profile_id, [])
        if len(lines) < _EXAMPLES:
            lines.append(line)

    def summary(self) -> dict[str, Any]:
        """Plain figures for the report."""
        return {
            "label": self.label,
            "ok": self.ok,
            "fills_on_exchange": self.fills_on_exchange,
            "fills_applied": self.fills_applied,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "phantom": len(self.phantom),
            "mismatched_profiles": len(self.mismatches),
            "invariant_violations": len(self.violations),
            "unattributed_trades": len(self.unattributed),
            "halted_profiles": len(self.halted),
            "seconds": round(self.seconds, 3),
        }


def check(
    label: str,
    world: DrillWorld,
    store: RedisStore,
    exchange: RemoteExchange,
    *,
    workdir: Path,
    live_books: Mapping[str, Any] | None,
) -> CheckResult:
    """Check every profile's committed books (see the module docstring)."""
    started = time.monotonic()
    result = CheckResult(label=label)
    trades = exchange.fetch_my_trades()
    open_orders = exchange.fetch_open_orders()
    result.fills_on_exchange = len(trades)
    try:
        exchange.check_invariants()
    except FundInvariantViolation as exc:
        result.violations.append(f"exchange: {exc}")
    profiles = world.verifier_profiles()
    by_profile, open_by_profile = _by_profile(world, trades, open_orders, result)
    snapshots = store.load_many(world.profile_ids)
    books: dict[str, dict[str, Any]] = {}
    for pid in world.profile_ids:
        snapshot = snapshots.get(pid)
        if snapshot is None:
            result.mismatch(pid, "no committed snapshot")
            continue
        try:
            recovered = world.books_from_state(pid, snapshot.state)
        except FundInvariantViolation as exc:
            result.violations.append(f"{pid}: {exc}")
            continue
        books[pid] = recovered.books
        _compare_trades(result, pid, recovered, by_profile[pid])
        _compare_open_orders(result, pid, recovered, open_by_profile[pid])
        if recovered.halted is not None:
            result.halted[pid] = recovered.halted
            if recovered.halted.startswith("invariant violation"):
                result.violations.append(f"{pid}: halted: {recovered.halted}")
        if live_books is not None:
            live = live_books.get(pid)
            if live is None:
                result.mismatch(pid, "not live in the worker")
            else:
                for line in differences(live, plain(recovered.summary)):
                    result.mismatch(pid, f"live vs snapshot: {line}")
    oracle = verify(books, trades, open_orders, SentLog.read_all(workdir), profiles)
    for pid, lines in oracle.mismatches.items():
        if pid in books:  # a missing snapshot is reported above
            for line in lines:
                result.mismatch(pid, f"oracle: {line}")
    for pid in sorted(result.mismatches)[:_EXAMPLES]:
        snapshot = snapshots.get(pid)
        result.evidence[pid] = {
            "trades": by_profile.get(pid, []),
            "open_orders": sorted(open_by_profile.get(pid, ())),
            "snapshot_offset": None if snapshot is None else snapshot.offset,
            "snapshot_state": None if snapshot is None else snapshot.state,
            "recomputed": oracle.recomputed.get(pid),
        }
    result.seconds = time.monotonic() - started
    return result


def _by_profile(
    world: DrillWorld, trades: list[Trade], open_orders: list[Order], result: CheckResult
) -> tuple[dict[str, list[Trade]], dict[str, set[str]]]:
    """Each profile's trades and open client order ids, by client order id alone."""
    profiles = world.verifier_profiles()
    by_profile: dict[str, list[Trade]] = {pid: [] for pid in world.profile_ids}
    for trade in trades:
        pid = owner(trade["clientOrderId"], profiles)
        if pid is None:
            result.unattributed.append(trade["id"])
        else:
            by_profile[pid].append(trade)
    open_by_profile: dict[str, set[str]] = {pid: set() for pid in world.profile_ids}
    for order in open_orders:
        pid = owner(order["clientOrderId"], profiles)
        if pid is not None:
            open_by_profile[pid].add(order["clientOrderId"])
    return by_profile, open_by_profile


def _compare_trades(
    result: CheckResult, profile_id: str, recovered: Recovered, trades: list[Trade]
) -> None:
    applied = collections.Counter(tid.split("~", 1)[0] for tid in recovered.applied)
    result.fills_applied += sum(applied.values())
    on_exchange = {trade["id"] for trade in trades}
    for tid in sorted(on_exchange):
        times = applied.get(tid, 0)
        if times == 0:
            result.lost.add((profile_id, tid))
            result.mismatch(profile_id, f"trade {tid} on the exchange is not in the books")
        elif times > 1:
            result.duplicated.add((profile_id, tid))
            result.mismatch(profile_id, f"trade {tid} applied {times} times")
    for tid in sorted(set(applied) - on_exchange):
        result.phantom.add((profile_id, tid))
        result.mismatch(profile_id, f"applied trade {tid} is not the exchange's for this profile")


def _compare_open_orders(
    result: CheckResult, profile_id: str, recovered: Recovered, on_exchange: set[str]
) -> None:
    """Name the orders behind an ``open_orders`` mismatch (the oracle only counts them)."""
    orphans = sorted(on_exchange - recovered.open_orders)
    if orphans:
        result.mismatch(profile_id, f"open on the exchange, unknown to the books: {orphans}")
    gone = sorted(recovered.open_orders - on_exchange)
    if gone:
        result.mismatch(profile_id, f"open in the books, not on the exchange: {gone}")
