"""A signal-driven position profile (seed 000): signals become reserved, sent orders."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from accounting.position import PositionLedger
from accounting.position_records import entry_estimate
from actors.events import EventSink
from actors.handler_base import Clock, HandlerBase
from actors.profile import InjectedCrash, ProfileHandler
from exchange import Exchange, trade_to_fill
from messages import (
    Asset,
    CapflowError,
    ClosePosition,
    CrashProfile,
    ExchangeUnavailable,
    Fill,
    InputError,
    InsufficientPosition,
    InvariantViolated,
    Market,
    OpenPosition,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    PriceTick,
    ReservationRejected,
    Side,
    StateError,
    UnknownOrder,
)

logger = logging.getLogger("capflow.position")


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionProfileConfig:
    """A position profile's fixed settings.

    Attributes:
        quote: the asset its capital is kept in.
        allocated_capital: quote minor units it may use.
        markets: the markets it trades, all quoted in ``quote``.
        max_fee_rate: fee rate assumed when estimating a reservation (an upper bound).
        order_prefix: first part of the deterministic client order ids.
    """

    quote: Asset
    allocated_capital: int
    markets: Mapping[str, Market] = field(default_factory=dict)
    max_fee_rate: Decimal = Decimal("0.001")
    order_prefix: str = "cf"


class PositionProfile(HandlerBase):
    """Applies signals, fills and order events to a :class:`PositionLedger`."""

    kind = "position"

    def __init__(self, ledger: PositionLedger, prefix: str, **kwargs: Any) -> None:
        super().__init__(ledger.profile_id, **kwargs)
        self.ledger = ledger
        self._cancel_after: dict[str, int] = {}
        self._prefix = prefix

    # -- ProfileHandler --------------------------------------------------------------------
    def handle(self, payload: object) -> None:
        match payload:
            case Fill():
                self._fill(payload)
            case OpenPosition():
                self._open(payload)
            case ClosePosition():
                self._close(payload)
            case OrderCanceled(client_order_id=cid, remaining=remaining):
                self._canceled(cid, remaining)
            case OrderRejected(client_order_id=cid):
                self._release(cid)
            case OrderAccepted():
                pass  # the exchange's ack of an order we sent: reported when it was placed
            case PriceTick():
                pass  # marks are not part of the books
            case CrashProfile():
                raise InjectedCrash(f"profile {self.profile_id}: poison message {payload}")
            case _:
                self._unexpected(payload)
        self.after_message(self.ledger.check_invariants, self.ledger.halt)

    def to_state(self) -> dict[str, Any]:
        return self.ledger.to_state()

    def summary(self) -> dict[str, Any]:
        return {"kind": "position", **self.ledger.summary()}

    def halt(self, reason: str) -> None:
        self.ledger.halt(reason)

    def reconcile(self) -> None:
        """After a restart: bring every pending order in line with the exchange's record.

        Each pending order is claimed again (rebuilding the ownership index), found by its
        deterministic client order id and adopted with its fills (applied idempotently by
        trade id); an order the exchange never received has its reservation released, and one
        the exchange has closed or canceled releases what was left of its reservation. An
        unreachable exchange leaves the order as it is, for the next bootstrap.

        Then both reservations are rebuilt from the pending orders and open positions (the
        seed's recovery) and compared with what the books carried: a difference is reported
        (an error log and an ``InvariantViolated`` event; the books keep the rebuilt values).
        """
        self._reconcile_orders()
        ledger = self.ledger
        carried = (ledger.reserved_for_orders, ledger.reserved_for_positions)
        ledger.rebuild(list(ledger.orders.values()), list(ledger.positions.values()))
        rebuilt = (ledger.reserved_for_orders, ledger.reserved_for_positions)
        if rebuilt != carried:
            detail = (
                f"reservations rebuilt at recovery differ from the books: orders {carried[0]}"
                f" -> {rebuilt[0]}, positions {carried[1]} -> {rebuilt[1]}"
            )
            logger.error(
                "profile %s: %s", self.profile_id, detail, extra={"profile_id": self.profile_id}
            )
            self._publish(InvariantViolated, profile_id=self.profile_id, detail=detail)

    def _reconcile_orders(self) -> None:
        for cid, order in sorted(self.ledger.orders.items()):
            self._register(cid)
            try:
                found = self._exchange.fetch_order(cid, order.symbol)
            except UnknownOrder:
                self.ledger.cancel_order(cid)  # never reached the exchange
                continue
            except ExchangeUnavailable as exc:
                logger.warning("profile %s: %s not reconciled: %s", self.profile_id, cid, exc)
                continue
            for trade in found["trades"]:
                self._fill(trade_to_fill(trade))
            if found["status"] != "open" and cid in self.ledger.orders:
                self.ledger.cancel_order(cid)

    # -- rules -----------------------------------------------------------------------------
    def client_order_id(self, signal_id: str) -> str:
        """Deterministic: a re-sent signal or a replay after a crash reuses the same id."""
        return f"{self._prefix}-{self.profile_id}-{signal_id}"

    def _reject(
        self, signal: OpenPosition | ClosePosition, cid: str, needed: int, exc: CapflowError
    ) -> None:
        self._publish(
            ReservationRejected,
            profile_id=self.profile_id,
            client_order_id=cid,
            signal_id=signal.signal_id,
            reason=exc.reason,
            needed=needed,
            available=max(0, self.ledger.available),
            detail=str(exc),
            correlation_id=signal.message_id,
        )

    def _open(self, signal: OpenPosition) -> None:
        cid = self.client_order_id(signal.signal_id)
        needed = signal.estimate or 0
        try:
            if signal.estimate is None and signal.limit_price is not None:
                market = self.ledger.markets.get(signal.symbol)
                if market is not None:
                    needed = entry_estimate(
                        market, signal.qty, signal.limit_price, self.ledger.max_fee_rate
                    )
            self.ledger.reserve_for_order(
                client_order_id=cid,
                symbol=signal.symbol,
                side=Side.BUY,
                position_id=signal.position_id,
                qty=signal.qty,
                limit_price=signal.limit_price,
                estimate=signal.estimate,
            )
        except (InputError, StateError) as exc:
            self._reject(signal, cid, needed, exc)
            return
        self._place(
            cid,
            symbol=signal.symbol,
            side=Side.BUY,
            qty=signal.qty,
            price=signal.limit_price,
            signal=signal,
        )

    def _close(self, signal: ClosePosition) -> None:
        cid = self.client_order_id(signal.signal_id)
        try:
            qty = signal.qty
            if qty is None:
                qty = self.ledger.sellable_qty(signal.position_id)
                if qty == 0:
                    raise InsufficientPosition(
                        f"position {signal.position_id} has nothing left to sell"
                    )
            self.ledger.reserve_for_order(
                client_order_id=cid,
                symbol=signal.symbol,
                side=Side.SELL,
                position_id=signal.position_id,
                qty=qty,
                limit_price=signal.limit_price,
            )
        except (InputError, StateError) as exc:
            self._reject(signal, cid, 0, exc)
            return
        self._place(
            cid,
            symbol=signal.symbol,
            side=Side.SELL,
            qty=qty,
            price=signal.limit_price,
            signal=signal,
        )

    def _place(
        self,
        cid: str,
        *,
        symbol: str,
        side: Side,
        qty: int,
        price: Decimal | None,
        signal: OpenPosition | ClosePosition,
    ) -> None:
        outcome, _ = self._send_order(
            client_order_id=cid,
            symbol=symbol,
            side=side,
            qty=qty,
            price=price,
            correlation_id=signal.message_id,
        )
        if outcome == "rejected":
            self.ledger.cancel_order(cid)

    def _release(self, cid: str) -> None:
        if cid in self.ledger.orders:
            self.ledger.cancel_order(cid)

    def _canceled(self, cid: str, remaining: int) -> None:
        """The exchange canceled the order with ``remaining`` unfilled: release that part once
        every fill it made before the cancel is in (fills may still be on their way)."""
        order = self.ledger.orders.get(cid)
        if order is None:
            return
        if order.qty - order.filled_qty > remaining:
            # Fills still in transit: release when they are in. Kept in memory only; after a
            # restart, reconciliation finds the order canceled and releases it then.
            self._cancel_after[cid] = remaining
            return
        self.ledger.cancel_order(cid)

    def _settle_cancel(self, cid: str) -> None:
        remaining = self._cancel_after.get(cid)
        order = self.ledger.orders.get(cid)
        if remaining is None:
            return
        if order is None:
            del self._cancel_after[cid]
        elif order.qty - order.filled_qty <= remaining:
            del self._cancel_after[cid]
            self.ledger.cancel_order(cid)

    def _fill(self, fill: Fill) -> None:
        try:
            outcome = self.ledger.apply_fill(fill)
        except (InputError, StateError) as exc:
            self._fill_rejected(fill, exc)
            return
        self._fill_applied(fill, duplicate=outcome.duplicate)
        if self._cancel_after:
            self._settle_cancel(fill.client_order_id)


def position_factory(
    config: PositionProfileConfig,
    *,
    exchange: Exchange,
    events: EventSink,
    clock: Clock = time.time_ns,
) -> Callable[[str, dict[str, Any] | None, Callable[[str], None]], ProfileHandler]:
    """A :class:`HandlerFactory` for position profiles sharing these dependencies."""

    def build(
        profile_id: str, state: dict[str, Any] | None, register: Callable[[str], None]
    ) -> ProfileHandler:
        if state is None:
            ledger = PositionLedger(
                profile_id,
                quote=config.quote,
                allocated_capital=config.allocated_capital,
                markets=config.markets,
                max_fee_rate=config.max_fee_rate,
            )
        else:
            ledger = PositionLedger.from_state(state)
        return PositionProfile(
            ledger,
            config.order_prefix,
            exchange=exchange,
            events=events,
            register=register,
            clock=clock,
        )

    return build
