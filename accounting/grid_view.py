"""The read side of a grid book: its state and everything derived from it.

:class:`GridView` holds the primary state (per-asset balances as the exchange would report them,
slots, orders, boundary, closed ids, pending rotations) and derives every fund component from it
(:meth:`GridView.recalculate_funds`); nothing derived is stored. It also provides the primitive,
transactional state changes that :class:`accounting.grid_funds.GridBook` composes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from accounting.grid import (
    GridConfig,
    GridGeometry,
    Role,
    exchange_qty,
    grid_geometry,
    ideal_sizes,
    min_target,
    role_of,
    side_indices,
)
from accounting.grid_records import (
    AssetFunds,
    Balance,
    GridOrder,
    OrderStatus,
    PendingRotation,
    Slot,
)
from accounting.grid_state import book_to_state, check_book
from accounting.sorted_ids import SortedIds
from messages import (
    CapflowError,
    DuplicateOrder,
    InsufficientCapital,
    InvalidAmount,
    InvalidConfig,
    InvalidMessage,
    Side,
    StateError,
    UnknownOrder,
    check_id,
)


class GridView:
    """State and derived views of one grid profile's books (see :class:`GridBook`)."""

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by state

    def __init__(
        self,
        *,
        profile_id: str,
        config: GridConfig,
        boundary: int,
        slots: list[Slot],
        orders: dict[str, GridOrder],
        balances: dict[str, Balance],
        trade_ids: set[str],
        done_orders: dict[str, str],
        pending: dict[str, PendingRotation],
        next_seq: int,
    ) -> None:
        self._profile_id = check_id(profile_id, name="profile_id")
        if not isinstance(config, GridConfig):
            raise InvalidConfig(f"config must be a GridConfig, got {config!r}")
        self._config = config
        self._geo = grid_geometry(config)
        self._boundary = boundary
        self._slots = slots
        self._orders = orders
        self._balances = balances
        # dicts, not sets: insertion-ordered, so a transaction undoes its additions by popitem
        self._trade_ids = SortedIds(trade_ids)  # listed sorted at a checkpoint without sorting
        self._done = dict(done_orders)
        self._pending = pending
        self._next_seq = next_seq

    @property
    def profile_id(self) -> str:
        return self._profile_id

    @property
    def config(self) -> GridConfig:
        return self._config

    @property
    def geometry(self) -> GridGeometry:
        return self._geo

    @property
    def boundary(self) -> int:
        """First spread slot: ``[boundary, boundary + gap)`` is the spread."""
        return self._boundary

    @property
    def slots(self) -> tuple[Slot, ...]:
        return tuple(self._slots)

    @property
    def orders(self) -> Mapping[str, GridOrder]:
        return MappingProxyType(self._orders)

    @property
    def balances(self) -> Mapping[str, Balance]:
        return MappingProxyType(self._balances)

    @property
    def pending_rotations(self) -> Mapping[str, PendingRotation]:
        """Rotations waiting for their surplus order's cancel, keyed by that order's id."""
        return MappingProxyType(self._pending)

    @property
    def done_orders(self) -> Mapping[str, str]:
        """Closed client order ids and how they closed: filled, canceled or rejected."""
        return MappingProxyType(self._done)

    @property
    def trade_ids(self) -> frozenset[str]:
        return self._trade_ids.as_set()

    def trade_id_list(self) -> list[str]:
        """Every applied trade id, sorted (a checkpoint's list: no sort of the whole history)."""
        return self._trade_ids.to_list()

    @property
    def next_seq(self) -> int:
        """Next unused client-order-id sequence number."""
        return self._next_seq

    def client_order_id(self, slot: int, seq: int) -> str:
        """The deterministic client order id of placement number ``seq`` on ``slot``."""
        return f"{self._profile_id}-g{slot}-{seq}"

    def side_slots(self, side: Side) -> range:
        """Indices of the slots whose role is ``side``, nearest the spread first."""
        return side_indices(side, self._boundary, self._geo.gap, self._geo.size)

    def ideal_sizes(self, side: Side) -> dict[int, int]:
        """Slot index -> ideal size of ``side``, from the side's asset total.

        The budget is ``total - fees_owed - fee_reservation`` of the sold asset, so fill
        proceeds grow the grid and owed fees shrink it.
        """
        asset = self._config.asset_sold(side).symbol
        balance = self._balances[asset]
        reservation = self._config.fee_reservation if asset == self._config.fee_asset.symbol else 0
        budget = max(0, balance.total - balance.fees_owed - reservation)
        indices = self.side_slots(side)
        sizes = ideal_sizes(len(indices), budget, self._config.weight_ratio)
        return dict(zip(indices, sizes, strict=True))

    def ideal_size(self, index: int) -> int:
        """Ideal size of slot ``index`` for its current role (0 in the spread)."""
        side = self._slot(index).role.side
        return 0 if side is None else self.ideal_sizes(side)[index]

    def recalculate_funds(self) -> dict[str, AssetFunds]:
        """Every fund component per asset symbol, recomputed from balances, slots and orders."""
        market = self._config.market
        base, quote = market.base.symbol, market.quote.symbol
        committed = {base: 0, quote: 0}
        virtual = dict(committed)
        in_flight = dict(committed)
        sold = {Side.BUY: quote, Side.SELL: base}
        for order in self._orders.values():
            if order.status is OrderStatus.IN_FLIGHT:
                in_flight[sold[order.side]] += order.size
            else:
                committed[sold[order.side]] += order.remaining
        # The hot loop of every invariant check: plain attribute reads, no properties.
        virtual_buy = virtual_sell = 0
        for slot in self._slots:
            if slot.order_id is None:
                if slot.role is Role.BUY:
                    virtual_buy += slot.size
                elif slot.role is Role.SELL:
                    virtual_sell += slot.size
        virtual[quote] += virtual_buy
        virtual[base] += virtual_sell
        fee_asset = self._config.fee_asset.symbol
        return {
            asset: AssetFunds(
                asset=asset,
                total=bal.total,
                free=bal.free,
                committed=committed[asset],
                virtual=virtual[asset],
                in_flight=in_flight[asset],
                cache_funds=bal.cache_funds,
                fees_owed=bal.fees_owed,
                fee_reservation=self._config.fee_reservation if asset == fee_asset else 0,
            )
            for asset, bal in self._balances.items()
        }

    def available(self, asset: str) -> int:
        """``max(0, free - virtual - in_flight - fees_owed - fee_reservation)`` of ``asset``."""
        return self.recalculate_funds()[asset].available

    def owners(self) -> dict[str, dict[str, int]]:
        """Per asset: who owns each unit of ``total`` (see :meth:`AssetFunds.owners`)."""
        return {asset: funds.owners() for asset, funds in self.recalculate_funds().items()}

    def check_invariants(self) -> None:
        """Raise FundInvariantViolation naming profile, asset and every component if the
        books do not add up exactly (see :func:`accounting.grid_state.violations`)."""
        check_book(self)

    def to_state(self) -> dict[str, Any]:
        """Plain data (ints, strs, bools, None, lists, dicts); Decimals as strings."""
        return book_to_state(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GridView):
            return NotImplemented
        return bool(self.to_state() == other.to_state())

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(profile_id={self._profile_id!r}, boundary={self._boundary})"

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        # Records are immutable, so shallow copies of the containers are a full snapshot. The
        # two ever-growing id registers are only appended to: remember their lengths instead.
        saved = (
            self._boundary,
            list(self._slots),
            dict(self._orders),
            dict(self._balances),
            dict(self._pending),
            self._next_seq,
        )
        trades, done = len(self._trade_ids), len(self._done)
        try:
            yield
            self.check_invariants()
        except BaseException:
            (
                self._boundary,
                self._slots,
                self._orders,
                self._balances,
                self._pending,
                self._next_seq,
            ) = saved
            self._trade_ids.truncate(trades)
            while len(self._done) > done:
                self._done.popitem()
            raise

    def _index(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidMessage(f"slot index must be an int, got {type(value).__name__}")
        if not 0 <= value < len(self._slots):
            raise UnknownOrder(
                f"no slot {value} in profile {self._profile_id} (slots 0..{len(self._slots) - 1})"
            )
        return value

    def _slot(self, index: int) -> Slot:
        return self._slots[self._index(index)]

    def _order(self, order_id: str) -> GridOrder:
        check_id(order_id, name="order_id")
        order = self._orders.get(order_id)
        if order is None:
            raise UnknownOrder(f"no order {order_id} in profile {self._profile_id}")
        return order

    def _empty(self, index: int) -> Slot:
        slot = self._slots[index]
        return Slot(index=index, price=slot.price, role=slot.role)

    @staticmethod
    def _check_seq(seq: object) -> None:
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
            raise InvalidMessage(f"seq must be a non-negative int or None, got {seq!r}")

    def _claim_seq(self, seq: int | None) -> None:
        if seq is not None:
            self._next_seq = max(self._next_seq, seq + 1)

    def _id_in_use(self, client_order_id: str) -> bool:
        return (
            client_order_id in self._orders
            or client_order_id in self._done
            or any(p.client_order_id == client_order_id for p in self._pending.values())
        )

    def _placement_error(
        self,
        index: int,
        size: int,
        client_order_id: str,
        *,
        capital: bool = True,
        rotation: PendingRotation | None = None,
    ) -> CapflowError | None:
        """Why a placement of ``size`` on slot ``index`` may not begin, or None."""
        slot = self._slots[index]
        if rotation is None and self._id_in_use(client_order_id):
            return DuplicateOrder(f"client order id {client_order_id} is already used")
        if not slot.is_free:
            return StateError(f"slot {index} already holds order {slot.order_id}")
        side = slot.role.side
        if side is None:
            return StateError(f"slot {index} is in the spread; orders go on buy or sell slots")
        for pending in self._pending.values():
            if pending.slot == index and pending is not rotation:
                return StateError(
                    f"slot {index} is the target of the rotation of {pending.cancel_order_id}"
                )
        ideal = self.ideal_sizes(side)[index]
        minimum = min_target(ideal, self._config.min_target_ratio)
        if size < minimum:
            return InvalidAmount(
                f"order size {size} for slot {index} is below the minimum {minimum}"
                f" ({self._config.min_target_ratio} of ideal {ideal})"
            )
        if exchange_qty(self._config.market, side, size, slot.price) < 1:
            return InvalidAmount(f"order size {size} for slot {index} buys less than one unit")
        asset = self._config.asset_sold(side).symbol
        available = self.available(asset)
        if capital and size - slot.size > available:
            return InsufficientCapital(
                f"slot {index} needs {size - slot.size} more {asset} but only {available}"
                " is available"
            )
        return None

    def _update_balance(self, side: Side, *, total: int = 0, free: int = 0, cache: int = 0) -> None:
        """Add deltas to the balance of the asset ``side`` sells."""
        asset = self._config.asset_sold(side).symbol
        bal = self._balances[asset]
        self._balances[asset] = dataclasses.replace(
            bal,
            total=bal.total + total,
            free=bal.free + free,
            cache_funds=bal.cache_funds + cache,
        )

    def _accrue_fee(self) -> None:
        if self._config.op_fee:
            asset = self._config.fee_asset.symbol
            bal = self._balances[asset]
            self._balances[asset] = dataclasses.replace(
                bal, fees_owed=bal.fees_owed + self._config.op_fee
            )

    def _move_boundary(self, filled: Side) -> None:
        """A full BUY fill moves the spread down one slot, a full SELL fill up (clamped).

        The slot that enters the spread loses its earmark (a spread slot holds nothing).
        """
        b, gap, n = self._boundary, self._geo.gap, self._geo.size
        if filled is Side.BUY:
            if b == 0:
                return
            new, changed = b - 1, (b - 1, b + gap - 1)
        else:
            if b + gap >= n:
                return
            new, changed = b + 1, (b, b + gap)
        self._boundary = new
        for index in changed:
            slot = self._slots[index]
            role = role_of(index, new, gap)
            size = 0 if role is Role.SPREAD and slot.is_free else slot.size
            self._slots[index] = dataclasses.replace(slot, role=role, size=size)
