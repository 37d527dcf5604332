"""Invariants and plain-data state of a grid book.

:func:`violations` lists every way the books fail to add up (exactly, no tolerance);
:func:`book_to_state` / :func:`book_from_state` convert a book to and from plain data (ints,
strs, bools, None, lists, dicts; Decimals as strings) that round-trips to an equal book.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, TypeVar

from accounting.grid import GridConfig, Role, exchange_qty, role_of
from accounting.grid_records import (
    AssetFunds,
    Balance,
    GridOrder,
    OrderStatus,
    PendingRotation,
    Slot,
    SlotState,
)
from messages import (
    Asset,
    CapflowError,
    CorruptSnapshot,
    FundInvariantViolation,
    Market,
    Side,
)

if TYPE_CHECKING:
    from accounting.grid_view import GridView

#: Version of the plain-data layout written by :func:`book_to_state`.
STATE_VERSION = 1

B = TypeVar("B", bound="GridView")
T = TypeVar("T")


def _fund_problems(funds: AssetFunds) -> list[str]:
    problems = []
    parts = {
        "committed": funds.committed,
        "virtual": funds.virtual,
        "in_flight": funds.in_flight,
        "cache_funds": funds.cache_funds,
        "fees_owed": funds.fees_owed,
    }
    problems += [f"{name} is negative" for name, value in parts.items() if value < 0]
    if funds.total != funds.free + funds.committed:
        problems.append("total != free + committed")
    if funds.virtual + funds.in_flight > funds.free:
        problems.append("virtual + in_flight > free")
    if funds.available > funds.free:
        problems.append("available > free")
    if funds.cache_funds > funds.free:
        problems.append("cache_funds > free")
    owners = funds.owners()
    if any(value < 0 for value in owners.values()) or sum(owners.values()) != funds.total:
        problems.append(f"owners {owners} do not sum to total")
    return problems


def _slot_problems(book: GridView) -> list[str]:
    geo, orders, slots = book.geometry, book.orders, book.slots
    problems = []
    if len(slots) != geo.size:
        return [f"{len(slots)} slots, the config has {geo.size} levels"]
    if not 0 <= book.boundary <= geo.size - geo.gap:
        problems.append(f"boundary {book.boundary} outside [0, {geo.size - geo.gap}]")
    for i, slot in enumerate(slots):
        if slot.index != i or slot.price != geo.prices[i]:
            problems.append(f"slot {i} is slot {slot.index} at {slot.price}")
        if slot.role is not role_of(i, book.boundary, geo.gap):
            problems.append(f"slot {i} has role {slot.role} with boundary {book.boundary}")
        if slot.order_id is None:
            if slot.role is Role.SPREAD and slot.size:
                problems.append(f"spread slot {i} is VIRTUAL with size {slot.size}")
            continue
        order = orders.get(slot.order_id)
        want = OrderStatus.IN_FLIGHT if slot.in_flight else OrderStatus.OPEN
        if order is None or order.slot != i or order.status is not want:
            problems.append(f"slot {i} holds order {slot.order_id}, which is {order}")
        elif (slot.size != order.remaining) or (slot.state is SlotState.PARTIAL) != (
            order.filled_qty > 0
        ):
            problems.append(f"slot {i} ({slot.state}, size {slot.size}) disagrees with {order}")
    return problems


def _order_problems(book: GridView) -> list[str]:
    market, slots, orders = book.config.market, book.slots, book.orders
    problems = []
    for oid, order in orders.items():
        if oid != order.order_id or oid in book.done_orders:
            problems.append(f"order {oid} is filed as {order.order_id} or also closed")
        if order.qty != exchange_qty(market, order.side, order.size, order.price):
            problems.append(f"order {oid} asks for qty {order.qty} for size {order.size}")
        if order.slot is not None and (
            order.slot >= len(slots) or slots[order.slot].order_id != oid
        ):
            problems.append(f"order {oid} claims slot {order.slot}, which does not hold it")
    targets: set[int] = set()
    for oid, pending in book.pending_rotations.items():
        canceling = orders.get(oid)
        if (
            canceling is None
            or canceling.status is not OrderStatus.CANCELING
            or canceling.side != pending.side
        ):
            problems.append(f"rotation of {oid} waits on {canceling}")
        if pending.slot >= len(slots) or pending.slot in targets:
            problems.append(f"rotation of {oid} targets slot {pending.slot} (taken or missing)")
        if pending.client_order_id in orders or pending.client_order_id in book.done_orders:
            problems.append(f"rotation of {oid} reuses id {pending.client_order_id}")
        targets.add(pending.slot)
    return problems


def violations(book: GridView) -> list[str]:
    """Every invariant the book breaks, each naming what and every component involved."""
    problems = _slot_problems(book) + _order_problems(book)
    funds = book.recalculate_funds()
    if sorted(funds) != sorted(book.config.market_symbols()):
        problems.append(f"balances for {sorted(funds)}, expected {book.config.market_symbols()}")
    for asset, asset_funds in funds.items():
        found = _fund_problems(asset_funds)
        if found:
            problems.append(f"asset {asset}: {', '.join(found)} ({asset_funds.describe()})")
    return problems


def check_book(book: GridView) -> None:
    """Raise :class:`FundInvariantViolation` listing every violation, if any."""
    problems = violations(book)
    if problems:
        raise FundInvariantViolation(
            f"grid profile {book.profile_id} breaks its invariants: {'; '.join(problems)}"
        )


# ------------------------------------------------------------------------------ state


_DECIMAL_FIELDS = (
    "center_price",
    "increment",
    "target_spread",
    "min_price",
    "max_price",
    "weight_ratio",
    "dust_ratio",
    "min_target_ratio",
)
_PLAIN_FIELDS = (
    "active_orders",
    "budget_base",
    "budget_quote",
    "price_decimals",
    "op_fee",
    "op_fee_asset",
    "fee_reservation_ops",
)


def _asset_state(asset: Asset) -> dict[str, Any]:
    return {"symbol": asset.symbol, "precision": asset.precision}


def config_to_state(config: GridConfig) -> dict[str, Any]:
    """Plain data of a grid config."""
    market = config.market
    return {
        "market": {
            "symbol": market.symbol,
            "base": _asset_state(market.base),
            "quote": _asset_state(market.quote),
        },
        **{name: str(getattr(config, name)) for name in _DECIMAL_FIELDS},
        **{name: getattr(config, name) for name in _PLAIN_FIELDS},
    }


def _order_state(order: GridOrder) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "exchange_id": order.exchange_id,
        "slot": order.slot,
        "side": order.side.value,
        "price": str(order.price),
        "size": order.size,
        "qty": order.qty,
        "remaining": order.remaining,
        "filled_qty": order.filled_qty,
        "status": order.status.value,
    }


def book_to_state(book: GridView) -> dict[str, Any]:
    """Plain data of a book; :func:`book_from_state` rebuilds an equal book from it."""
    return {
        "version": STATE_VERSION,
        "profile_id": book.profile_id,
        "config": config_to_state(book.config),
        "boundary": book.boundary,
        "next_seq": book.next_seq,
        "slots": [
            {
                "index": s.index,
                "price": str(s.price),
                "role": s.role.value,
                "state": s.state.value,
                "size": s.size,
                "order_id": s.order_id,
                "in_flight": s.in_flight,
            }
            for s in book.slots
        ],
        "orders": [_order_state(book.orders[oid]) for oid in sorted(book.orders)],
        "balances": {
            asset: {
                "total": bal.total,
                "free": bal.free,
                "cache_funds": bal.cache_funds,
                "fees_owed": bal.fees_owed,
            }
            for asset, bal in sorted(book.balances.items())
        },
        "trade_ids": book.trade_id_list(),
        "done_orders": dict(sorted(book.done_orders.items())),
        "pending_rotations": [
            {
                "cancel_order_id": p.cancel_order_id,
                "side": p.side.value,
                "slot": p.slot,
                "size": p.size,
                "client_order_id": p.client_order_id,
            }
            for _, p in sorted(book.pending_rotations.items())
        ],
    }


def _typed(value: object, kind: type[T], what: str) -> T:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CorruptSnapshot(f"{what} must be {kind.__name__}, got {value!r}")
    return value


def _dec(value: object, what: str) -> Decimal:
    return Decimal(_typed(value, str, what))


def config_from_state(data: Mapping[str, Any]) -> GridConfig:
    """Rebuild a grid config from :func:`config_to_state` data."""
    m = data["market"]
    market = Market(
        symbol=m["symbol"],
        base=Asset(symbol=m["base"]["symbol"], precision=m["base"]["precision"]),
        quote=Asset(symbol=m["quote"]["symbol"], precision=m["quote"]["precision"]),
    )
    decimals: dict[str, Any] = {name: _dec(data[name], name) for name in _DECIMAL_FIELDS}
    plain: dict[str, Any] = {name: data[name] for name in _PLAIN_FIELDS}
    return GridConfig(market=market, **decimals, **plain)


def _order_from_state(o: Mapping[str, Any]) -> GridOrder:
    return GridOrder(
        order_id=o["order_id"],
        exchange_id=o["exchange_id"],
        slot=o["slot"],
        side=Side(o["side"]),
        price=_dec(o["price"], "order price"),
        size=o["size"],
        qty=o["qty"],
        remaining=o["remaining"],
        filled_qty=o["filled_qty"],
        status=OrderStatus(o["status"]),
    )


def book_from_state(cls: type[B], state: Mapping[str, Any]) -> B:
    """Rebuild a book of class ``cls``; any defect raises :class:`CorruptSnapshot`."""
    try:
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            version = state.get("version") if isinstance(state, Mapping) else state
            raise CorruptSnapshot(f"grid state version {version!r} is not {STATE_VERSION}")
        slots = [
            Slot(
                index=s["index"],
                price=_dec(s["price"], "slot price"),
                role=Role(s["role"]),
                state=SlotState(s["state"]),
                size=s["size"],
                order_id=s["order_id"],
                in_flight=s["in_flight"],
            )
            for s in _typed(state["slots"], list, "slots")
        ]
        orders = [_order_from_state(o) for o in _typed(state["orders"], list, "orders")]
        pending = [
            PendingRotation(
                cancel_order_id=p["cancel_order_id"],
                side=Side(p["side"]),
                slot=p["slot"],
                size=p["size"],
                client_order_id=p["client_order_id"],
            )
            for p in _typed(state["pending_rotations"], list, "pending_rotations")
        ]
        done = _typed(state["done_orders"], dict, "done_orders")
        if any(v not in ("filled", "canceled", "rejected") for v in done.values()):
            raise CorruptSnapshot(f"done_orders holds an unknown reason: {done}")
        book = cls(
            profile_id=state["profile_id"],
            config=config_from_state(_typed(state["config"], dict, "config")),
            boundary=_typed(state["boundary"], int, "boundary"),
            slots=slots,
            orders={o.order_id: o for o in orders},
            balances={
                asset: Balance(**_typed(bal, dict, "balance"))
                for asset, bal in _typed(state["balances"], dict, "balances").items()
            },
            trade_ids={_typed(t, str, "trade id") for t in _typed(state["trade_ids"], list, "t")},
            done_orders=dict(done),
            pending={p.cancel_order_id: p for p in pending},
            next_seq=_typed(state["next_seq"], int, "next_seq"),
        )
        if (
            book.next_seq < 0
            or len(orders) != len(book.orders)
            or len(pending) != len(book.pending_rotations)
        ):
            raise CorruptSnapshot("negative next_seq or a repeated order id")
        book.check_invariants()
    except CorruptSnapshot:
        raise
    except (CapflowError, KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise CorruptSnapshot(f"grid state is not a valid book: {exc!r}") from exc
    return book
