"""The pure books: no threads, no I/O, exact to the last minor unit.

- Position profiles (seed 000): :class:`PositionLedger` — capital reserved for orders and
  positions, realized PnL net of fees, restart rebuild.
- Grid profiles (seed 001): :class:`GridBook` — balances, slots and orders, fund components
  recomputed from the grid, and the pure rebalance planner (:func:`plan_rebalance`).

Imports nothing of capflow's but ``messages``.
"""

from accounting.grid import (
    GridConfig,
    GridGeometry,
    Role,
    grid_geometry,
    ideal_sizes,
    price_levels,
    spread_gap,
)
from accounting.grid_funds import GridBook
from accounting.grid_planner import (
    Action,
    CancelOrder,
    CancelRequest,
    CreateOrder,
    ResizeVirtual,
    RotateOrder,
    apply_action,
    apply_plan,
    dust_orders,
    plan_rebalance,
    should_rebalance,
)
from accounting.grid_records import (
    AssetFunds,
    Balance,
    CancelOutcome,
    FeeSettlement,
    GridFillOutcome,
    GridOrder,
    OrderStatus,
    PendingRotation,
    Placement,
    Slot,
    SlotState,
)
from accounting.position import (
    DEFAULT_MAX_FEE_RATE,
    FillOutcome,
    PendingOrder,
    Position,
    PositionBooks,
    PositionLedger,
    entry_estimate,
)

__all__ = [
    "DEFAULT_MAX_FEE_RATE",
    "Action",
    "AssetFunds",
    "Balance",
    "CancelOrder",
    "CancelOutcome",
    "CancelRequest",
    "CreateOrder",
    "FeeSettlement",
    "FillOutcome",
    "GridBook",
    "GridConfig",
    "GridFillOutcome",
    "GridGeometry",
    "GridOrder",
    "OrderStatus",
    "PendingOrder",
    "PendingRotation",
    "Placement",
    "Position",
    "PositionBooks",
    "PositionLedger",
    "ResizeVirtual",
    "Role",
    "RotateOrder",
    "Slot",
    "SlotState",
    "apply_action",
    "apply_plan",
    "dust_orders",
    "entry_estimate",
    "grid_geometry",
    "ideal_sizes",
    "plan_rebalance",
    "price_levels",
    "should_rebalance",
    "spread_gap",
]
