"""What ``capflow run`` runs: one simulated exchange account shared by grid and position profiles.

Every amount is an exact ``int`` of minor units. The account holds exactly the sum of the
profiles' claims (a grid's base and quote totals, a position profile's allocated capital), and
the runtime is given that balance, so the supervisor's cross-profile cap is checked at start and
an accounting leak between profiles would surface as an exchange refusal.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import cast

from accounting import GridConfig
from actors.events import EventSink
from actors.grid_profile import GridProfileConfig, grid_factory
from actors.position_profile import PositionProfileConfig, position_factory
from actors.profile import HandlerFactory
from actors.runtime import Runtime
from actors.supervisor import ProfileSpec
from exchange import SimulatedExchange
from messages import Asset, Market
from persistence import SnapshotStore

BASE = Asset(symbol="BTC", precision=8)
QUOTE = Asset(symbol="USDT", precision=2)
MARKET = Market(symbol="BTC/USDT", base=BASE, quote=QUOTE)
#: The start of the seeded random walk (a ``--prices`` file starts at its first price).
DEFAULT_START = Decimal("30000")
#: Grid steps, cycled over the grid profiles so that they do not all trade the same levels.
GRID_INCREMENTS = (Decimal("0.004"), Decimal("0.005"), Decimal("0.006"), Decimal("0.0075"))
#: The account that every profile draws on.
ACCOUNT = "main"


@dataclass(frozen=True, slots=True, kw_only=True)
class Setup:
    """The knobs of one run (the CLI's flags plus fixed, documented defaults).

    Attributes:
        grid_profiles: how many grid profiles.
        signal_profiles: how many signal-driven position profiles.
        seed: seeds the exchange, the price walk and the signals.
        start_price: the first price; grids are centred on it.
        maker_fee: the exchange's fee rate on resting (limit) fills.
        taker_fee: the exchange's fee rate on market fills.
        duplicate_rate: chance that the fill feed delivers a trade twice.
        latency: seconds each exchange request waits (really sleeps) before it is served.
        grid_quote: quote units per grid (its buy side); its sell side gets the same worth of
            base at the start price.
        position_capital: quote units allocated to each position profile.
    """

    grid_profiles: int = 4
    signal_profiles: int = 4
    seed: int = 0
    start_price: Decimal = DEFAULT_START
    maker_fee: Decimal = Decimal("0.001")
    taker_fee: Decimal = Decimal("0.002")
    duplicate_rate: Decimal = Decimal("0.02")
    latency: Decimal = Decimal("0.0005")
    grid_quote: int = 1500_00
    position_capital: int = 2000_00


@dataclass(slots=True, kw_only=True)
class World:
    """Everything a run holds on to; built by :func:`build_world`, not yet started."""

    setup: Setup
    market: Market
    exchange: SimulatedExchange
    events: EventSink
    runtime: Runtime
    grids: dict[str, GridProfileConfig] = field(default_factory=dict)
    positions: dict[str, PositionProfileConfig] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)

    @property
    def profile_ids(self) -> list[str]:
        """Grid profiles first, then position profiles, each in creation order."""
        return [*self.grids, *self.positions]

    def kind(self, profile_id: str) -> str:
        """``"grid"`` or ``"position"``."""
        return "grid" if profile_id in self.grids else "position"

    def initial_totals(self, profile_id: str) -> dict[str, int]:
        """What a profile holds at creation, per asset symbol."""
        grid = self.grids.get(profile_id)
        if grid is not None:
            market = grid.grid.market
            return {market.base.symbol: grid.base_total, market.quote.symbol: grid.quote_total}
        position = self.positions[profile_id]
        return {position.quote.symbol: position.allocated_capital}


def price_decimals(price: Decimal, increment: Decimal) -> int:
    """Decimal places that keep neighbouring grid levels at least ~100 ticks apart."""
    return max(QUOTE.precision, 2 - (price * increment).adjusted())


def price_tick(start: Decimal) -> Decimal:
    """The run's smallest price step (grid levels, signal limits, the random walk)."""
    return Decimal(1).scaleb(-price_decimals(start, min(GRID_INCREMENTS)))


def grid_profile_config(index: int, setup: Setup) -> GridProfileConfig:
    """The ``index``-th grid: centred on the start price, levels from 0.8 to 1.25 times it.

    The range is kept narrow on purpose: a rebalance costs O(levels^2) in the grid books
    (every ``ResizeVirtual`` recomputes the funds over all slots), so ~100 levels per grid
    keep eight profiles well inside a 2-core budget.
    """
    start = setup.start_price
    increment = GRID_INCREMENTS[index % len(GRID_INCREMENTS)]
    decimals = price_decimals(start, min(GRID_INCREMENTS))
    tick = Decimal(1).scaleb(-decimals)
    base = MARKET.qty_for(setup.grid_quote, start)
    grid = GridConfig(
        market=MARKET,
        center_price=start.quantize(tick, rounding=ROUND_HALF_EVEN),
        increment=increment,
        target_spread=increment * 3,
        min_price=(start * Decimal("0.8")).quantize(tick, rounding=ROUND_HALF_EVEN),
        max_price=(start * Decimal("1.25")).quantize(tick, rounding=ROUND_HALF_EVEN),
        active_orders=3 + index % 2,
        budget_base=base,
        budget_quote=setup.grid_quote,
        price_decimals=decimals,
    )
    return GridProfileConfig(grid=grid, base_total=base, quote_total=setup.grid_quote)


def build_world(setup: Setup, *, store: SnapshotStore | None = None) -> World:
    """The exchange, the event sink and a runtime (not started) with every profile on it.

    Args:
        setup: the knobs.
        store: the runtime's checkpoint store (default: the runtime's, in memory).

    Raises:
        InvalidConfig: the setup gives an impossible grid (e.g. a start price too small for
            the quote asset's precision).
    """
    events = EventSink()
    grids = {f"grid{i + 1}": grid_profile_config(i, setup) for i in range(setup.grid_profiles)}
    positions = {
        f"sig{i + 1}": PositionProfileConfig(
            quote=QUOTE,
            allocated_capital=setup.position_capital,
            markets={MARKET.symbol: MARKET},
            max_fee_rate=max(setup.maker_fee, setup.taker_fee),
        )
        for i in range(setup.signal_profiles)
    }
    claims: dict[str, Mapping[str, int]] = {}
    for pid, grid in grids.items():
        claims[pid] = {BASE.symbol: grid.base_total, QUOTE.symbol: grid.quote_total}
    for pid, position in positions.items():
        claims[pid] = {QUOTE.symbol: position.allocated_capital}
    balances: collections.Counter[str] = collections.Counter()
    for claim in claims.values():
        balances.update(claim)
    exchange = SimulatedExchange(
        [MARKET],
        dict(balances),
        maker_fee=setup.maker_fee,
        taker_fee=setup.taker_fee,
        latency=setup.latency,
        duplicate_rate=setup.duplicate_rate,
        seed=setup.seed,
        sleep=time.sleep,
    )
    # cast: the factories are annotated as plain Callables, which mypy does not accept as the
    # HandlerFactory protocol (whose parameters have names); they are exactly that protocol.
    specs = [
        ProfileSpec(
            profile_id=pid,
            factory=cast(HandlerFactory, grid_factory(grid, exchange=exchange, events=events)),
            symbols=frozenset({MARKET.symbol}),
            account_id=ACCOUNT,
            claims=claims[pid],
        )
        for pid, grid in grids.items()
    ] + [
        ProfileSpec(
            profile_id=pid,
            factory=cast(
                HandlerFactory, position_factory(position, exchange=exchange, events=events)
            ),
            symbols=frozenset({MARKET.symbol}),
            account_id=ACCOUNT,
            claims=claims[pid],
        )
        for pid, position in positions.items()
    ]
    runtime = Runtime(specs, events=events, store=store, balances={ACCOUNT: dict(balances)})
    return World(
        setup=setup,
        market=MARKET,
        exchange=exchange,
        events=events,
        runtime=runtime,
        grids=grids,
        positions=positions,
        balances=dict(balances),
    )
