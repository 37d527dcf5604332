"""A parsed scenario: frozen values for its configuration and for each of its steps.

:mod:`capflow.scenario_parse` builds them from YAML (checking everything that can be checked
before the runtime starts); :mod:`capflow.scenario_run` executes them. The format is documented
in ``docs/scenarios.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from accounting import GridConfig
from capflow.scenario_expect import Expectation
from capflow.scenario_yaml import Amount
from exchange import PartialFill
from messages import Asset, Market, Side

STEP_TYPES = (
    "signal",
    "price",
    "fill",
    "cancel",
    "crash",
    "batch",
    "bootstrap",
    "restart",
    "exchange",
    "mark",
    "expect",
)
#: Step types that submit messages, and may appear inside a ``batch``.
SUBMIT_TYPES = ("signal", "price", "fill", "cancel", "crash")


# -- configuration -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeSettings:
    """The simulated exchange. Whole fills by default: hand-computable, timing-free."""

    maker_fee: Decimal = Decimal(0)
    taker_fee: Decimal = Decimal(0)
    partial_fill: PartialFill | None = None
    duplicate_rate: Decimal = Decimal(0)
    seed: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionDef:
    """A signal-driven position profile (seed 000)."""

    id: str
    quote: Asset
    allocated_capital: int
    markets: dict[str, Market]
    max_fee_rate: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class GridDef:
    """A grid profile (seed 001)."""

    id: str
    config: GridConfig
    base_total: int
    quote_total: int


ProfileDef = PositionDef | GridDef


# -- steps ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class SignalItem:
    """Open or close a position: an ``OpenPosition`` or ``ClosePosition`` command."""

    path: str
    profile: str
    signal_id: str
    action: str
    symbol: str
    position: str
    qty: int | None
    limit_price: Decimal | None
    estimate: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceItem:
    """Move the simulated exchange to a price; pump its trades; then a ``PriceTick``."""

    path: str
    symbol: str
    price: Decimal
    tick: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class FillItem:
    """A scripted exchange fill, submitted as it is (the exchange does not see it)."""

    path: str
    trade_id: str
    client_order_id: str
    order_id: str | None
    symbol: str
    side: Side | None
    qty: int
    price: Decimal
    cost: int
    fee: Amount
    fee_asset: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelItem:
    """Cancel an order on the exchange and report the ``OrderCanceled`` to the runtime."""

    path: str
    client_order_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CrashItem:
    """Crash a profile's actor: out of band (``CrashNow``) or a logged poison message."""

    path: str
    profile: str
    poison: bool


SubmitItem = SignalItem | PriceItem | FillItem | CancelItem | CrashItem


@dataclass(frozen=True, slots=True, kw_only=True)
class Submit:
    """Messages submitted together in one ``Runtime.submit`` call."""

    items: tuple[SubmitItem, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Bootstrap:
    """Begin a held bootstrap (``hold_bootstrap``) or end it (``complete_bootstrap``)."""

    profile: str
    begin: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Restart:
    """A fresh bootstrap of a profile from its last checkpoint."""

    profile: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeGate:
    """Take the exchange's order entry (create) or cancel API down or up for the profiles."""

    create: bool | None
    cancel: bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Mark:
    """Remember every profile's state under ``name`` (for ``expect: {unchanged: name}``)."""

    name: str


Action = Submit | Bootstrap | Restart | ExchangeGate | Mark | Expectation


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One step: what it does, where it is in the file, and an optional note."""

    index: int
    kind: str
    action: Action
    note: str | None = None

    @property
    def path(self) -> str:
        return f"steps[{self.index}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A parsed scenario, ready to run."""

    name: str
    description: str | None
    source: str
    assets: dict[str, Asset]
    markets: dict[str, Market]
    exchange: ExchangeSettings
    account: dict[str, int]
    profiles: tuple[ProfileDef, ...]
    steps: tuple[Step, ...] = field(default=())

    def profile(self, profile_id: str) -> ProfileDef | None:
        return next((p for p in self.profiles if p.id == profile_id), None)
