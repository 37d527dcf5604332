"""Messages internal to the runtime: between the supervisor and its profile actors.

They never leave the process and are never encoded; public commands and events live in
``messages``. Frozen values, like every message (pykka warns about mutating what you send).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Deliver:
    """A logged message for a profile, with its per-profile sequence number.

    In durable mode ``seq`` derives from the journal entry id ``offset`` (ordered alike).
    """

    seq: int
    payload: Any
    offset: str | None = None
    #: apply even if ``seq`` is not above the profile's offset (an entry claimed out of order);
    #: the books' own idempotency (trade ids, client order ids) keeps that exact
    reapply: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverBatch:
    """Several logged messages for one profile, in sequence order (one mailbox hop)."""

    items: tuple[Deliver, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterOrder:
    """A profile claims a client order id *before* it sends the order to the exchange."""

    profile_id: str
    client_order_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpointed:
    """A profile made its state durable up to ``seq``: the supervisor may drop older log.

    ``number`` is the incarnation's checkpoint counter: it tells two checkpoints of one ``seq``
    apart (a reconciliation changes the books without a new message).
    """

    profile_id: str
    incarnation: int
    seq: int
    number: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Committed:
    """Supervisor → profile: its checkpoint ``number`` (up to ``seq``) is durable; publish held
    events."""

    seq: int
    number: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileCrashed:
    """A profile actor died on an unexpected exception while handling ``seq``."""

    profile_id: str
    incarnation: int
    seq: int | None
    error: str
    retryable: bool = (
        False  # the outside world failed (store down at start): not the profile's fault
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileStopped:
    """A profile actor stopped on request, after checkpointing everything it had applied."""

    profile_id: str
    incarnation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartProfile:
    """Timer callback: start a new incarnation of a crashed profile (after backoff)."""

    profile_id: str
    incarnation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BootstrapDone:
    """The profile finished loading; messages held during bootstrap may now flow."""

    profile_id: str
    incarnation: int
    applied_seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconcile:
    """Supervisor → profile, after the journal replay: reconcile with the exchange."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconciled:
    """Profile → supervisor: reconciled, that checkpoint durable, resumed; it may go live."""

    profile_id: str
    incarnation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Halt:
    """Refuse new reservations (after a dead letter); fills are still applied."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Sync:
    """Ask-only: answered once every earlier message in the mailbox has been handled."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GetBooks:
    """Ask-only: the profile's books as a plain summary dict."""
