"""A grid profile (seed 001): fills drive the pure planner; its requests go to the exchange.

Write-ahead: every book change that a request depends on (a placement put in flight, an order
detached for cancel) is made *before* the request is sent, and the book is checkpointed with the
message that caused it. After a crash the replay rebuilds the same book and re-sends the same
requests with the same deterministic client order ids, which the exchange treats as one.

A cancel is confirmed in the books only once every fill the exchange reports for that order has
been applied: the exchange's cancel answer carries its ``filled``; if our book has seen less, the
confirmation waits (``awaiting``) until the missing fills arrive through the feed. Confirming
earlier would free capital that a late fill then spends a second time.

Reconciliation after a restart is the one place where the books change in an order the journal
does not record (the exchange's trades per order, not in feed order). A replay cannot repeat
decisions taken from that state, so :meth:`GridProfile.reconcile` only changes the books and
marks them ``resume``; their checkpoint is made durable, and only then does :meth:`resume` send
what they call for. A restart from that checkpoint resumes the same way before its replay.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from accounting import (
    CancelRequest,
    GridBook,
    GridConfig,
    OrderStatus,
    Placement,
    apply_plan,
    plan_rebalance,
    should_rebalance,
)
from actors.events import EventSink
from actors.handler_base import Clock, HandlerBase
from actors.profile import InjectedCrash, ProfileHandler
from exchange import Exchange, trade_to_fill
from messages import (
    CorruptSnapshot,
    CrashProfile,
    ExchangeUnavailable,
    Fill,
    InputError,
    InvalidMessage,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    PriceTick,
    ReservationRejected,
    StartGrid,
    StateError,
    UnknownOrder,
)

logger = logging.getLogger("capflow.grid")

Request = Placement | CancelRequest
#: what a reconciled book still has to do once durable: send its retries, or also rebalance
Resume = Literal["send", "rebalance"]
#: orders off their slot whose cancel was sent (or is to be): confirmed once their fills are in
_DETACHED = (OrderStatus.CANCELING, OrderStatus.DUST)


@dataclass(frozen=True, slots=True, kw_only=True)
class GridProfileConfig:
    """A grid profile's fixed settings.

    Attributes:
        grid: the grid's configuration (a :class:`StartGrid` may override its geometry).
        base_total: base units the profile holds at creation.
        quote_total: quote units the profile holds at creation.
        start_on_boot: create the grid at once; otherwise wait for a :class:`StartGrid`.
    """

    grid: GridConfig
    base_total: int
    quote_total: int
    start_on_boot: bool = True


class GridProfile(HandlerBase):
    """Applies fills and order events to a :class:`GridBook` and carries out its plans."""

    kind = "grid"

    def __init__(
        self,
        profile_id: str,
        config: GridProfileConfig,
        book: GridBook | None,
        *,
        awaiting: dict[str, int] | None = None,
        halted: str | None = None,
        resume: Resume | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(profile_id, **kwargs)
        self._config = config
        self.book = book
        self._awaiting: dict[str, int] = dict(awaiting or {})
        self._halted = halted
        #: reconciled books whose requests are not sent yet (see the module docstring): "send"
        #: (retries only) or "rebalance" (retries and a rebalance)
        self._resume = resume
        self._reconciling = False
        self._rebalance_on_resume = False

    # -- ProfileHandler --------------------------------------------------------------------
    def handle(self, payload: object) -> None:
        match payload:
            case Fill():
                self._fill(payload)
            case StartGrid():
                self._start(payload)
            case OrderCanceled(client_order_id=cid, remaining=remaining):
                self._canceled_outside(cid, remaining)
            case PriceTick():
                self._maintain()
            case CrashProfile():
                raise InjectedCrash(f"profile {self.profile_id}: poison message {payload}")
            case OrderAccepted() | OrderRejected():
                pass  # acks of our own placements: applied when create_order answered
            case _:
                self._unexpected(payload)
        if self.book is not None:
            self.after_message(self.book.check_invariants, self.halt)

    def to_state(self) -> dict[str, Any]:
        return {
            "book": None if self.book is None else self.book.to_state(),
            "awaiting": dict(self._awaiting),
            "halted": self._halted,
            "resume": self._resume,
        }

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "grid", "profile_id": self.profile_id}
        out["halted"] = self._halted is not None
        if self.book is None:
            return {**out, "started": False}
        funds = self.book.recalculate_funds()
        active = sum(1 for o in self.book.orders.values() if o.status is OrderStatus.OPEN)
        return {
            **out,
            "started": True,
            "boundary": self.book.boundary,
            "open_orders": active,
            "funds": {
                asset: {
                    "total": f.total,
                    "free": f.free,
                    "committed": f.committed,
                    "virtual": f.virtual,
                    "in_flight": f.in_flight,
                    "available": f.available,
                    "cache_funds": f.cache_funds,
                    "fees_owed": f.fees_owed,
                }
                for asset, f in sorted(funds.items())
            },
        }

    def halt(self, reason: str) -> None:
        if self._halted is None:
            self._halted = reason

    def reconcile(self) -> None:
        """After a restart: bring every order of the book in line with the exchange's record.

        Orders are claimed again (rebuilding the ownership index). An in-flight placement is
        confirmed if the exchange has it, else rejected (its capital returns to the slot). The
        exchange's trades are applied idempotently, and an order the exchange has closed or
        canceled is detached and confirmed once its fills are in.

        Nothing is sent: the placements and cancels this calls for are written ahead in the
        book (in flight, canceling) and sent by :meth:`resume`, with the next rebalance.
        """
        book = self.book
        if book is None:
            return
        self._reconciling, self._rebalance_on_resume = True, False
        try:
            self._reconcile_orders(book)
        finally:
            self._reconciling = False
        self._resume = "rebalance" if self._rebalance_on_resume else "send"

    def resume(self) -> None:
        """Send what reconciliation decided (re-sent as retries, same ids), and rebalance if
        one of its fills called for it."""
        resume, self._resume = self._resume, None
        if resume == "rebalance":
            self._cycle()
        elif resume == "send":
            self._maintain()

    def _reconcile_orders(self, book: GridBook) -> None:
        symbol = book.config.market.symbol
        for oid in sorted(book.orders):
            order = book.orders.get(oid)
            if order is None:
                continue  # completed by an earlier order's trades
            self._register(oid)
            try:
                found = self._exchange.fetch_order(oid, symbol)
            except UnknownOrder:
                if order.status is OrderStatus.IN_FLIGHT:
                    book.reject_placement(oid)
                continue
            except ExchangeUnavailable as exc:
                logger.warning("profile %s: %s not reconciled: %s", self.profile_id, oid, exc)
                continue
            if order.status is OrderStatus.IN_FLIGHT:
                book.confirm_placement(oid, str(found["id"]))
            for trade in found["trades"]:
                self._fill(trade_to_fill(trade))
            current = book.orders.get(oid)
            if found["status"] != "open" and current is not None:
                if current.status is OrderStatus.OPEN:
                    book.begin_cancel(oid)
                self._execute(self._settle_awaited(oid, exchange_filled=int(found["filled"])))

    # -- messages --------------------------------------------------------------------------
    def _start(self, cmd: StartGrid) -> None:
        try:
            if self.book is not None:
                raise InvalidMessage(f"grid of profile {self.profile_id} is already started")
            if cmd.symbol != self._config.grid.market.symbol:
                raise InvalidMessage(
                    f"profile {self.profile_id} trades {self._config.grid.market.symbol},"
                    f" not {cmd.symbol}"
                )
            grid = dataclasses.replace(
                self._config.grid,
                center_price=cmd.center_price,
                increment=cmd.increment,
                target_spread=cmd.target_spread,
                min_price=cmd.min_price,
                max_price=cmd.max_price,
                active_orders=cmd.active_orders,
                budget_base=cmd.budget_base,
                budget_quote=cmd.budget_quote,
            )
            self.book = GridBook.create(
                self.profile_id,
                grid,
                base_total=self._config.base_total,
                quote_total=self._config.quote_total,
            )
        except (InputError, StateError) as exc:
            self._publish(
                ReservationRejected,
                profile_id=self.profile_id,
                signal_id=cmd.message_id,
                reason=exc.reason,
                needed=0,
                available=0,
                detail=str(exc),
                correlation_id=cmd.message_id,
            )
            return
        self._cycle()

    def _fill(self, fill: Fill) -> None:
        if self.book is None:
            self._fill_rejected(fill, InvalidMessage(f"grid {self.profile_id} is not started"))
            return
        try:
            outcome = self.book.apply_fill(fill)
        except (InputError, StateError) as exc:
            self._fill_rejected(fill, exc)
            return
        self._fill_applied(fill, duplicate=outcome.duplicate)
        if outcome.duplicate:
            return
        requests: list[Request] = self._settle_awaited(outcome.order_id)
        dust = self.book.orders.get(outcome.order_id)
        if outcome.dust and dust is not None and outcome.order_id not in self._awaiting:
            # A remainder worth nothing in the other asset counts as full in the books, but it
            # still rests on the exchange: take it off. Its capital stays committed until the
            # exchange's answer says what it filled (written ahead: retried if unanswered).
            requests.append(CancelRequest(order_id=dust.order_id, exchange_id=dust.exchange_id))
        self._execute(requests)
        if self._halted is None and should_rebalance(self.book, [outcome]):
            self._cycle()

    def _canceled_outside(self, cid: str, remaining: int) -> None:
        """Canceled on the exchange with ``remaining`` base unfilled: confirm once the fills it
        made before the cancel are in."""
        book = self.book
        if book is None or cid not in book.orders:
            return
        order = book.orders[cid]
        if order.status is OrderStatus.OPEN:
            book.begin_cancel(cid)
        exchange_filled = max(order.filled_qty, order.qty - remaining)
        self._execute(self._settle_awaited(cid, exchange_filled=exchange_filled))

    # -- carrying out plans ----------------------------------------------------------------
    def _cycle(self) -> None:
        """Plan a rebalance, apply its book side, send its requests (halted: retries only)."""
        if self.book is None:
            return
        if self._reconciling:
            self._rebalance_on_resume = True
            return
        requests = self._retries()
        if self._halted is None:
            requests += apply_plan(self.book, plan_rebalance(self.book))
        self._execute(requests)

    def place_initial_orders(self) -> None:
        """Run the first rebalance of a grid created from config."""
        self._cycle()

    def _maintain(self) -> None:
        if self.book is not None:
            self._execute(self._retries())

    def _retries(self) -> list[Request]:
        """Requests whose answer never came (exchange unreachable): re-send them, same ids."""
        book = self.book
        if book is None:
            return []
        out: list[Request] = []
        for oid, order in sorted(book.orders.items()):
            if order.status is OrderStatus.IN_FLIGHT and order.slot is not None:
                out.append(
                    Placement(
                        client_order_id=oid,
                        slot=order.slot,
                        side=order.side,
                        price=order.price,
                        qty=order.qty,
                        size=order.size,
                    )
                )
            elif order.status in _DETACHED and oid not in self._awaiting:
                out.append(CancelRequest(order_id=oid, exchange_id=order.exchange_id))
        return out

    def _execute(self, requests: list[Request]) -> None:
        book = self.book
        if book is None or not requests or self._reconciling:
            return  # reconciling: written ahead in the book, sent by resume() as retries
        queue = collections.deque(requests)
        while queue:
            request = queue.popleft()
            if isinstance(request, Placement):
                self._place(book, request)
            else:
                queue.extend(self._cancel(book, request))
        book.settle_fees()

    def _place(self, book: GridBook, placement: Placement) -> None:
        outcome, exchange_id = self._send_order(
            client_order_id=placement.client_order_id,
            symbol=book.config.market.symbol,
            side=placement.side,
            qty=placement.qty,
            price=placement.price,
        )
        if outcome == "accepted" and exchange_id is not None:
            book.confirm_placement(placement.client_order_id, exchange_id)
        elif outcome == "rejected":
            book.reject_placement(placement.client_order_id)

    def _cancel(self, book: GridBook, request: CancelRequest) -> list[Request]:
        order = self._cancel_on_exchange(
            request.exchange_id or request.order_id, book.config.market.symbol
        )
        if order is None:
            return []  # unreachable: stays CANCELING, retried on the next cycle
        return self._settle_awaited(request.order_id, exchange_filled=int(order["filled"]))

    def _cancel_on_exchange(self, order_id: str, symbol: str) -> Any:
        try:
            return self._exchange.cancel_order(order_id, symbol)
        except ExchangeUnavailable as exc:
            logger.warning("profile %s: cancel of %s not sent: %s", self.profile_id, order_id, exc)
            return None
        except (InputError, StateError) as exc:
            logger.warning("profile %s: cancel of %s refused: %s", self.profile_id, order_id, exc)
            return None

    def _settle_awaited(self, order_id: str, exchange_filled: int | None = None) -> list[Request]:
        """Confirm a cancel once the book has applied every fill the exchange reported."""
        book = self.book
        if book is None:
            return []
        if exchange_filled is not None:
            self._awaiting[order_id] = exchange_filled
        if order_id not in self._awaiting:
            return []
        order = book.orders.get(order_id)
        if order is not None and order.filled_qty < self._awaiting[order_id]:
            return []  # fills still on their way through the feed
        del self._awaiting[order_id]
        if order is None or order.status not in _DETACHED:
            return []
        outcome = book.confirm_cancel(order_id)
        return [] if outcome.placement is None else [outcome.placement]


def _resume_from_state(value: object) -> Resume | None:
    if value is None:
        return None
    if value == "send":
        return "send"
    if value == "rebalance":
        return "rebalance"
    raise CorruptSnapshot(f"grid profile state: resume is {value!r}, not send/rebalance/None")


def grid_factory(
    config: GridProfileConfig,
    *,
    exchange: Exchange,
    events: EventSink,
    clock: Clock = time.time_ns,
) -> Callable[[str, dict[str, Any] | None, Callable[[str], None]], ProfileHandler]:
    """A :class:`HandlerFactory` for grid profiles sharing these dependencies."""

    def build(
        profile_id: str, state: dict[str, Any] | None, register: Callable[[str], None]
    ) -> ProfileHandler:
        deps: dict[str, Any] = {
            "exchange": exchange,
            "events": events,
            "register": register,
            "clock": clock,
        }
        if state is None:
            book = None
            if config.start_on_boot:
                book = GridBook.create(
                    profile_id,
                    config.grid,
                    base_total=config.base_total,
                    quote_total=config.quote_total,
                )
            profile = GridProfile(profile_id, config, book, **deps)
            # Place the initial orders now. Before the first checkpoint a crash rebuilds this
            # same book and re-sends the same client order ids, which the exchange dedupes.
            profile.place_initial_orders()
            return profile
        book_state = state.get("book")
        profile = GridProfile(
            profile_id,
            config,
            None if book_state is None else GridBook.from_state(book_state),
            awaiting={str(k): int(v) for k, v in dict(state.get("awaiting") or {}).items()},
            halted=state.get("halted"),
            resume=_resume_from_state(state.get("resume")),
            **deps,
        )
        # Reconciled, durable, but perhaps killed before it sent what it decided: send it now,
        # before the replay, exactly where the dead incarnation did.
        profile.resume()
        return profile

    return build
