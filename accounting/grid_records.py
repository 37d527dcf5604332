"""Records of the grid book: slots, orders, balances, fund views and operation outcomes.

All are immutable values validated on construction; the book replaces them, never mutates them.
Amounts are ``int`` minor units; a slot's and an order's ``size`` is in the asset it *sells*
(quote for BUY, base for SELL).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from accounting.grid import Role
from messages import (
    InvalidMessage,
    Side,
    check_enum,
    check_id,
    check_price,
    check_units,
)


class SlotState(enum.StrEnum):
    """VIRTUAL: no exchange order (maybe an earmark, maybe a placement in flight).

    ACTIVE: holds an open exchange order; PARTIAL: holds one that has partly filled.
    """

    VIRTUAL = "virtual"
    ACTIVE = "active"
    PARTIAL = "partial"


class OrderStatus(enum.StrEnum):
    """IN_FLIGHT: placement sent, unconfirmed. OPEN: on the exchange. CANCELING: cancel sent.

    DUST: counted as filled (its slot freed, the boundary moved), but a remainder worth less
    than one unit of the other asset is still open on the exchange; detached like CANCELING,
    its remainder stays committed until the exchange fills it or confirms it canceled.
    """

    IN_FLIGHT = "in_flight"
    OPEN = "open"
    CANCELING = "canceling"
    DUST = "dust"


def _index(value: object, *, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidMessage(f"{name} must be a non-negative int, got {value!r}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    """One price level of the grid.

    Attributes:
        index: position by ascending price.
        price: the level's price.
        role: BUY, SPREAD or SELL, derived from the book's boundary.
        state: VIRTUAL, ACTIVE or PARTIAL.
        size: VIRTUAL: the earmark (or the in-flight size); ACTIVE/PARTIAL: the order's remaining.
        order_id: client order id of the order the slot holds (in flight or open), else None.
        in_flight: a placement was sent for this slot and is not confirmed yet.
    """

    index: int
    price: Decimal
    role: Role
    state: SlotState = SlotState.VIRTUAL
    size: int = 0
    order_id: str | None = None
    in_flight: bool = False

    def __post_init__(self) -> None:
        _index(self.index, name="slot index")
        check_price(self.price)
        check_enum(self.role, Role, name="role")
        check_enum(self.state, SlotState, name="state")
        check_units(self.size, name="slot size")
        if not isinstance(self.in_flight, bool):
            raise InvalidMessage(f"in_flight must be a bool, got {self.in_flight!r}")
        if self.order_id is not None:
            check_id(self.order_id, name="order_id")
        holds_order = self.state is not SlotState.VIRTUAL or self.in_flight
        if holds_order != (self.order_id is not None):
            raise InvalidMessage(
                f"slot {self.index} is {self.state}{' in flight' if self.in_flight else ''}"
                f" with order_id {self.order_id!r}"
            )
        if self.in_flight and self.state is not SlotState.VIRTUAL:
            raise InvalidMessage(f"slot {self.index} is {self.state} and in flight")

    @property
    def is_free(self) -> bool:
        """VIRTUAL, holding no order (only an earmark): a placement can begin here."""
        return self.order_id is None


@dataclass(frozen=True, slots=True, kw_only=True)
class GridOrder:
    """An order of the grid, keyed by our client order id.

    Attributes:
        order_id: our client order id.
        exchange_id: the exchange's order id once known.
        slot: the slot the order sits on; None once it is canceling (the slot is detached).
        side: BUY sells quote, SELL sells base.
        price: limit price (the slot's price).
        size: original size in the sold asset.
        qty: the base amount asked of the exchange (``qty_for(size, price)`` for BUY).
        remaining: unfilled part of ``size``, in the sold asset; committed while OPEN/CANCELING.
        filled_qty: base units filled so far.
        status: IN_FLIGHT, OPEN or CANCELING.
    """

    order_id: str
    exchange_id: str | None
    slot: int | None
    side: Side
    price: Decimal
    size: int
    qty: int
    remaining: int
    filled_qty: int
    status: OrderStatus

    def __post_init__(self) -> None:
        check_id(self.order_id, name="order_id")
        if self.exchange_id is not None:
            check_id(self.exchange_id, name="exchange_id")
        if self.slot is not None:
            _index(self.slot, name="slot")
        check_enum(self.side, Side, name="side")
        check_price(self.price)
        check_units(self.size, name="size", allow_zero=False)
        check_units(self.qty, name="qty", allow_zero=False)
        check_units(self.remaining, name="remaining")
        check_units(self.filled_qty, name="filled_qty")
        check_enum(self.status, OrderStatus, name="status")
        if self.remaining > self.size or self.filled_qty > self.qty:
            raise InvalidMessage(
                f"order {self.order_id}: remaining {self.remaining} of size {self.size},"
                f" filled {self.filled_qty} of qty {self.qty}"
            )
        in_flight = self.status is OrderStatus.IN_FLIGHT
        if in_flight and (self.exchange_id is not None or self.remaining != self.size):
            raise InvalidMessage(f"order {self.order_id} is in flight but has exchange state")
        if (self.slot is None) != (self.status in (OrderStatus.CANCELING, OrderStatus.DUST)):
            raise InvalidMessage(f"order {self.order_id} is {self.status} with slot {self.slot}")

    @property
    def qty_left(self) -> int:
        """Base units the exchange may still fill."""
        return self.qty - self.filled_qty


@dataclass(frozen=True, slots=True, kw_only=True)
class Balance:
    """Primary per-asset state, as the exchange would report it for this profile.

    Attributes:
        total: everything the profile holds of the asset (free + locked in orders).
        free: not locked by the exchange.
        cache_funds: the part of ``free`` that came from fill proceeds (reporting only).
        fees_owed: operation fees accrued and not yet paid (still inside ``total``).
    """

    total: int
    free: int
    cache_funds: int = 0
    fees_owed: int = 0

    def __post_init__(self) -> None:
        for name in ("total", "free", "cache_funds", "fees_owed"):
            check_units(getattr(self, name), name=name)


@dataclass(frozen=True, slots=True, kw_only=True)
class AssetFunds:
    """Every fund component of one asset, recomputed from the grid (never hand-maintained).

    ``available = max(0, free - virtual - in_flight - fees_owed - fee_reservation)``;
    ``cache_funds`` is part of ``free`` and is never subtracted.
    """

    asset: str
    total: int
    free: int
    committed: int
    virtual: int
    in_flight: int
    cache_funds: int
    fees_owed: int
    fee_reservation: int

    @property
    def headroom(self) -> int:
        """``free - virtual - in_flight - fees_owed - fee_reservation``, may be negative."""
        return self.free - self.virtual - self.in_flight - self.fees_owed - self.fee_reservation

    @property
    def available(self) -> int:
        """Capital a new placement or earmark may take."""
        return max(0, self.headroom)

    def owners(self) -> dict[str, int]:
        """Who owns each unit of ``total``: the parts sum to ``total`` when the books hold.

        Fees owed and the fee reservation own only the part of ``free`` left after the grid's
        earmarks and placements (their *covered* part).
        """
        spare = self.free - self.virtual - self.in_flight
        owed = min(self.fees_owed, max(0, spare))
        reserved = min(self.fee_reservation, max(0, spare - owed))
        return {
            "committed": self.committed,
            "virtual": self.virtual,
            "in_flight": self.in_flight,
            "fees_owed": owed,
            "fee_reservation": reserved,
            "unallocated": self.total
            - self.committed
            - self.virtual
            - self.in_flight
            - owed
            - reserved,
        }

    def describe(self) -> str:
        """Every component, for error messages."""
        return (
            f"total={self.total} free={self.free} committed={self.committed}"
            f" virtual={self.virtual} in_flight={self.in_flight}"
            f" cache_funds={self.cache_funds} fees_owed={self.fees_owed}"
            f" fee_reservation={self.fee_reservation} available={self.available}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingRotation:
    """A rotation whose surplus order is canceling; its target placement begins on confirm.

    Attributes:
        cancel_order_id: the surplus order being canceled.
        side: side of both orders.
        slot: the target slot.
        size: planned target size (clamped to the capital there is when the cancel confirms).
        client_order_id: id the target placement will use.
    """

    cancel_order_id: str
    side: Side
    slot: int
    size: int
    client_order_id: str

    def __post_init__(self) -> None:
        check_id(self.cancel_order_id, name="cancel_order_id")
        check_enum(self.side, Side, name="side")
        _index(self.slot, name="slot")
        check_units(self.size, name="size", allow_zero=False)
        check_id(self.client_order_id, name="client_order_id")


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """An order the book has put in flight: what to send to the exchange.

    Attributes:
        client_order_id: our id; resend with the same id after a crash (idempotent).
        slot: the slot it fills.
        side: order side.
        price: limit price.
        qty: base amount to ask for.
        size: capital it takes, in the sold asset.
    """

    client_order_id: str
    slot: int
    side: Side
    price: Decimal
    qty: int
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GridFillOutcome:
    """What :meth:`GridBook.apply_fill` did.

    Attributes:
        trade_id: the fill's trade id.
        order_id: our client order id.
        duplicate: the trade id was applied before; nothing changed.
        implicit_confirm: the order was in flight; the fill confirmed it first.
        full: the order is done (filled, or its remainder rounds to zero in the other asset).
        dust: full, but a worthless remainder is still open on the exchange: the order stays
            (status DUST, remainder committed) until that remainder is canceled or filled.
        released: leftover of a full order returned to ``free`` (sold asset).
        received: net proceeds credited, in the bought asset.
        spent: units of the sold asset that left the book.
        slot: the slot the order sat on, if still attached.
        rotation_dropped: target slot of a pending rotation dropped because its order filled.
    """

    trade_id: str
    order_id: str
    duplicate: bool = False
    implicit_confirm: bool = False
    full: bool = False
    dust: bool = False
    released: int = 0
    received: int = 0
    spent: int = 0
    slot: int | None = None
    rotation_dropped: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelOutcome:
    """What :meth:`GridBook.confirm_cancel` did.

    Attributes:
        order_id: the canceled order.
        noop: the order was already closed; nothing changed.
        released: its remaining, returned to ``free``.
        placement: a rotation target the book put in flight; send it to the exchange.
        rotation_dropped: target slot of a rotation that could not start (reason in docs).
    """

    order_id: str
    noop: bool = False
    released: int = 0
    placement: Placement | None = None
    rotation_dropped: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FeeSettlement:
    """Per asset symbol: fees paid now, and fees still owed because free funds are short."""

    paid: dict[str, int]
    deferred: dict[str, int]
