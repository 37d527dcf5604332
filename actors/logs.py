"""Structured logs: one JSON object per line, and the runtime events worth a line.

::

    configure_logging("INFO")                       # JSON lines on stderr
    runtime.events.subscribe(EventLogger())         # refusals, dead letters, violations
    logger.warning("store down", extra={"profile_id": "bot-1", "correlation_id": "sig-7"})
    # {"ts": "2024-05-01T12:00:00.123456Z", "level": "WARNING", "logger": "capflow.x",
    #  "msg": "store down", "profile_id": "bot-1", "correlation_id": "sig-7"}

A record's context fields (:data:`CONTEXT_FIELDS`) come from ``extra=`` and appear only when
present and not None, so a line carries exactly the ids a reader needs to trace it.
"""

from __future__ import annotations

import datetime as _dt
import json as _json
import logging
import sys
from typing import IO, Any

from messages import (
    DeadLettered,
    FillRejected,
    InvariantViolated,
    Message,
    OrderRejected,
    ReservationRejected,
)

#: ``extra=`` keys copied into the JSON line when a record carries them.
CONTEXT_FIELDS = (
    "profile_id",
    "correlation_id",
    "event",
    "reason",
    "message_id",
    "trade_id",
    "signal_id",
    "client_order_id",
    "seq",
    "attempts",
    "needed",
    "available",
    "port",
)
#: Marks the handler :func:`configure_logging` installs, so a second call replaces it.
_HANDLER_NAME = "capflow-structured"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: ts, level, logger, msg, then context fields."""

    def format(self, record: logging.LogRecord) -> str:
        ts = _dt.datetime.fromtimestamp(record.created, tz=_dt.UTC)
        line: dict[str, Any] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        # default=str: a Decimal or an enum in extra= is written as its exact text.
        return _json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(
    level: int | str = logging.INFO,
    *,
    json: bool = True,
    stream: IO[str] | None = None,
    quiet_event_repr: bool = True,
) -> logging.Handler:
    """Send every log record to ``stream`` (default stderr), as JSON lines or plain text.

    Replaces a handler installed by an earlier call (never anyone else's) and sets the root
    level. With ``quiet_event_repr``, the event sink's own free-text line per refusal
    (``capflow.events`` at INFO) is silenced: :class:`EventLogger` writes those structured.

    Returns:
        The installed handler.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
            handler.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    if json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    if quiet_event_repr:
        logging.getLogger("capflow.events").setLevel(logging.WARNING)
    return handler


class EventLogger:
    """Event-sink listener: one structured line per refusal, dead letter or violation.

    Levels: a refused reservation or order is business as usual (INFO); a refused fill means
    the exchange and the books disagree (WARNING); a dead letter or a broken invariant halts a
    profile (ERROR). Every other event (a fill booked, an order accepted, ...) gets a DEBUG
    line, so that at level DEBUG the log holds one line per event.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger if logger is not None else logging.getLogger("capflow.audit")

    def __call__(self, event: Message) -> None:
        name = type(event).__name__
        extra: dict[str, Any] = {
            "event": name,
            "message_id": event.message_id,
            "correlation_id": event.correlation_id,
            "profile_id": getattr(event, "profile_id", None),
        }
        match event:
            case ReservationRejected():
                extra.update(
                    reason=event.reason,
                    signal_id=event.signal_id,
                    client_order_id=event.client_order_id,
                    needed=event.needed,
                    available=event.available,
                )
                self._logger.info("reservation rejected: %s", event.detail, extra=extra)
            case OrderRejected():
                extra.update(reason=event.reason, client_order_id=event.client_order_id)
                self._logger.info("order rejected by the exchange", extra=extra)
            case FillRejected():
                extra.update(reason=event.reason, trade_id=event.trade_id)
                self._logger.warning("fill rejected: %s", event.detail, extra=extra)
            case DeadLettered():
                extra.update(seq=event.seq, attempts=event.attempts)
                self._logger.error(
                    "dead letter: %s crashed the profile: %s",
                    event.payload_type,
                    event.error,
                    extra=extra,
                )
            case InvariantViolated():
                self._logger.error("invariant violated: %s", event.detail, extra=extra)
            case _ if self._logger.isEnabledFor(logging.DEBUG):
                # The check first: at INFO this costs one comparison per event.
                for key in ("trade_id", "client_order_id", "signal_id"):
                    extra[key] = getattr(event, key, None)
                self._logger.debug("%s", name, extra=extra)
