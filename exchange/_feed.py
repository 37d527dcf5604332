"""The simulated exchange's fill feed: at-least-once delivery to a poller and to subscribers."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from exchange._book import copy_trade
from exchange.base import Trade


class Feed:
    """Trades delivered, re-delivered (duplicates), drained and pushed to subscribers.

    Every method but :meth:`dispatch` and :meth:`subscribe` expects the caller to hold the
    ``lock`` it was built with (the exchange's), so deliveries are ordered with the books.
    """

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self.pending: list[Trade] = []  # delivered, not drained yet
        self.redeliver: list[Trade] = []  # duplicates for the next price step
        self._outbox: deque[Trade] = deque()  # delivered, not handed to subscribers yet
        self._subscribers: list[Callable[[Trade], None]] = []
        self._dispatching = threading.RLock()

    def deliver(self, trade: Trade) -> None:
        """Deliver ``trade`` (again, if it was delivered before)."""
        self.pending.append(copy_trade(trade))
        if self._subscribers:
            self._outbox.append(copy_trade(trade))

    def deliver_duplicates(self) -> None:
        """Deliver the scheduled duplicates."""
        for trade in self.redeliver:
            self.deliver(trade)
        self.redeliver.clear()

    def drain(self) -> list[Trade]:
        """The pending deliveries, which are then no longer pending."""
        drained, self.pending = self.pending, []
        return drained

    def subscribe(self, callback: Callable[[Trade], None]) -> Callable[[], None]:
        """Add a subscriber; returns its unsubscribe function."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def dispatch(self, available: Callable[[], bool]) -> None:
        """Hand the outbox to the subscribers, in order, outside the lock (do not hold it).

        One thread delivers at a time; a thread that finds another one delivering leaves its
        trades to it, so a callback that waits on an actor calling the exchange cannot
        deadlock. Looking again after the release closes the gap between the deliverer's last
        look and its release. Nothing is handed over while ``available()`` is false.
        """
        while True:
            if not self._dispatching.acquire(blocking=False):
                return
            try:
                while True:
                    with self._lock:
                        if not self._outbox or not available():
                            break
                        trade = self._outbox.popleft()
                        callbacks = list(self._subscribers)
                    for callback in callbacks:
                        callback(copy_trade(trade))
            finally:
                self._dispatching.release()
            with self._lock:
                if not self._outbox or not available():
                    return
