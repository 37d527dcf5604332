"""Where runtime events go: counted, logged, kept briefly, and passed to listeners.

Profile actors publish here directly (a thread-safe object, not an actor), so that reporting
never adds a mailbox hop to the fill path and never blocks on another actor.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Sequence

from messages import Message

logger = logging.getLogger("capflow.events")

Listener = Callable[[Message], None]


def _event_name(event: Message) -> str:
    return type(event).__name__


class EventSink:
    """Counts every event by type (and by ``reason`` where it has one) and keeps the last few.

    Args:
        keep: how many recent events to keep for inspection and reports.
    """

    def __init__(self, *, keep: int = 1000) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._reasons: collections.Counter[tuple[str, str]] = collections.Counter()
        self._recent: collections.deque[Message] = collections.deque(maxlen=keep)
        self._listeners: tuple[Listener, ...] = ()

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every event from now on (from the publisher's thread)."""
        with self._lock:
            self._listeners = (*self._listeners, listener)  # copied on write, read lock-free

    def publish(self, event: Message) -> None:
        """Record one event; never raises for a listener's fault."""
        self.publish_many((event,))

    def publish_many(self, events: Sequence[Message]) -> None:
        """Record events in order (one lock round for all); never raises for a listener's fault."""
        named = [(event, _event_name(event), getattr(event, "reason", None)) for event in events]
        with self._lock:
            counts, reasons = self._counts, self._reasons
            for _, name, reason in named:
                counts[name] += 1
                if isinstance(reason, str):
                    reasons[(name, reason)] += 1
            self._recent.extend(events)
        listeners = self._listeners
        for event, name, reason in named:
            if reason is not None:
                logger.info("%s %s", name, event)
            for listener in listeners:
                try:
                    listener(event)
                except Exception:
                    logger.exception("event listener failed on %s", name)

    def count(self, name: str, reason: str | None = None) -> int:
        """How many events of type ``name`` (with ``reason``, if given) were published."""
        with self._lock:
            if reason is None:
                return self._counts[name]
            return self._reasons[(name, reason)]

    def counts(self) -> dict[str, int]:
        """All counts by event type."""
        with self._lock:
            return dict(self._counts)

    def reasons(self) -> dict[str, dict[str, int]]:
        """Counts by event type, then by reason."""
        with self._lock:
            out: dict[str, dict[str, int]] = {}
            for (name, reason), n in self._reasons.items():
                out.setdefault(name, {})[reason] = n
            return out

    def recent(self, name: str | None = None) -> list[Message]:
        """The most recent events (of type ``name``, if given), oldest first."""
        with self._lock:
            return [e for e in self._recent if name is None or _event_name(e) == name]
