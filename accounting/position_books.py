"""The data of a position ledger and everything that reads it.

:class:`PositionBooks` holds one profile's totals and records and answers questions about them:
the totals, ``available``, a summary, the invariant check and the plain-data state. It never
changes them; :class:`accounting.position.PositionLedger` adds the operations that do.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from accounting.position_checks import books_add_up, invariant_problems
from accounting.position_records import DEFAULT_MAX_FEE_RATE, PendingOrder, Position
from accounting.position_state import (
    STATE_VERSION,
    asset_to_state,
    market_to_state,
    order_to_state,
    position_to_state,
)
from accounting.sorted_ids import SortedIds
from messages import (
    Asset,
    FundInvariantViolation,
    InvalidConfig,
    InvalidMessage,
    Market,
    Side,
    check_id,
    check_ratio,
    check_units,
)


class PositionBooks:
    """One profile's totals and records, read-only. Equal when their states are equal.

    All amounts are ``int`` minor units of ``quote``; records are immutable values.

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

    def __init__(
        self,
        profile_id: str,
        *,
        quote: Asset,
        allocated_capital: int,
        markets: Mapping[str, Market],
        max_fee_rate: Decimal = DEFAULT_MAX_FEE_RATE,
    ) -> None:
        self._profile_id = check_id(profile_id, name="profile_id")
        if not isinstance(quote, Asset):
            raise InvalidConfig(f"profile {profile_id} quote must be an Asset, got {quote!r}")
        self._quote = quote
        self._markets = dict(markets)
        for symbol, market in self._markets.items():
            if not isinstance(market, Market) or market.symbol != symbol:
                raise InvalidConfig(f"profile {profile_id} market {symbol!r} is {market!r}")
            if market.quote != quote:
                raise InvalidConfig(
                    f"profile {profile_id} counts in {quote.symbol} ({quote.precision} decimals)"
                    f" but market {symbol} is quoted in {market.quote.symbol}"
                    f" ({market.quote.precision} decimals)"
                )
        self._max_fee_rate = check_ratio(
            max_fee_rate, name="max_fee_rate", low=Decimal(0), high=Decimal(1)
        )
        self._allocated = check_units(allocated_capital, name="allocated_capital")
        self._reserved_for_orders = 0
        self._reserved_for_positions = 0
        self._realized_pnl = 0
        self._fees_paid = 0
        self._halt_reason: str | None = None
        self._orders: dict[str, PendingOrder] = {}
        self._positions: dict[str, Position] = {}
        # Kept sorted as they grow: a checkpoint copies them instead of sorting the history.
        self._used_order_ids = SortedIds()
        self._applied_trade_ids = SortedIds()

    # -- reading ---------------------------------------------------------------------------

    @property
    def profile_id(self) -> str:
        return self._profile_id

    @property
    def quote(self) -> Asset:
        return self._quote

    @property
    def markets(self) -> Mapping[str, Market]:
        return MappingProxyType(self._markets)

    @property
    def max_fee_rate(self) -> Decimal:
        return self._max_fee_rate

    @property
    def allocated_capital(self) -> int:
        return self._allocated

    @property
    def reserved_for_orders(self) -> int:
        """Sum of the ``reserved`` of every pending order."""
        return self._reserved_for_orders

    @property
    def reserved_for_positions(self) -> int:
        """Sum of the cost basis of every open position."""
        return self._reserved_for_positions

    @property
    def realized_pnl(self) -> int:
        """Realized profit (negative: loss) of closed slices, net of every fee."""
        return self._realized_pnl

    @property
    def fees_paid(self) -> int:
        """Informational total of every fee; already inside costs and realized PnL."""
        return self._fees_paid

    @property
    def available(self) -> int:
        """Capital a new entry may reserve."""
        return (
            self._allocated
            - self._reserved_for_orders
            - self._reserved_for_positions
            + self._realized_pnl
        )

    @property
    def halted(self) -> bool:
        """Whether new entries are refused until :meth:`resume`."""
        return self._halt_reason is not None

    @property
    def halt_reason(self) -> str | None:
        return self._halt_reason

    @property
    def orders(self) -> Mapping[str, PendingOrder]:
        """Pending orders by client order id (a read-only view)."""
        return MappingProxyType(self._orders)

    @property
    def positions(self) -> Mapping[str, Position]:
        """Open positions by position id (a read-only view)."""
        return MappingProxyType(self._positions)

    def sellable_qty(self, position_id: str) -> int:
        """Base units of an open position not already promised to a pending exit (0 if none)."""
        position = self._positions.get(position_id)
        return 0 if position is None else position.qty - self._pending_exit_qty(position_id)

    def summary(self) -> dict[str, Any]:
        """The totals (and ``available``) for reports; cheap, plain data."""
        return {
            "profile_id": self._profile_id,
            "allocated_capital": self._allocated,
            "reserved_for_orders": self._reserved_for_orders,
            "reserved_for_positions": self._reserved_for_positions,
            "realized_pnl": self._realized_pnl,
            "fees_paid": self._fees_paid,
            "available": self.available,
            "halted": self.halted,
            "pending_orders": len(self._orders),
            "open_positions": len(self._positions),
        }

    def check_invariants(self) -> None:
        """Raise if the books do not add up exactly; a bug if it ever fires.

        Raises:
            FundInvariantViolation: naming the profile, every problem found and every total.
        """
        # Runs after every message: the one-pass check first, the full report only on failure.
        totals = (
            self._allocated,
            self._reserved_for_orders,
            self._reserved_for_positions,
            self._fees_paid,
            self.available,
        )
        if books_add_up(
            totals=totals,
            halted=self._halt_reason is not None,
            orders=self._orders,
            positions=self._positions,
        ):
            return
        problems = invariant_problems(
            totals=self._totals(),
            halted=self.halted,
            orders=self._orders,
            positions=self._positions,
        )
        if problems:
            raise FundInvariantViolation(
                f"profile {self._profile_id} books do not add up: {'; '.join(problems)}"
                f" (allocated_capital={self._allocated},"
                f" reserved_for_orders={self._reserved_for_orders},"
                f" reserved_for_positions={self._reserved_for_positions},"
                f" realized_pnl={self._realized_pnl}, fees_paid={self._fees_paid},"
                f" available={self.available}, halted={self.halted})"
            )

    def to_state(self) -> dict[str, Any]:
        """The whole ledger as plain data (see ``accounting.position_state``)."""
        return {
            "version": STATE_VERSION,
            "profile_id": self._profile_id,
            "quote": asset_to_state(self._quote),
            "markets": [market_to_state(self._markets[s]) for s in sorted(self._markets)],
            "max_fee_rate": str(self._max_fee_rate),
            "allocated_capital": self._allocated,
            "reserved_for_orders": self._reserved_for_orders,
            "reserved_for_positions": self._reserved_for_positions,
            "realized_pnl": self._realized_pnl,
            "fees_paid": self._fees_paid,
            "halt_reason": self._halt_reason,
            "orders": [order_to_state(self._orders[k]) for k in sorted(self._orders)],
            "positions": [position_to_state(self._positions[k]) for k in sorted(self._positions)],
            "used_order_ids": self._used_order_ids.to_list(),
            "applied_trade_ids": self._applied_trade_ids.to_list(),
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PositionBooks):
            return NotImplemented
        return self.to_state() == other.to_state()

    __hash__ = None  # type: ignore[assignment]  # mutable: equal ledgers may diverge

    def __repr__(self) -> str:
        totals = ", ".join(f"{k}={v}" for k, v in self._totals().items())
        return f"{type(self).__name__}({self._profile_id!r}, {totals}, halted={self.halted})"

    # -- helpers ---------------------------------------------------------------------------

    def _totals(self) -> dict[str, int]:
        return {
            "allocated_capital": self._allocated,
            "reserved_for_orders": self._reserved_for_orders,
            "reserved_for_positions": self._reserved_for_positions,
            "realized_pnl": self._realized_pnl,
            "fees_paid": self._fees_paid,
            "available": self.available,
        }

    def _market(self, symbol: object) -> Market:
        market = self._markets.get(symbol) if isinstance(symbol, str) else None
        if market is None:
            raise InvalidMessage(f"symbol {symbol!r} is not a market of profile {self._profile_id}")
        return market

    def _position_symbol(self, position_id: str) -> str | None:
        if position_id in self._positions:
            return self._positions[position_id].symbol
        return next((o.symbol for o in self._orders.values() if o.position_id == position_id), None)

    def _pending_exit_qty(self, position_id: str) -> int:
        return sum(
            o.remaining
            for o in self._orders.values()
            if o.side is Side.SELL and o.position_id == position_id
        )
