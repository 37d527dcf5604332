"""The capflow error tree: every error names whose fault it is.

::

    CapflowError
    ├── InputError            the caller sent something malformed   (also ValueError)
    │   ├── InvalidMessage    a message field is missing or of the wrong type/range
    │   │   └── InvalidAmount a money amount is float/NaN/inf/negative/zero/off-precision
    │   ├── DecodeError       bytes that are not a capflow message of a known version
    │   └── InvalidConfig     a profile, grid or scenario configuration that cannot work
    ├── StateError            well-formed, but the books say no   (state is unchanged)
    │   ├── UnknownOrder      no such order/slot in this profile          (also LookupError)
    │   ├── UnknownProfile    no such profile in this runtime             (also LookupError)
    │   ├── DuplicateOrder    the order id is already in use
    │   ├── InvalidFill       fill on a VIRTUAL slot, wrong asset, price through the limit
    │   ├── OverFill          fill larger than the order's remaining size
    │   ├── InsufficientCapital  a reservation larger than what is available
    │   ├── InsufficientPosition an exit larger than the position's unreserved quantity
    │   └── ProfileHalted     the profile refuses new reservations until reconciled
    ├── ExternalError         the outside world failed (retry may help)
    │   ├── StoreUnavailable
    │   ├── ExchangeUnavailable
    │   ├── StaleFence        a writer's fencing token/lease is no longer current
    │   └── CorruptSnapshot   stored bytes fail their checksum/schema (never a silent reset)
    └── FundInvariantViolation  a bug: the books no longer add up

Each class carries a short ``reason`` code, used as a metric label and in reports.
"""

from __future__ import annotations


class CapflowError(Exception):
    """Root of every error capflow raises on purpose."""

    reason: str = "error"


class InputError(CapflowError, ValueError):
    """The caller's fault: malformed input. Nothing was changed."""

    reason = "invalid_input"


class InvalidMessage(InputError):
    """A message or record field is missing, of the wrong type, or out of range."""

    reason = "invalid_message"


class InvalidAmount(InvalidMessage):
    """A money amount is not an exact, in-range integer of minor units (or exact Decimal price)."""

    reason = "invalid_amount"


class DecodeError(InputError):
    """Bytes that are not a capflow message of a known type and schema version."""

    reason = "decode_error"


class InvalidConfig(InputError):
    """A configuration that cannot work (e.g. a grid with no room for orders)."""

    reason = "invalid_config"


class StateError(CapflowError):
    """Well-formed, but refused by the current state of the books. Nothing was changed."""

    reason = "state_error"


class UnknownOrder(StateError, LookupError):
    """No order (or slot) with that id belongs to this profile."""

    reason = "unknown_order"


class UnknownProfile(StateError, LookupError):
    """No profile with that id runs here."""

    reason = "unknown_profile"


class DuplicateOrder(StateError):
    """An order id that is already in use in this profile."""

    reason = "duplicate_order"


class InvalidFill(StateError):
    """A fill that cannot apply to its order: VIRTUAL slot, wrong asset, price through limit."""

    reason = "invalid_fill"


class OverFill(StateError):
    """A fill larger than what remains of its order."""

    reason = "over_fill"


class InsufficientCapital(StateError):
    """A reservation larger than the profile's available capital."""

    reason = "insufficient_capital"


class InsufficientPosition(StateError):
    """An exit order larger than the position quantity not already being sold."""

    reason = "insufficient_position"


class ProfileHalted(StateError):
    """The profile refuses new reservations until it is reconciled."""

    reason = "profile_halted"


class ExternalError(CapflowError):
    """The outside world failed; the operation may succeed when retried."""

    reason = "external_error"


class StoreUnavailable(ExternalError):
    """The snapshot store or fill journal could not be reached."""

    reason = "store_unavailable"


class ExchangeUnavailable(ExternalError):
    """The exchange could not be reached or refused to answer."""

    reason = "exchange_unavailable"


class StaleFence(ExternalError):
    """A write was refused because the writer's fencing token or lease is not current."""

    reason = "stale_fence"


class CorruptSnapshot(ExternalError):
    """Stored bytes fail their checksum, schema or version check."""

    reason = "corrupt_snapshot"


class FundInvariantViolation(CapflowError):
    """A bug: an accounting invariant does not hold exactly."""

    reason = "invariant_violation"
