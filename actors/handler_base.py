"""What the position and grid handlers share: event publishing, order sending, invariant checks."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from actors.events import EventSink
from exchange import Exchange
from messages import (
    CapflowError,
    ExchangeUnavailable,
    Fill,
    FillApplied,
    FillRejected,
    FundInvariantViolation,
    InputError,
    InvalidMessage,
    InvariantViolated,
    Message,
    OrderAccepted,
    OrderRejected,
    ReservationRejected,
    Side,
    StateError,
    check_id,
    check_ts,
    trusted,
)

logger = logging.getLogger("capflow.profile")

Clock = Callable[[], int]


class HandlerBase:
    """Plumbing for one profile's handler. Subclasses own the books and their rules.

    Attributes:
        kind: ``"position"`` or ``"grid"`` (for reports and messages).

    Args:
        profile_id: the profile.
        exchange: where orders go (calls block this profile's thread only).
        events: the runtime's event sink.
        register: claims a client order id in the supervisor's ownership index.
        clock: integer nanoseconds, for event timestamps.
        check_invariants: check the books after every message (reports, then halts on failure).
    """

    kind = "profile"

    def __init__(
        self,
        profile_id: str,
        *,
        exchange: Exchange,
        events: EventSink,
        register: Callable[[str], None],
        clock: Clock = time.time_ns,
        check_invariants: bool = True,
    ) -> None:
        self.profile_id = profile_id
        self._exchange = exchange
        self._events = events
        self._register = register
        self._clock = clock
        self._check = check_invariants
        self._ids = itertools.count(1)
        self._outbox: list[Message] = []

    # -- events ----------------------------------------------------------------------------
    def _new_id(self) -> str:
        return f"{self.profile_id}:{next(self._ids)}"

    def _publish(self, event_type: type[Message], **fields: Any) -> None:
        # Held until the checkpoint covering this message is durable (see ProfileActor).
        self._outbox.append(event_type(message_id=self._new_id(), ts_ns=self._clock(), **fields))

    def take_events(self) -> list[Message]:
        """The events of the messages applied since the last call."""
        events, self._outbox = self._outbox, []
        return events

    def publish_events(self, events: list[Message]) -> None:
        """Publish events whose checkpoint is durable."""
        self._events.publish_many(events)

    def reconcile(self) -> None:
        """Bring the books in line with the exchange after a restart (see subclasses).

        Book changes only: what they call for is sent by :meth:`resume`, once durable.
        """

    def resume(self) -> None:
        """Send what :meth:`reconcile` decided; called once its checkpoint is durable."""

    def _fill_applied(self, fill: Fill, *, duplicate: bool) -> None:
        # One per fill, so built without validating again what is valid already: the fill's
        # fields (validated when it was built or decoded) and the books' outcome. What comes
        # from here (ids, the injected clock) is checked as the constructor checks it.
        self._outbox.append(
            trusted(
                FillApplied,
                message_id=check_id(self._new_id(), name="message_id"),
                ts_ns=check_ts(self._clock()),
                profile_id=check_id(self.profile_id, name="profile_id"),
                trade_id=fill.trade_id,
                client_order_id=fill.client_order_id,
                qty=fill.qty,
                duplicate=duplicate,
                correlation_id=fill.message_id,
            )
        )

    def _fill_rejected(self, fill: Fill, exc: CapflowError) -> None:
        self._publish(
            FillRejected,
            profile_id=self.profile_id,
            trade_id=fill.trade_id,
            reason=exc.reason,
            detail=str(exc),
            correlation_id=fill.message_id,
        )

    def _unexpected(self, payload: object) -> None:
        """A message this kind of profile has no use for: the caller's fault, counted, ignored.

        (Crashing on it would dead-letter it and halt the profile for someone else's mistake.)
        """
        message_id = payload.message_id if isinstance(payload, Message) else None
        logger.warning("profile %s ignored %s", self.profile_id, type(payload).__name__)
        self._publish(
            ReservationRejected,
            profile_id=self.profile_id,
            signal_id=message_id or "-",
            reason=InvalidMessage.reason,
            needed=0,
            available=0,
            detail=f"a {self.kind} profile does not take {type(payload).__name__}",
            correlation_id=message_id,
        )

    def after_message(self, check: Callable[[], None], halt: Callable[[str], None]) -> None:
        """Run the books' invariant check; on a violation, report it and halt the profile."""
        if not self._check:
            return
        try:
            check()
        except FundInvariantViolation as exc:
            logger.error("profile %s: %s", self.profile_id, exc)
            self._publish(InvariantViolated, profile_id=self.profile_id, detail=str(exc))
            halt(f"invariant violation: {exc}")

    # -- exchange --------------------------------------------------------------------------
    def _send_order(
        self,
        *,
        client_order_id: str,
        symbol: str,
        side: Side,
        qty: int,
        price: Decimal | None,
        correlation_id: str | None = None,
    ) -> tuple[str, str | None]:
        """Claim the id, send the order; return ('accepted', exchange id), ('rejected', None)
        or ('unconfirmed', None).

        'unconfirmed' means the exchange could not be reached: the order may or may not exist,
        so its reservation stays until reconciliation finds it by its client order id.
        """
        self._register(client_order_id)
        try:
            order = self._exchange.create_order(
                symbol,
                "market" if price is None else "limit",
                side.value,
                qty,
                price,
                {"clientOrderId": client_order_id},
            )
        except ExchangeUnavailable as exc:
            logger.warning(
                "profile %s: order %s unconfirmed: %s", self.profile_id, client_order_id, exc
            )
            return "unconfirmed", None
        except (InputError, StateError) as exc:
            self._publish(
                OrderRejected,
                profile_id=self.profile_id,
                client_order_id=client_order_id,
                reason=exc.reason,
                correlation_id=correlation_id,
            )
            return "rejected", None
        if order["status"] == "rejected":
            self._publish(
                OrderRejected,
                profile_id=self.profile_id,
                client_order_id=client_order_id,
                reason="exchange_rejected",
                correlation_id=correlation_id,
            )
            return "rejected", None
        self._publish(
            OrderAccepted,
            profile_id=self.profile_id,
            client_order_id=client_order_id,
            exchange_order_id=order["id"],
            symbol=symbol,
            side=side,
            qty=qty,
            price=price,
            correlation_id=correlation_id,
        )
        return "accepted", str(order["id"])
