"""The capital ledger of one position-trading profile: exact, pure, one writer.

::

    available = allocated_capital - reserved_for_orders - reserved_for_positions + realized_pnl

An entry (BUY) order reserves its estimate before it is sent; each entry fill moves cost + fee
out of the order's reservation into the position's cost basis (``reserved_for_positions``); an
exit (SELL) fill releases the sold slice of that basis and books proceeds minus basis as
realized PnL. Fees are inside those numbers: ``realized_pnl`` is net of every fee, and
``fees_paid`` only reports their total. See ``docs/accounting.md`` (part 1) for worked examples.

The ledger does no locking and no I/O: one actor owns it (the seed's per-profile lock), and a
rejected call raises a ``StateError``/``InputError`` with the books left exactly as they were.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from accounting.position_books import PositionBooks
from accounting.position_checks import check_book
from accounting.position_fills import fill_effect
from accounting.position_records import (
    DEFAULT_MAX_FEE_RATE,
    FillOutcome,
    PendingOrder,
    Position,
    entry_estimate,
)
from accounting.position_state import (
    decode_ledger_state,
)
from accounting.sorted_ids import SortedIds
from messages import (
    DuplicateOrder,
    Fill,
    FundInvariantViolation,
    InsufficientCapital,
    InsufficientPosition,
    InvalidConfig,
    InvalidMessage,
    ProfileHalted,
    Side,
    UnknownOrder,
    check_enum,
    check_id,
    check_price,
    check_units,
)

__all__ = [
    "DEFAULT_MAX_FEE_RATE",
    "FillOutcome",
    "PendingOrder",
    "Position",
    "PositionBooks",
    "PositionLedger",
    "entry_estimate",
]


class PositionLedger(PositionBooks):
    """The capital ledger of one profile: its books and the operations that change them.

    All amounts are ``int`` minor units of ``quote``. The ledger is mutable and owned by a
    single writer; records inside it (:class:`PendingOrder`, :class:`Position`) are immutable
    and replaced, never mutated. Two ledgers are equal when their :meth:`to_state` is equal.

    Args:
        profile_id: the profile these books belong to.
        quote: the asset every amount is counted in; every market must be quoted in it.
        allocated_capital: capital allocated to the profile, >= 0.
        markets: the markets the profile may trade, keyed by symbol.
        max_fee_rate: fee rate the default entry reservation covers.

    Raises:
        InvalidConfig: a market is keyed by another symbol or quoted in another asset.
        InvalidMessage: a malformed id or amount.
    """

    # -- orders ----------------------------------------------------------------------------

    def reserve_for_order(
        self,
        *,
        client_order_id: str,
        symbol: str,
        side: Side,
        position_id: str,
        qty: int,
        limit_price: Decimal | None,
        estimate: int | None = None,
    ) -> PendingOrder:
        """Record a new order before it is sent, reserving capital for an entry.

        A BUY (entry) reserves ``estimate``, by default :func:`entry_estimate` at the limit
        price and ``max_fee_rate``; it opens ``position_id`` or adds to that open position. A
        SELL (exit) reserves nothing but promises ``qty`` of the open position.

        Args:
            client_order_id: a client order id never used before in this profile.
            symbol: a market of the profile.
            side: ``Side.BUY`` (entry) or ``Side.SELL`` (exit).
            position_id: the position to open, add to or reduce.
            qty: base minor units, > 0.
            limit_price: limit price, or ``None`` for a market order.
            estimate: quote units to reserve for an entry; required for a market entry.

        Returns:
            The pending order as recorded.

        Raises:
            InvalidMessage: malformed input (``InvalidAmount`` for amounts), an unknown
                symbol, a position id of another symbol, a market entry without an estimate,
                or an estimate on an exit.
            DuplicateOrder: the client order id was used before.
            ProfileHalted: an entry while the profile is halted.
            InsufficientCapital: the entry's estimate exceeds ``available``.
            InsufficientPosition: the exit exceeds the position's sellable quantity.
        """
        check_id(client_order_id, name="client_order_id")
        check_id(position_id, name="position_id")
        self._market(symbol)
        check_enum(side, Side, name="side")
        check_units(qty, name="qty", allow_zero=False)
        if limit_price is not None:
            check_price(limit_price, name="limit_price")
        if side is Side.SELL and estimate is not None:
            raise InvalidMessage(f"exit order {client_order_id} reserves nothing; got an estimate")
        if estimate is not None:
            check_units(estimate, name="estimate", allow_zero=False)
        elif side is Side.BUY:
            if limit_price is None:
                raise InvalidMessage(f"market entry order {client_order_id} needs an estimate")
            estimate = entry_estimate(self._markets[symbol], qty, limit_price, self._max_fee_rate)
        if client_order_id in self._used_order_ids:
            raise DuplicateOrder(
                f"client order id {client_order_id} is already used in profile {self._profile_id}"
            )
        held = self._position_symbol(position_id)
        if held is not None and held != symbol:
            raise InvalidMessage(f"position {position_id} trades {held}, not {symbol}")
        reserved = 0
        if side is Side.BUY:
            reserved = self._check_entry(client_order_id, estimate or 0)
        else:
            self._check_exit(client_order_id, position_id, qty)
        order = PendingOrder(
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            position_id=position_id,
            qty=qty,
            limit_price=limit_price,
            reserved=reserved,
        )
        self._orders[client_order_id] = order
        self._used_order_ids.add(client_order_id)
        self._reserved_for_orders += reserved
        return order

    def cancel_order(self, client_order_id: str) -> int:
        """Forget a pending order (cancelled, expired or rejected) and release its reservation.

        Returns:
            The quote units released (0 for an exit).

        Raises:
            UnknownOrder: no such pending order.
        """
        check_id(client_order_id, name="client_order_id")
        order = self._orders.pop(client_order_id, None)
        if order is None:
            raise UnknownOrder(
                f"order {client_order_id} is not pending in profile {self._profile_id}"
            )
        self._reserved_for_orders -= order.reserved
        return order.reserved

    expire_order = cancel_order

    # -- fills -----------------------------------------------------------------------------

    def apply_fill(self, fill: Fill) -> FillOutcome:
        """Book one exchange trade against its pending order.

        A trade id applied before is a reported no-op (``duplicate=True``), so a redelivered
        fill is harmless even after its order completed. An entry fill whose cost + fee
        exceeds the order's reservation is still booked (it happened) and halts the profile;
        so does any fill that leaves ``available`` negative.

        Raises:
            UnknownOrder: the fill names no pending order.
            InvalidFill: symbol, side or fee asset differ from the order's; the cost lies
                outside the market's rounding bounds; the price is through the limit.
            OverFill: the fill is larger than what remains of the order.
        """
        if not isinstance(fill, Fill):
            raise InvalidMessage(f"apply_fill needs a Fill, got {type(fill).__name__}")
        if fill.trade_id in self._applied_trade_ids:
            return FillOutcome(
                trade_id=fill.trade_id,
                client_order_id=fill.client_order_id,
                applied=False,
                duplicate=True,
            )
        order = self._orders.get(fill.client_order_id)
        if order is None:
            raise UnknownOrder(
                f"fill {fill.trade_id} names order {fill.client_order_id},"
                f" which is not pending in profile {self._profile_id}"
            )
        effect = fill_effect(
            order,
            self._positions.get(order.position_id),
            fill,
            market=self._markets[order.symbol],
            quote_symbol=self._quote.symbol,
        )
        if effect.order is None:
            del self._orders[order.client_order_id]
        else:
            self._orders[order.client_order_id] = effect.order
        if effect.position is None:
            # An exit that closed it; or an entry whose base fee took the whole trade, before
            # the position was ever opened.
            self._positions.pop(order.position_id, None)
        else:
            self._positions[order.position_id] = effect.position
        self._reserved_for_orders += effect.orders_delta
        self._reserved_for_positions += effect.positions_delta
        self._realized_pnl += effect.pnl_delta
        if fill.fee_asset == self.quote.symbol:
            self._fees_paid += fill.fee  # a base-asset fee shows as a smaller position instead
        self._applied_trade_ids.add(fill.trade_id)
        if effect.outcome.overrun:
            self.halt(
                f"fill {fill.trade_id} overran the reservation of order"
                f" {order.client_order_id} by {effect.outcome.overrun}"
            )
        if self.available < 0:
            self.halt(f"fill {fill.trade_id} left available at {self.available}")
        return effect.outcome

    # -- capital and halting ---------------------------------------------------------------

    def reallocate(self, new_allocated: int) -> None:
        """Change the capital allocated to the profile.

        Raises:
            InsufficientCapital: ``available`` would become negative.
        """
        check_units(new_allocated, name="allocated_capital")
        after = self.available - self._allocated + new_allocated
        if after < 0:
            raise InsufficientCapital(
                f"allocating {new_allocated} to profile {self._profile_id} would leave"
                f" available at {after}"
            )
        self._allocated = new_allocated

    def halt(self, reason: str) -> None:
        """Refuse new entries until :meth:`resume`. The first reason is kept."""
        if not isinstance(reason, str) or not reason:
            raise InvalidMessage(f"halt reason must be a non-empty str, got {reason!r}")
        if self._halt_reason is None:
            self._halt_reason = reason

    def resume(self) -> None:
        """Accept new entries again (no-op when not halted).

        Raises:
            ProfileHalted: ``available`` is still negative.
        """
        if self._halt_reason is not None and self.available < 0:
            raise ProfileHalted(
                f"profile {self._profile_id} cannot resume: available is {self.available}"
            )
        self._halt_reason = None

    # -- restart and snapshots -------------------------------------------------------------

    def rebuild(
        self, pending_orders: Iterable[PendingOrder], open_positions: Iterable[Position]
    ) -> None:
        """Replace orders and positions and recompute both reservations from them.

        The seed's restart recovery: ``reserved_for_orders`` becomes the sum of the orders'
        ``reserved`` and ``reserved_for_positions`` the sum of the positions' cost, so no
        stale reservation survives. Allocated capital, realized PnL, fees, halt state and the
        applied trade ids are kept. Deterministic and idempotent; if the books leave
        ``available`` negative the profile is halted.

        Raises:
            InvalidMessage: not records, a repeated id, an unknown symbol, an order whose
                position trades another symbol, or exits exceeding their position.
        """
        orders, positions = list(pending_orders), list(open_positions)
        check_book(orders, positions, self._markets)
        self._orders = {o.client_order_id: o for o in orders}
        self._positions = {p.position_id: p for p in positions}
        self._used_order_ids.update(sorted(self._orders))
        self._reserved_for_orders = sum(o.reserved for o in orders)
        self._reserved_for_positions = sum(p.cost for p in positions)
        if self.available < 0:
            self.halt(f"rebuild left available at {self.available}")

    @classmethod
    def from_state(cls, data: object) -> PositionLedger:
        """Rebuild a ledger from :meth:`to_state` output; the result compares equal.

        Raises:
            InvalidMessage: malformed data, or books that do not add up.
        """
        s = decode_ledger_state(data)
        try:
            ledger = cls(
                s.profile_id,
                quote=s.quote,
                allocated_capital=s.allocated_capital,
                markets=s.markets,
                max_fee_rate=s.max_fee_rate,
            )
        except InvalidConfig as exc:
            raise InvalidMessage(f"ledger state has an unusable configuration: {exc}") from exc
        check_book(s.orders, s.positions, ledger._markets)
        used = SortedIds(s.used_order_ids)
        missing = sorted(o.client_order_id for o in s.orders if o.client_order_id not in used)
        if missing:
            raise InvalidMessage(f"pending orders {missing} are not among used_order_ids")
        ledger._reserved_for_orders = check_units(s.reserved_for_orders, name="reserved_for_orders")
        ledger._reserved_for_positions = check_units(
            s.reserved_for_positions, name="reserved_for_positions"
        )
        ledger._realized_pnl = check_units(s.realized_pnl, name="realized_pnl", allow_negative=True)
        ledger._fees_paid = check_units(s.fees_paid, name="fees_paid")
        ledger._halt_reason = s.halt_reason
        ledger._orders = {o.client_order_id: o for o in s.orders}
        ledger._positions = {p.position_id: p for p in s.positions}
        ledger._used_order_ids = used
        ledger._applied_trade_ids = SortedIds(s.applied_trade_ids)
        try:
            ledger.check_invariants()
        except FundInvariantViolation as exc:
            raise InvalidMessage(f"ledger state does not add up: {exc}") from exc
        return ledger

    def _check_entry(self, oid: str, estimate: int) -> int:
        if self._halt_reason is not None:
            raise ProfileHalted(
                f"profile {self._profile_id} is halted ({self._halt_reason}); entry {oid} refused"
            )
        if estimate > self.available:
            raise InsufficientCapital(
                f"order {oid} needs {estimate} but only {self.available} is available"
                f" in profile {self._profile_id}"
            )
        return estimate

    def _check_exit(self, oid: str, position_id: str, qty: int) -> None:
        if position_id not in self._positions:
            raise InsufficientPosition(
                f"exit {oid} sells position {position_id}, which is not open"
                f" in profile {self._profile_id}"
            )
        sellable = self.sellable_qty(position_id)
        if qty > sellable:
            raise InsufficientPosition(
                f"exit {oid} of {qty} exceeds the {sellable} sellable of position {position_id}"
            )
