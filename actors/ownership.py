"""The order-ownership index: client order id → profile, shared by every thread that routes.

A profile claims an id synchronously, while its actor handles the message, *before* it sends
the order, so any thread that later sees a fill for that order — the supervisor, or the durable
ingest running in a caller's thread — finds its owner. Reads are plain dict lookups (atomic
under the GIL); writes take a lock so that a claim never overwrites another profile's.
"""

from __future__ import annotations

import threading


class OwnershipIndex:
    """Thread-safe map from client order id to the profile that placed it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[str, str] = {}

    def claim(self, client_order_id: str, profile_id: str) -> str:
        """Record ``profile_id`` as the owner unless the id is owned; return the owner."""
        with self._lock:
            return self._owners.setdefault(client_order_id, profile_id)

    def owner(self, client_order_id: str) -> str | None:
        """The owner of ``client_order_id``, or None."""
        return self._owners.get(client_order_id)

    def __len__(self) -> int:
        return len(self._owners)
