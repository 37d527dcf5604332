"""After each step: what the runtime looks like (for ``expect``), and every invariant it breaks.

:func:`observe` turns the settled runtime into one plain nested dict, the shape ``expect``
steps address (``profiles.p1.ledger.available``, ``exchange.open_orders``, ...). Amounts are
:class:`Money` so that expectations can be written in minor or major units. Rebuilding each
profile's books from its state re-runs their exact invariant checks; together with the
exchange's own checks, ``InvariantViolated`` events and "the checkpoint equals the live books
after a drain", those are the invariants every step must keep.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from accounting import GridBook, OrderStatus, PositionLedger
from capflow.scenario_expect import Money
from capflow.scenario_spec import GridDef, PositionDef, Scenario
from capflow.scenario_world import World
from messages import Asset, CapflowError, Market, Side

LEDGER_AMOUNTS = (
    "allocated_capital",
    "reserved_for_orders",
    "reserved_for_positions",
    "realized_pnl",
    "fees_paid",
    "available",
)
FUND_FIELDS = (
    "total",
    "free",
    "committed",
    "virtual",
    "in_flight",
    "available",
    "cache_funds",
    "fees_owed",
    "fee_reservation",
)


@dataclass(slots=True)
class Observation:
    """The runtime after a step: ``data`` for expectations, ``states`` for marks, ``problems``
    for the invariants it breaks."""

    data: dict[str, Any]
    states: dict[str, dict[str, Any] | None]
    problems: list[str] = field(default_factory=list)


def _position_view(profile: PositionDef, state: Mapping[str, Any]) -> dict[str, Any]:
    ledger = PositionLedger.from_state(state)  # re-checks every invariant of the books
    quote = ledger.quote
    summary = ledger.summary()
    view: dict[str, Any] = {name: Money(summary[name], quote) for name in LEDGER_AMOUNTS}
    view |= {k: summary[k] for k in ("halted", "pending_orders", "open_positions")}
    markets = ledger.markets
    return {
        "halted": ledger.halted,
        "ledger": view,
        "positions": {
            pid: {
                "symbol": p.symbol,
                "qty": Money(p.qty, markets[p.symbol].base),
                "cost": Money(p.cost, quote),
            }
            for pid, p in ledger.positions.items()
        },
        "orders": {
            cid: {
                "symbol": o.symbol,
                "side": o.side.value,
                "position_id": o.position_id,
                "qty": Money(o.qty, markets[o.symbol].base),
                "filled_qty": Money(o.filled_qty, markets[o.symbol].base),
                "reserved": Money(o.reserved, quote),
                "limit_price": o.limit_price,
            }
            for cid, o in ledger.orders.items()
        },
    }


def _grid_view(profile: GridDef, state: Mapping[str, Any]) -> dict[str, Any]:
    book_state = state.get("book")
    if book_state is None:
        return {"halted": state.get("halted") is not None}
    book = GridBook.from_state(book_state)  # re-checks every invariant of the books
    config = book.config
    assets = {a.symbol: a for a in (config.market.base, config.market.quote)}
    orders = book.orders

    def sold(side: Side | None) -> Asset:
        return config.asset_sold(side) if side is not None else config.market.quote

    slots = {}
    for slot in book.slots:
        order = orders.get(slot.order_id) if slot.order_id is not None else None
        side = order.side if order is not None else slot.role.side
        slots[slot.index] = {
            "state": slot.state.value,
            "role": slot.role.value,
            "size": Money(slot.size, sold(side)),
            "order_id": slot.order_id,
            "exchange_id": None if order is None else order.exchange_id,
            "in_flight": slot.in_flight,
            "price": slot.price,
        }
    funds = book.recalculate_funds()
    return {
        "halted": state.get("halted") is not None,
        "boundary": book.boundary,
        "open_orders": sum(1 for o in orders.values() if o.status is OrderStatus.OPEN),
        "funds": {
            asset: {
                name: Money(f.available if name == "available" else getattr(f, name), assets[asset])
                for name in FUND_FIELDS
            }
            for asset, f in funds.items()
        },
        "slots": slots,
        "orders": {
            oid: {
                "status": o.status.value,
                "exchange_id": o.exchange_id,
                "slot": o.slot,
                "side": o.side.value,
                "price": o.price,
                "size": Money(o.size, sold(o.side)),
                "qty": Money(o.qty, config.market.base),
                "remaining": Money(o.remaining, sold(o.side)),
                "filled_qty": Money(o.filled_qty, config.market.base),
            }
            for oid, o in orders.items()
        },
        "done": dict(book.done_orders),
    }


def _exchange_view(world: World) -> dict[str, Any]:
    exchange = world.exchange
    markets: dict[str, Market] = world.scenario.markets
    state = exchange.to_state()["book"]
    orders = {}
    for o in state["orders"]:
        market = markets[o["symbol"]]
        orders[o["clientOrderId"]] = {
            "id": o["id"],
            "status": o["status"],
            "side": o["side"],
            "price": None if o["type"] == "market" else Decimal(o["price"]),
            "amount": Money(o["amount"], market.base),
            "filled": Money(o["filled"], market.base),
            "remaining": Money(o["amount"] - o["filled"], market.base),
            "cost": Money(o["cost"], market.quote),
        }
    balance = exchange.fetch_balance()
    assets = world.scenario.assets
    return {
        "open_orders": sorted(o["clientOrderId"] for o in exchange.fetch_open_orders()),
        "orders": orders,
        "balance": {
            asset: {
                part: Money(balance[part][asset], assets[asset])
                for part in ("free", "used", "total")
            }
            for asset in balance["total"]
            if asset in assets
        },
    }


def observe(world: World) -> Observation:
    """Observe the settled runtime and check every invariant."""
    scenario: Scenario = world.scenario
    info = world.runtime.inspect()
    states = world.states()
    problems: list[str] = []
    try:
        world.exchange.check_invariants()
    except CapflowError as exc:
        problems.append(f"exchange: {exc}")
    profiles: dict[str, Any] = {}
    for profile in scenario.profiles:
        pid = profile.id
        sup = info["profiles"][pid]
        view: dict[str, Any] = {
            "status": sup["status"],
            "incarnation": sup["incarnation"],
            "restarts": sup["restarts"],
            "queued": sup["log"],
            "trades": world.recorder.trades(pid),
            "events": world.recorder.counts(pid),
        }
        state = states[pid]
        if state is not None:
            try:
                if isinstance(profile, PositionDef):
                    view |= _position_view(profile, state)
                else:
                    view |= _grid_view(profile, state)
            except CapflowError as exc:
                problems.append(f"profile {pid}: its books do not rebuild: {exc}")
            checkpoint = world.store.load(pid)
            if checkpoint is not None and checkpoint.state != state:
                problems.append(
                    f"profile {pid}: the checkpoint (seq {checkpoint.seq}) differs from the"
                    " live books after a drain"
                )
        profiles[pid] = view
    problems += world.recorder.violations()
    letters = info["dead_letters"]
    data = {
        "profiles": profiles,
        "exchange": _exchange_view(world),
        "events": world.recorder.counts(),
        "dead_letters": {
            "count": len(letters),
            "list": [[d.profile_id, type(d.payload).__name__] for d in letters],
        },
        "parked": info["parked"],
    }
    return Observation(data=data, states=states, problems=problems)


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def differences(before: Any, after: Any, path: str = "", limit: int = 3) -> list[str]:
    """Up to ``limit`` paths where two plain-data states differ, with both values."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        out: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in before or key not in after:
                old, new = before.get(key, "absent"), after.get(key, "absent")
                out.append(f"{sub}: {_short(old)} -> {_short(new)}")
            else:
                out += differences(before[key], after[key], sub, limit - len(out))
            if len(out) >= limit:
                break
        return out[:limit]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out = []
        for i, (a, b) in enumerate(zip(before, after, strict=True)):
            out += differences(a, b, f"{path}[{i}]", limit - len(out))
            if len(out) >= limit:
                break
        return out[:limit]
    return [] if before == after else [f"{path or '(state)'}: {_short(before)} -> {_short(after)}"]
