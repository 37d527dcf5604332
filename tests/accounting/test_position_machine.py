"""The position ledger beside a plain model of ints and dicts, compared after every step.

The model recomputes every number its own way (``Fraction`` notional, sums over its own dicts) so
a shared mistake in ``accounting.position*`` and the model is unlikely. Fills are drawn the way an
exchange may report them: any price at or better than the limit, cost rounded either way, fees up
to the fee rate rounded up per fill (which can overrun a reservation and must then halt).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import msgpack
import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from accounting.position import PendingOrder, Position, PositionLedger
from messages import (
    Asset,
    DuplicateOrder,
    Fill,
    InsufficientCapital,
    InsufficientPosition,
    InvalidMessage,
    Market,
    OverFill,
    ProfileHalted,
    Side,
    UnknownOrder,
)

USDT = Asset(symbol="USDT", precision=2)
MARKETS = {
    "BTC/USDT": Market(symbol="BTC/USDT", base=Asset(symbol="BTC", precision=8), quote=USDT),
    "ETH/USDT": Market(symbol="ETH/USDT", base=Asset(symbol="ETH", precision=6), quote=USDT),
}
# quote units per (base unit x price): 10**(quote decimals - base decimals)
SCALE = {"BTC/USDT": Fraction(1, 10**6), "ETH/USDT": Fraction(1, 10**4)}
MAX_FEE_RATE = Fraction(1, 1000)

POSITION_IDS = st.sampled_from(["pos-a", "pos-b", "pos-c"])
SYMBOLS = st.sampled_from(sorted(MARKETS))
# Sized so that entries fit the capital often but not always: 0.01 BTC at 5 000 is 50 USDT,
# 1 ETH at 5 000 is 5 000 USDT (ETH has 6 decimals here, so the scales differ).
QTYS = st.integers(1, 300_000)
PRICE_CENTS = st.integers(1, 500_000)  # 0.01 .. 5 000.00


def price(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


@dataclass
class ModelOrder:
    side: Side
    symbol: str
    pid: str
    qty: int
    limit: int | None  # cents
    reserved: int
    filled: int = 0


@dataclass
class Model:
    allocated: int
    realized: int = 0
    fees: int = 0
    halted: bool = False
    orders: dict[str, ModelOrder] = field(default_factory=dict)
    positions: dict[str, list[int]] = field(default_factory=dict)  # pid -> [qty, cost]
    symbols: dict[str, str] = field(default_factory=dict)  # pid -> symbol of open position
    used: set[str] = field(default_factory=set)

    @property
    def available(self) -> int:
        reserved = sum(o.reserved for o in self.orders.values())
        cost = sum(c for _, c in self.positions.values())
        return self.allocated - reserved - cost + self.realized

    def symbol_of(self, pid: str) -> str | None:
        if pid in self.positions:
            return self.symbols[pid]
        return next((o.symbol for o in self.orders.values() if o.pid == pid), None)

    def sellable(self, pid: str) -> int:
        exits = sum(
            o.qty - o.filled for o in self.orders.values() if o.side is Side.SELL and o.pid == pid
        )
        return self.positions[pid][0] - exits if pid in self.positions else 0


def model_estimate(symbol: str, qty: int, limit_cents: int) -> int:
    notional = math.ceil(qty * Fraction(limit_cents, 100) * SCALE[symbol])
    return notional + math.ceil(notional * MAX_FEE_RATE)


class PositionLedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger: PositionLedger | None = None
        self.model = Model(allocated=0)
        self.applied: list[Fill] = []
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    @property
    def books(self) -> PositionLedger:
        assert self.ledger is not None
        return self.ledger

    def refused(self, exc: type[Exception], call: Any) -> None:
        before = self.books.to_state()
        with pytest.raises(exc):
            call()
        assert self.books.to_state() == before
        event(f"refused: {exc.__name__}")

    @initialize(allocated=st.integers(10_000, 1_000_000))
    def start(self, allocated: int) -> None:
        self.ledger = PositionLedger("p1", quote=USDT, allocated_capital=allocated, markets=MARKETS)
        self.model = Model(allocated=allocated)

    # -- reservations ----------------------------------------------------------------------

    @rule(
        data=st.data(),
        pid=POSITION_IDS,
        qty=QTYS,
        limit=st.none() | PRICE_CENTS,
        estimate=st.integers(1, 600_000),
    )
    def reserve_entry(
        self, data: st.DataObject, *, pid: str, qty: int, limit: int | None, estimate: int
    ) -> None:
        """An entry; one time in five with a used id or on the position's other symbol."""
        m = self.model
        symbol = m.symbol_of(pid)
        if symbol is None or data.draw(st.integers(0, 4), label="any symbol") == 4:
            symbol = data.draw(SYMBOLS, label="symbol")
        reuse = m.used and data.draw(st.integers(0, 4), label="reuse id") == 4
        oid = data.draw(st.sampled_from(sorted(m.used))) if reuse else self.fresh("e")
        explicit = estimate if limit is None or data.draw(st.booleans(), label="explicit") else None
        assert explicit is not None or limit is not None
        reserve = explicit if explicit is not None else model_estimate(symbol, qty, limit or 0)

        def call() -> PendingOrder:
            return self.books.reserve_for_order(
                client_order_id=oid,
                symbol=symbol,
                side=Side.BUY,
                position_id=pid,
                qty=qty,
                limit_price=None if limit is None else price(limit),
                estimate=explicit,
            )

        held = m.symbol_of(pid)
        if oid in m.used:
            self.refused(DuplicateOrder, call)
        elif held is not None and held != symbol:
            self.refused(InvalidMessage, call)
        elif m.halted:
            self.refused(ProfileHalted, call)
        elif reserve > m.available:
            self.refused(InsufficientCapital, call)
        else:
            assert call().reserved == reserve
            event("entry reserved")
            m.orders[oid] = ModelOrder(Side.BUY, symbol, pid, qty, limit, reserve)
            m.used.add(oid)

    @rule(data=st.data(), limit=st.none() | PRICE_CENTS, mistake=st.integers(0, 4))
    def reserve_exit(self, data: st.DataObject, limit: int | None, mistake: int) -> None:
        """An exit of an open position, one time in five too large or of no open position."""
        m = self.model
        open_ids = sorted(m.positions)
        ids = st.sampled_from(open_ids) if open_ids and mistake < 4 else POSITION_IDS
        pid = data.draw(ids, label="exit position")
        sellable = m.sellable(pid)
        if sellable and mistake < 4:
            qty = data.draw(st.integers(1, sellable), label="exit qty")
        else:
            qty = sellable + 1
        symbol = m.symbol_of(pid) or "BTC/USDT"
        oid = self.fresh("x")

        def call() -> PendingOrder:
            return self.books.reserve_for_order(
                client_order_id=oid,
                symbol=symbol,
                side=Side.SELL,
                position_id=pid,
                qty=qty,
                limit_price=None if limit is None else price(limit),
            )

        if qty > sellable:  # also when the position is not open (sellable 0)
            self.refused(InsufficientPosition, call)
        else:
            assert call().reserved == 0
            event("exit reserved")
            m.orders[oid] = ModelOrder(Side.SELL, symbol, pid, qty, limit, 0)
            m.used.add(oid)

    @rule(data=st.data(), mistake=st.integers(0, 4))
    def cancel(self, data: st.DataObject, mistake: int) -> None:
        """Cancel or expire a pending order; one time in five an id that is not pending."""
        if not self.model.orders or mistake == 4:
            self.refused(UnknownOrder, lambda: self.books.cancel_order(self.fresh("u")))
            return
        oid = data.draw(st.sampled_from(sorted(self.model.orders)), label="cancel")
        expire = data.draw(st.booleans(), label="expire")
        cancel = self.books.expire_order if expire else self.books.cancel_order
        assert cancel(oid) == self.model.orders.pop(oid).reserved

    # -- fills -----------------------------------------------------------------------------

    def draw_fill(self, data: st.DataObject, oid: str, qty: int) -> Fill:
        o = self.model.orders[oid]
        if o.side is Side.BUY:
            cents = data.draw(st.integers(1, o.limit or 500_000), label="buy price")
        else:
            low = o.limit or data.draw(PRICE_CENTS, label="market sell floor")
            cents = data.draw(st.integers(low, 2 * low), label="sell price")
        exact = qty * Fraction(cents, 100) * SCALE[o.symbol]
        cost = data.draw(st.sampled_from(sorted({math.floor(exact), math.ceil(exact)})))
        most = math.ceil(cost * MAX_FEE_RATE) + (0 if o.side is Side.BUY else 2)
        fee = data.draw(st.integers(0, most), label="fee")
        self.counter += 1
        return Fill(
            message_id=f"m-{self.counter}",
            ts_ns=self.counter,
            trade_id=f"t-{self.counter}",
            order_id=f"ex-{oid}",
            client_order_id=oid,
            symbol=o.symbol,
            side=o.side,
            qty=qty,
            price=price(cents),
            cost=cost,
            fee=fee,
            fee_asset="USDT",
        )

    def apply(self, fill: Fill) -> None:
        """Apply ``fill`` to the ledger and, independently, to the model."""
        m = self.model
        o = m.orders[fill.client_order_id]
        outcome = self.books.apply_fill(fill)
        o.filled += fill.qty
        m.fees += fill.fee
        if o.side is Side.BUY:
            consumption = fill.cost + fill.fee
            take = min(consumption, o.reserved)
            o.reserved -= take
            held = m.positions.setdefault(o.pid, [0, 0])
            held[0] += fill.qty
            held[1] += consumption
            m.symbols[o.pid] = o.symbol
            assert outcome.overrun == consumption - take
            if consumption > take:
                event("overrun")
                m.halted = True
        else:
            qty, cost = m.positions[o.pid]
            released = cost if fill.qty == qty else cost * fill.qty // qty
            assert outcome.released == released
            assert outcome.realized == fill.cost - fill.fee - released
            m.realized += fill.cost - fill.fee - released
            m.positions[o.pid] = [qty - fill.qty, cost - released]
            if qty == fill.qty:
                event("position closed")
                del m.positions[o.pid]
                assert outcome.position_closed
        event(f"{o.side} fill")
        if o.filled == o.qty:
            assert outcome.order_completed
            del m.orders[fill.client_order_id]
        if m.available < 0:
            event("available < 0")
            m.halted = True
        self.applied.append(fill)

    @precondition(lambda self: self.model.orders)
    @rule(data=st.data(), full=st.booleans())
    def fill_order(self, data: st.DataObject, full: bool) -> None:
        oid = data.draw(st.sampled_from(sorted(self.model.orders)), label="fill")
        o = self.model.orders[oid]
        remaining = o.qty - o.filled
        qty = remaining if full else data.draw(st.integers(1, remaining), label="fill qty")
        self.apply(self.draw_fill(data, oid, qty))

    @precondition(lambda self: self.model.orders)
    @rule(data=st.data())
    def overfill(self, data: st.DataObject) -> None:
        oid = data.draw(st.sampled_from(sorted(self.model.orders)), label="overfill")
        o = self.model.orders[oid]
        fill = self.draw_fill(data, oid, o.qty - o.filled + 1)
        self.refused(OverFill, lambda: self.books.apply_fill(fill))

    @precondition(lambda self: self.applied)
    @rule(data=st.data())
    def duplicate_fill(self, data: st.DataObject) -> None:
        fill = data.draw(st.sampled_from(self.applied), label="duplicate")
        before = self.books.to_state()
        outcome = self.books.apply_fill(fill)
        assert outcome.duplicate
        assert not outcome.applied
        assert self.books.to_state() == before

    def closable(self) -> list[str]:
        """Open positions without pending exits."""
        m = self.model
        return sorted(p for p, (qty, _) in m.positions.items() if m.sellable(p) == qty)

    @precondition(lambda self: self.closable())
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        m = self.model
        pid = data.draw(st.sampled_from(self.closable()), label="close")
        qty, cost = m.positions[pid]
        oid = self.fresh("x")
        self.books.reserve_for_order(
            client_order_id=oid,
            symbol=m.symbols[pid],
            side=Side.SELL,
            position_id=pid,
            qty=qty,
            limit_price=None,
        )
        m.orders[oid] = ModelOrder(Side.SELL, m.symbols[pid], pid, qty, None, 0)
        m.used.add(oid)
        before = self.books.reserved_for_positions
        self.apply(self.draw_fill(data, oid, qty))
        assert pid not in self.books.positions
        assert self.books.reserved_for_positions == before - cost

    # -- capital, restart, snapshots -------------------------------------------------------

    @precondition(lambda self: self.model.halted)
    @rule()
    def resume(self) -> None:
        if self.model.halted and self.model.available < 0:
            self.refused(ProfileHalted, self.books.resume)
        else:
            self.books.resume()
            self.model.halted = False

    @rule(new=st.integers(0, 1_000_000))
    def reallocate(self, new: int) -> None:
        m = self.model
        if m.available - m.allocated + new < 0:
            self.refused(InsufficientCapital, lambda: self.books.reallocate(new))
        else:
            self.books.reallocate(new)
            m.allocated = new

    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        """Snapshot round trip, and the seed's rebuild from the durable row + records."""
        state = msgpack.unpackb(msgpack.packb(self.books.to_state()))
        assert PositionLedger.from_state(state) == self.books
        state |= {"orders": [], "positions": [], "reserved_for_orders": 0}
        state["reserved_for_positions"] = 0
        restarted = PositionLedger.from_state(state)
        orders = data.draw(st.permutations(list(self.books.orders.values())), label="orders")
        positions: list[Position] = list(self.books.positions.values())[::-1]
        restarted.rebuild(orders, positions)
        assert restarted == self.books
        restarted.rebuild(orders, positions)
        assert restarted == self.books

    # -- after every step ------------------------------------------------------------------

    @invariant()
    def books_match_the_model(self) -> None:
        if self.ledger is None:
            return
        ledger, m = self.ledger, self.model
        ledger.check_invariants()
        assert ledger.summary() == {
            "profile_id": "p1",
            "allocated_capital": m.allocated,
            "reserved_for_orders": sum(o.reserved for o in m.orders.values()),
            "reserved_for_positions": sum(c for _, c in m.positions.values()),
            "realized_pnl": m.realized,
            "fees_paid": m.fees,
            "available": m.available,
            "halted": m.halted,
            "pending_orders": len(m.orders),
            "open_positions": len(m.positions),
        }
        assert {
            oid: (o.side, o.symbol, o.position_id, o.qty, o.filled_qty, o.reserved)
            for oid, o in ledger.orders.items()
        } == {
            oid: (o.side, o.symbol, o.pid, o.qty, o.filled, o.reserved)
            for oid, o in m.orders.items()
        }
        assert {pid: [p.qty, p.cost] for pid, p in ledger.positions.items()} == m.positions
        assert all(
            ledger.positions[p].symbol == s for p, s in m.symbols.items() if p in m.positions
        )


# Quick by default; the "thorough" Hypothesis profile (see tests/conftest.py) runs deeper.
_EXAMPLES = 60 if settings().max_examples <= 100 else settings().max_examples
TestPositionLedgerMachine = PositionLedgerMachine.TestCase
TestPositionLedgerMachine.settings = settings(max_examples=_EXAMPLES, stateful_step_count=40)
