"""The grid profile's books: placements, confirmations, cancels, rotations, fills and fees.

:class:`GridBook` adds the operations to :class:`accounting.grid_view.GridView`. Each operation
validates first, then runs in a transaction that restores the previous state on any error and
checks every invariant before it returns, so a rejected input leaves the books identical.
See ``docs/accounting.md (part 2)`` for the model, the rotation sequence and worked examples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from accounting.grid import (
    GridConfig,
    exchange_qty,
    grid_geometry,
    ideal_sizes,
    role_of,
    side_indices,
)
from accounting.grid_fills import FillEffect, check_fill, fill_effect
from accounting.grid_records import (
    Balance,
    CancelOutcome,
    FeeSettlement,
    GridFillOutcome,
    GridOrder,
    OrderStatus,
    PendingRotation,
    Placement,
    Slot,
    SlotState,
)
from accounting.grid_state import book_from_state
from accounting.grid_view import GridView
from messages import (
    Fill,
    InsufficientCapital,
    InvalidConfig,
    InvalidFill,
    InvalidMessage,
    Side,
    StateError,
    UnknownOrder,
    check_id,
    check_units,
    trusted_replace,
)


class GridBook(GridView):
    """The books of one grid profile. Build with :meth:`create` or :meth:`from_state`."""

    @classmethod
    def create(
        cls, profile_id: str, config: GridConfig, *, base_total: int, quote_total: int
    ) -> GridBook:
        """A new grid: every slot VIRTUAL with its ideal share of the configured budgets.

        Raises:
            InvalidConfig: a budget exceeds its balance, or the config is not a GridConfig.
            InvalidAmount: a balance is not an exact non-negative int.
        """
        check_units(base_total, name="base_total")
        check_units(quote_total, name="quote_total")
        if not isinstance(config, GridConfig):
            raise InvalidConfig(f"config must be a GridConfig, got {config!r}")
        market, geo = config.market, grid_geometry(config)
        for side, total in ((Side.SELL, base_total), (Side.BUY, quote_total)):
            if config.budget(side) > total:
                asset = config.asset_sold(side).symbol
                raise InvalidConfig(
                    f"{side} budget {config.budget(side)} {asset} exceeds the balance {total}"
                )
        sizes = [0] * geo.size
        for side in (Side.BUY, Side.SELL):
            indices = side_indices(side, geo.initial_boundary, geo.gap, geo.size)
            ideal = ideal_sizes(len(indices), config.budget(side), config.weight_ratio)
            for index, size in zip(indices, ideal, strict=True):
                sizes[index] = size
        book = cls(
            profile_id=profile_id,
            config=config,
            boundary=geo.initial_boundary,
            slots=[
                Slot(index=i, price=p, role=role_of(i, geo.initial_boundary, geo.gap), size=s)
                for i, (p, s) in enumerate(zip(geo.prices, sizes, strict=True))
            ],
            orders={},
            balances={
                market.base.symbol: Balance(total=base_total, free=base_total),
                market.quote.symbol: Balance(total=quote_total, free=quote_total),
            },
            trade_ids=set(),
            done_orders={},
            pending={},
            next_seq=0,
        )
        book.check_invariants()
        return book

    def begin_placement(
        self, slot_index: int, size: int, client_order_id: str, *, seq: int | None = None
    ) -> Placement:
        """Put an order for a free VIRTUAL slot in flight (call *before* sending it).

        The slot's earmark moves to ``in_flight``; any increase beyond it must fit in
        ``available``. ``seq`` (optional) marks that sequence number as used.

        Raises:
            UnknownOrder: no such slot. DuplicateOrder: the id was used before.
            StateError: the slot holds an order, is in the spread, or is a rotation's target.
            InvalidAmount: size below ``min_target_ratio`` of the slot's ideal, or worth
                nothing in the other asset. InsufficientCapital: increase > available.
        """
        check_units(size, name="size", allow_zero=False)
        check_id(client_order_id, name="client_order_id")
        self._check_seq(seq)
        error = self._placement_error(self._index(slot_index), size, client_order_id)
        if error is not None:
            raise error
        with self._atomic():
            self._claim_seq(seq)
            return self._place(slot_index, size, client_order_id)

    def confirm_placement(self, client_order_id: str, exchange_id: str) -> bool:
        """The exchange accepted the order: IN_FLIGHT -> OPEN, the slot turns ACTIVE.

        The exchange locks the size (``free -= size``; cache funds are consumed first) and the
        operation fee accrues. Returns False (no change) for a repeated confirmation or a late
        one for an order that already filled or was canceled.
        """
        check_id(client_order_id, name="client_order_id")
        check_id(exchange_id, name="exchange_id")
        order = self._orders.get(client_order_id)
        if order is None:
            closed = self._done.get(client_order_id)
            if closed in ("filled", "canceled"):
                return False
            if closed is None:
                raise UnknownOrder(f"no order {client_order_id} in profile {self._profile_id}")
            raise StateError(f"order {client_order_id} was rejected; it cannot be confirmed")
        if order.status is not OrderStatus.IN_FLIGHT:
            if order.exchange_id == exchange_id:
                return False
            raise StateError(
                f"order {client_order_id} is already confirmed as {order.exchange_id},"
                f" got {exchange_id}"
            )
        with self._atomic():
            self._confirm(order, exchange_id)
        return True

    def reject_placement(self, client_order_id: str) -> None:
        """The exchange refused the order: the slot is VIRTUAL again with the order's size.

        If the slot left its side meanwhile (the boundary moved), the earmark is released.
        """
        order = self._order(client_order_id)
        if order.status is not OrderStatus.IN_FLIGHT:
            raise StateError(f"order {client_order_id} is {order.status}; only in flight rejects")
        assert order.slot is not None  # in flight orders sit on a slot
        with self._atomic():
            slot = self._slots[order.slot]
            keep = order.size if slot.role.side is order.side else 0
            self._slots[order.slot] = Slot(
                index=slot.index, price=slot.price, role=slot.role, size=keep
            )
            del self._orders[client_order_id]
            self._done[client_order_id] = "rejected"

    def begin_cancel(self, order_id: str) -> bool:
        """Detach an OPEN order from its slot (slot VIRTUAL, size 0) and mark it CANCELING.

        Its remaining stays committed until :meth:`confirm_cancel`. Returns False (no change)
        when the order is already canceling or closed.
        """
        check_id(order_id, name="order_id")
        order = self._orders.get(order_id)
        if order is None and order_id in self._done:
            return False
        order = self._order(order_id)
        if order.status in (OrderStatus.CANCELING, OrderStatus.DUST):
            return False
        if order.status is OrderStatus.IN_FLIGHT:
            raise StateError(f"order {order_id} is in flight; cancel it once it is confirmed")
        with self._atomic():
            self._detach(order)
        return True

    def begin_rotation(
        self, order_id: str, slot_index: int, size: int, client_order_id: str, *, seq: int | None
    ) -> bool:
        """Rotate an OPEN surplus order to a free slot of its side: begin its cancel now.

        The target placement begins in :meth:`confirm_cancel`, when the surplus capital is back
        in ``free``. Returns False if the order is already canceling or closed (no change).
        """
        check_units(size, name="size", allow_zero=False)
        check_id(client_order_id, name="client_order_id")
        self._check_seq(seq)
        check_id(order_id, name="order_id")
        order = self._orders.get(order_id)
        if order is None and order_id in self._done:
            return False
        order = self._order(order_id)
        if order.status in (OrderStatus.CANCELING, OrderStatus.DUST):
            return False
        if order.status is OrderStatus.IN_FLIGHT:
            raise StateError(f"order {order_id} is in flight; rotate it once it is confirmed")
        target = self._index(slot_index)
        error = self._placement_error(target, size, client_order_id, capital=False)
        if error is None and self._slots[target].role.side is not order.side:
            error = StateError(f"slot {target} is not a {order.side} slot")
        if error is not None:
            raise error
        with self._atomic():
            self._claim_seq(seq)
            self._detach(order)
            self._pending[order_id] = PendingRotation(
                cancel_order_id=order_id,
                side=order.side,
                slot=target,
                size=size,
                client_order_id=client_order_id,
            )
        return True

    def confirm_cancel(self, order_id: str) -> CancelOutcome:
        """The exchange canceled the order: its remaining returns to ``free``, the fee accrues.

        If a rotation waits on this order, its target placement begins now, sized
        ``min(planned, target earmark + available)``; it is dropped (``rotation_dropped``) if
        the target is no longer a free slot of its side or the size falls below the minimum.
        """
        check_id(order_id, name="order_id")
        if order_id not in self._orders and order_id in self._done:
            return CancelOutcome(order_id=order_id, noop=True)
        order = self._order(order_id)
        if order.status is OrderStatus.DUST:
            # Counted as filled already: its worthless remainder is simply freed, no fee.
            with self._atomic():
                self._update_balance(order.side, free=order.remaining)
                del self._orders[order_id]
                self._done[order_id] = "filled"
            return CancelOutcome(order_id=order_id, released=order.remaining)
        if order.status is not OrderStatus.CANCELING:
            raise StateError(f"order {order_id} is {order.status}; begin_cancel first")
        with self._atomic():
            self._update_balance(order.side, free=order.remaining)
            del self._orders[order_id]
            self._done[order_id] = "canceled"
            self._accrue_fee()
            pending = self._pending.pop(order_id, None)
            if pending is None:
                return CancelOutcome(order_id=order_id, released=order.remaining)
            placement = self._start_rotation(pending)
            return CancelOutcome(
                order_id=order_id,
                released=order.remaining,
                placement=placement,
                rotation_dropped=pending.slot if placement is None else None,
            )

    def apply_fill(self, fill: Fill) -> GridFillOutcome:
        """Apply one exchange trade to its order (keyed by ``fill.client_order_id``).

        A repeated trade id is a reported no-op. A fill for an in-flight order confirms it
        first (the exchange may report the trade before the acknowledgement). A full fill
        frees its slot (VIRTUAL, size 0), releases any leftover and moves the boundary.

        Raises:
            UnknownOrder: no such order. InvalidFill: closed order, wrong market/side/fee asset,
                cost outside bounds, price through the limit. OverFill: more than remains.
        """
        if not isinstance(fill, Fill):
            raise InvalidMessage(f"expected a Fill, got {type(fill).__name__}")
        oid = fill.client_order_id
        if fill.trade_id in self._trade_ids:
            return GridFillOutcome(trade_id=fill.trade_id, order_id=oid, duplicate=True)
        order = self._orders.get(oid)
        if order is None and oid in self._done:
            if self._is_late_dust(oid, fill):
                return self._apply_late_dust(fill)
            raise InvalidFill(
                f"fill {fill.trade_id} is for order {oid}, which is {self._done[oid]};"
                " it holds no slot"
            )
        order = self._order(oid)
        check_fill(order, fill, self._config.market)
        with self._atomic():
            implicit = order.status is OrderStatus.IN_FLIGHT
            if implicit:
                order = self._confirm(order, fill.order_id)
            effect = fill_effect(order, fill, self._config.market)
            if order.status is OrderStatus.DUST:
                return self._fill_dust(order, fill, effect)
            # Full, but a remainder worth nothing still open on the exchange: it stays committed
            # (DUST) until the exchange says it is canceled or fills it; released only then.
            dust = effect.full and effect.order.qty_left > 0
            released = 0 if dust else effect.released
            self._update_balance(order.side, total=-effect.spent, free=released)
            self._update_balance(
                order.side.opposite, total=effect.received, free=effect.received,
                cache=effect.received,
            )  # fmt: skip
            self._trade_ids.add(fill.trade_id)
            dropped = None
            if effect.full:
                if dust:
                    self._orders[oid] = dataclasses.replace(
                        effect.order, slot=None, status=OrderStatus.DUST
                    )
                else:
                    del self._orders[oid]
                    self._done[oid] = "filled"
                if order.slot is not None:
                    self._slots[order.slot] = self._empty(order.slot)
                rotation = self._pending.pop(oid, None)
                dropped = None if rotation is None else rotation.slot
                self._move_boundary(order.side)
            else:
                self._orders[oid] = effect.order
                if order.slot is not None:
                    self._slots[order.slot] = trusted_replace(  # valid values; checked below
                        self._slots[order.slot],
                        state=SlotState.PARTIAL,
                        size=effect.order.remaining,
                    )
            return GridFillOutcome(
                trade_id=fill.trade_id,
                order_id=oid,
                implicit_confirm=implicit,
                full=effect.full,
                dust=dust,
                released=released,
                received=effect.received,
                spent=effect.spent,
                slot=order.slot,
                rotation_dropped=dropped,
            )

    def _fill_dust(self, order: GridOrder, fill: Fill, effect: FillEffect) -> GridFillOutcome:
        """A trade of a DUST remainder (inside ``_atomic``): booked like any trade; the order
        closes, its leftover released, once the exchange has filled all of it."""
        oid = order.order_id
        closed = effect.order.qty_left == 0
        released = effect.order.remaining if closed else 0
        self._update_balance(order.side, total=-effect.spent, free=released)
        self._update_balance(
            order.side.opposite, total=effect.received, free=effect.received, cache=effect.received
        )
        self._trade_ids.add(fill.trade_id)
        if closed:
            del self._orders[oid]
            self._done[oid] = "filled"
        else:
            self._orders[oid] = effect.order
        return GridFillOutcome(
            trade_id=fill.trade_id,
            order_id=oid,
            released=released,
            received=effect.received,
            spent=effect.spent,
        )

    def _is_late_dust(self, oid: str, fill: Fill) -> bool:
        """A late trade of a remainder the books already counted as filled.

        An order whose remainder is worth nothing in the other asset counts as full while that
        dust may still rest on the exchange until our cancel lands; if the exchange fills it
        first, the trade is real and is booked here. A sell's dust leaves the account; a buy
        whose quote size its trades' rounded-up costs used up still has base open, which
        arrives. Only an order completed as "filled" can get one (a re-sent trade id was caught
        before), and dust is worth less than one quote unit: its cost is within the notional's
        bounds, which start at 0 (the exchange rounds cumulatively, so a piece worth 0.8 of a
        cent may cost 1), and its fee within what it brings.
        """
        market = self._config.market
        if self._done[oid] != "filled" or fill.symbol != market.symbol:
            return False
        low, high = market.cost_bounds(fill.qty, fill.price)
        if low != 0 or fill.cost > high:
            return False
        bought, gross = (
            (market.base, fill.qty) if fill.side is Side.BUY else (market.quote, fill.cost)
        )
        return fill.fee == 0 or (fill.fee_asset == bought.symbol and fill.fee <= gross)

    def _apply_late_dust(self, fill: Fill) -> GridFillOutcome:
        """Book a late dust trade: what it sells must be free and unearmarked (released)."""
        side = fill.side
        spent = fill.qty if side is Side.SELL else fill.cost
        received = (fill.cost if side is Side.SELL else fill.qty) - fill.fee
        sold = self._config.asset_sold(side).symbol
        funds = self.recalculate_funds()[sold]
        unowned = funds.free - funds.virtual - funds.in_flight
        if spent > unowned:
            raise InvalidFill(
                f"fill {fill.trade_id} spends {spent} {sold} for filled order"
                f" {fill.client_order_id}: more than the {unowned} {sold} its released dust"
                " could be"
            )
        with self._atomic():
            self._update_balance(side, total=-spent, free=-spent)
            balance = self._balances[sold]
            if balance.cache_funds > balance.free:
                self._balances[sold] = dataclasses.replace(balance, cache_funds=balance.free)
            self._update_balance(side.opposite, total=received, free=received, cache=received)
            self._trade_ids.add(fill.trade_id)
            return GridFillOutcome(
                trade_id=fill.trade_id,
                order_id=fill.client_order_id,
                spent=spent,
                received=received,
            )

    def settle_fees(self) -> FeeSettlement:
        """Pay owed operation fees in full where ``free - virtual - in_flight - reservation``
        covers them; otherwise defer (nothing changes for that asset)."""
        paid: dict[str, int] = {}
        deferred: dict[str, int] = {}
        funds = self.recalculate_funds()
        with self._atomic():
            for asset, bal in list(self._balances.items()):
                owed = bal.fees_owed
                if owed == 0:
                    continue
                f = funds[asset]
                if f.free - f.virtual - f.in_flight - f.fee_reservation < owed:
                    deferred[asset] = owed
                    continue
                free = bal.free - owed
                self._balances[asset] = Balance(
                    total=bal.total - owed, free=free, cache_funds=min(bal.cache_funds, free)
                )
                paid[asset] = owed
        return FeeSettlement(paid=paid, deferred=deferred)

    def resize_virtual(self, slot_index: int, size: int) -> None:
        """Re-earmark a free VIRTUAL slot (book only); an increase must fit in ``available``."""
        check_units(size, name="size")
        slot = self._slot(self._index(slot_index))
        if not slot.is_free:
            raise StateError(f"slot {slot.index} holds order {slot.order_id}; it cannot resize")
        side = slot.role.side
        if side is None:
            if size:
                raise StateError(f"slot {slot.index} is in the spread; its size stays 0")
            return
        asset = self._config.asset_sold(side).symbol
        available = self.available(asset)
        if size - slot.size > available:
            raise InsufficientCapital(
                f"slot {slot.index} needs {size - slot.size} more {asset} but only {available}"
                " is available"
            )
        with self._atomic():
            self._slots[slot.index] = dataclasses.replace(slot, size=size)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> GridBook:
        """Rebuild a book from :meth:`to_state` data; CorruptSnapshot if it is not valid."""
        return book_from_state(cls, state)

    def _place(self, index: int, size: int, client_order_id: str) -> Placement:
        slot = self._slots[index]
        side = slot.role.side
        assert side is not None  # checked by _placement_error
        qty = exchange_qty(self._config.market, side, size, slot.price)
        self._orders[client_order_id] = GridOrder(
            order_id=client_order_id,
            exchange_id=None,
            slot=index,
            side=side,
            price=slot.price,
            size=size,
            qty=qty,
            remaining=size,
            filled_qty=0,
            status=OrderStatus.IN_FLIGHT,
        )
        self._slots[index] = dataclasses.replace(
            slot, size=size, order_id=client_order_id, in_flight=True
        )
        return Placement(
            client_order_id=client_order_id,
            slot=index,
            side=side,
            price=slot.price,
            qty=qty,
            size=size,
        )

    def _start_rotation(self, pending: PendingRotation) -> Placement | None:
        slot = self._slots[pending.slot]
        if not slot.is_free or slot.role.side is not pending.side:
            return None
        asset = self._config.asset_sold(pending.side).symbol
        size = min(pending.size, slot.size + self.available(asset))
        if size < 1:
            return None
        error = self._placement_error(pending.slot, size, pending.client_order_id, rotation=pending)
        return (
            None if error is not None else self._place(pending.slot, size, pending.client_order_id)
        )

    def _confirm(self, order: GridOrder, exchange_id: str) -> GridOrder:
        assert order.slot is not None  # in flight orders sit on a slot
        opened = dataclasses.replace(order, exchange_id=exchange_id, status=OrderStatus.OPEN)
        self._orders[order.order_id] = opened
        self._slots[order.slot] = dataclasses.replace(
            self._slots[order.slot], state=SlotState.ACTIVE, in_flight=False
        )
        asset = self._config.asset_sold(order.side).symbol
        cache = self._balances[asset].cache_funds
        self._update_balance(order.side, free=-order.size, cache=-min(cache, order.size))
        self._accrue_fee()
        return opened

    def _detach(self, order: GridOrder) -> None:
        assert order.slot is not None  # open orders sit on a slot
        self._slots[order.slot] = self._empty(order.slot)
        self._orders[order.order_id] = dataclasses.replace(
            order, slot=None, status=OrderStatus.CANCELING
        )
