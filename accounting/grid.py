"""Grid profile configuration: price levels, slot roles and geometric sizing (DEXBot2 grid).

Everything here is a pure function of a :class:`GridConfig`. Prices are ``Decimal`` computed in
one fixed local context (34 digits, half-even) and quantized to ``price_decimals``, so the same
config yields the same levels on every machine. Sizes are ``int`` minor units computed with exact
integer arithmetic: the sizes of one side always sum to exactly the side's budget.

Slots are indexed ``0..n-1`` by ascending price. A boundary index ``b`` splits them: slots
``[b, b+G)`` form the spread (no orders), below it the BUY side, above it the SELL side.
"""

from __future__ import annotations

import enum
import functools
import itertools
import math
from dataclasses import dataclass
from decimal import (
    ROUND_CEILING,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from fractions import Fraction

from messages import (
    Asset,
    InvalidConfig,
    InvalidMessage,
    Market,
    Rounding,
    Side,
    check_price,
    check_ratio,
    check_units,
)

#: The one Decimal context every grid price is computed in (never the thread's context).
PRICE_CONTEXT = Context(
    prec=34, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow]
)
#: A grid with more price levels than this is refused (a typo'd increment, not a strategy).
MAX_LEVELS = 5000
#: The target spread must span at least this many increments (the DEXBot2 rule).
MIN_SPREAD_INCREMENTS = Decimal("2.1")


class Role(enum.StrEnum):
    """What a slot is for, derived from the boundary: buy below the spread, sell above it."""

    BUY = "buy"
    SPREAD = "spread"
    SELL = "sell"

    @property
    def side(self) -> Side | None:
        """The order side a slot of this role holds, ``None`` for the spread."""
        return _ROLE_SIDE[self]


# A lookup, not Side(self.value): this runs once per slot whenever funds are recomputed.
_ROLE_SIDE: dict[Role, Side | None] = {Role.BUY: Side.BUY, Role.SPREAD: None, Role.SELL: Side.SELL}


def _int_field(value: object, *, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidConfig(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"within [{low}, {high}]"
        raise InvalidConfig(f"{name} must be {bounds}, got {value}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class GridConfig:
    """A grid profile's configuration. Impossible configs raise :class:`InvalidConfig`.

    Attributes:
        market: the traded pair; BUY slots sell ``quote``, SELL slots sell ``base``.
        center_price: the start price the grid is centered on.
        increment: relative step between levels, in ``(0, 0.5]`` (``0.01`` = 1 %).
        target_spread: relative width of the spread, at least 2.1 increments.
        min_price: lowest level allowed (exclusive of levels below it).
        max_price: highest level allowed.
        active_orders: how many slots per side, nearest the spread, hold exchange orders.
        budget_base: base units earmarked for the SELL side at creation.
        budget_quote: quote units earmarked for the BUY side at creation.
        weight_ratio: geometric decay of slot sizes per slot away from the spread, in ``(0, 1]``.
        op_fee: exchange-operation fee per confirmed create or cancel, minor units.
        op_fee_asset: ``"base"``, ``"quote"`` or either asset's symbol.
        fee_reservation_ops: how many future operations' fees are held back from ``available``.
        dust_ratio: a partial whose remaining is below this fraction of its ideal size is dust.
        min_target_ratio: a new order or rotation target must be at least this fraction of
            its slot's ideal size.
        price_decimals: decimal places every level is quantized to.
    """

    market: Market
    center_price: Decimal
    increment: Decimal
    target_spread: Decimal
    min_price: Decimal
    max_price: Decimal
    active_orders: int
    budget_base: int
    budget_quote: int
    price_decimals: int
    weight_ratio: Decimal = Decimal("0.95")
    op_fee: int = 0
    op_fee_asset: str = "quote"
    fee_reservation_ops: int = 0
    dust_ratio: Decimal = Decimal("0.05")
    min_target_ratio: Decimal = Decimal("0.10")

    def __post_init__(self) -> None:
        if not isinstance(self.market, Market):
            raise InvalidConfig(f"market must be a Market, got {self.market!r}")
        try:
            for name in ("center_price", "min_price", "max_price"):
                check_price(getattr(self, name), name=name)
            for name in ("increment", "target_spread", "weight_ratio"):
                check_ratio(getattr(self, name), name=name, low=Decimal(0), high=Decimal(1))
            for name in ("dust_ratio", "min_target_ratio"):
                check_ratio(getattr(self, name), name=name, low=Decimal(0), high=Decimal(1))
            check_units(self.budget_base, name="budget_base", allow_zero=False)
            check_units(self.budget_quote, name="budget_quote", allow_zero=False)
            check_units(self.op_fee, name="op_fee")
        except InvalidMessage as exc:
            raise InvalidConfig(str(exc)) from exc
        _int_field(self.active_orders, name="active_orders", low=1)
        _int_field(self.fee_reservation_ops, name="fee_reservation_ops", low=0, high=10**6)
        _int_field(self.price_decimals, name="price_decimals", low=0, high=18)
        if not Decimal(0) < self.increment <= Decimal("0.5"):
            raise InvalidConfig(f"increment must be within (0, 0.5], got {self.increment}")
        if self.weight_ratio == 0:
            raise InvalidConfig("weight_ratio must be within (0, 1], got 0")
        if self.target_spread < MIN_SPREAD_INCREMENTS * self.increment:
            raise InvalidConfig(
                f"target_spread {self.target_spread} must be at least 2.1 x increment"
                f" {self.increment} = {MIN_SPREAD_INCREMENTS * self.increment}"
            )
        if not self.min_price < self.center_price < self.max_price:
            raise InvalidConfig(
                f"prices must satisfy min_price < center_price < max_price, got"
                f" {self.min_price} < {self.center_price} < {self.max_price}"
            )
        if self.op_fee_asset not in ("base", "quote", *self.market_symbols()):
            raise InvalidConfig(
                f"op_fee_asset must be 'base', 'quote', {self.market.base.symbol!r} or"
                f" {self.market.quote.symbol!r}, got {self.op_fee_asset!r}"
            )
        _check_geometry(self, grid_geometry(self))

    def market_symbols(self) -> tuple[str, str]:
        """``(base symbol, quote symbol)``."""
        return (self.market.base.symbol, self.market.quote.symbol)

    @property
    def fee_asset(self) -> Asset:
        """The asset operation fees are charged in."""
        if self.op_fee_asset in ("base", self.market.base.symbol):
            return self.market.base
        return self.market.quote

    @property
    def fee_reservation(self) -> int:
        """Fees held back for future operations, in :attr:`fee_asset` units."""
        return self.op_fee * self.fee_reservation_ops

    def asset_sold(self, side: Side) -> Asset:
        """The asset an order of ``side`` sells: quote for BUY, base for SELL."""
        return self.market.quote if side is Side.BUY else self.market.base

    def budget(self, side: Side) -> int:
        """The configured creation budget of ``side`` (in the asset that side sells)."""
        return self.budget_quote if side is Side.BUY else self.budget_base


@dataclass(frozen=True, slots=True, kw_only=True)
class GridGeometry:
    """Derived, immutable layout of a grid.

    Attributes:
        prices: every level, ascending, quantized to the config's ``price_decimals``.
        gap: number of spread slots ``G``.
        initial_boundary: the first spread slot when the spread is centered on the center price.
    """

    prices: tuple[Decimal, ...]
    gap: int
    initial_boundary: int

    @property
    def size(self) -> int:
        """Number of slots."""
        return len(self.prices)


def spread_gap(target_spread: Decimal, increment: Decimal) -> int:
    """``G = max(2, ceil(ln(1+s) / ln(1+inc)) - 1)`` spread slots."""
    with localcontext(PRICE_CONTEXT):
        ratio = (1 + target_spread).ln() / (1 + increment).ln()
        steps = int(ratio.to_integral_value(rounding=ROUND_CEILING))
    return max(2, steps - 1)


def price_levels(
    center: Decimal, increment: Decimal, low: Decimal, high: Decimal, decimals: int
) -> tuple[tuple[Decimal, ...], int]:
    """All levels ascending, and how many of them lie below the center.

    Up from the center: ``center*sqrt(1+inc)``, then ``*(1+inc)`` while ``<= high``; down:
    ``center*sqrt(1-inc)``, then ``*(1-inc)`` while ``>= low``. The running products keep full
    context precision; only the reported levels are quantized.
    """
    quantum = Decimal(1).scaleb(-decimals)
    ups: list[Decimal] = []
    downs: list[Decimal] = []
    with localcontext(PRICE_CONTEXT) as ctx:
        for factor, out in ((1 + increment, ups), (1 - increment, downs)):
            price = center * factor.sqrt()
            while low <= price <= high:
                if len(ups) + len(downs) >= MAX_LEVELS:
                    raise InvalidConfig(
                        f"grid would have more than {MAX_LEVELS} levels; raise the increment"
                        " or narrow [min_price, max_price]"
                    )
                out.append(price)
                price *= factor
        levels = [p.quantize(quantum, context=ctx) for p in [*reversed(downs), *ups]]
    for lower, upper in itertools.pairwise(levels):
        if lower >= upper:
            raise InvalidConfig(
                f"price_decimals {decimals} is too coarse: adjacent levels both round to {lower}"
            )
    if levels and levels[0] <= 0:
        raise InvalidConfig(f"price_decimals {decimals} rounds the lowest level to {levels[0]}")
    return tuple(levels), len(downs)


@functools.lru_cache(maxsize=256)
def grid_geometry(config: GridConfig) -> GridGeometry:
    """The levels, spread gap and initial boundary of ``config`` (cached per config)."""
    prices, below = price_levels(
        config.center_price,
        config.increment,
        config.min_price,
        config.max_price,
        config.price_decimals,
    )
    gap = spread_gap(config.target_spread, config.increment)
    return GridGeometry(prices=prices, gap=gap, initial_boundary=below - gap // 2)


def role_of(index: int, boundary: int, gap: int) -> Role:
    """Role of slot ``index`` for a spread window ``[boundary, boundary + gap)``."""
    if index < boundary:
        return Role.BUY
    return Role.SPREAD if index < boundary + gap else Role.SELL


def side_indices(side: Side, boundary: int, gap: int, size: int) -> range:
    """Slot indices of ``side``, nearest the spread first."""
    if side is Side.BUY:
        return range(boundary - 1, -1, -1)
    return range(boundary + gap, size)


@functools.lru_cache(maxsize=256)
def _weights(count: int, ratio: Decimal) -> tuple[tuple[int, ...], int]:
    # w_k = r**k with r = a/c; scaled by c**(count-1) every weight is an exact integer.
    frac = Fraction(ratio)
    a, c = frac.numerator, frac.denominator
    weights = tuple(a**k * c ** (count - 1 - k) for k in range(count))
    return weights, sum(weights)


def ideal_sizes(count: int, budget: int, weight_ratio: Decimal) -> tuple[int, ...]:
    """Geometric sizes for ``count`` slots, index ``k`` = distance from the spread.

    ``size_k = floor(budget * r**k / sum(r**j))`` computed exactly, and the rounding remainder
    goes to ``k = 0`` (the largest slot, next to the spread), so the sizes sum to ``budget``.
    """
    _int_field(count, name="count", low=0)
    check_units(budget, name="budget")
    if count == 0:
        return ()
    weights, total = _weights(count, weight_ratio)
    sizes = [budget * w // total for w in weights]
    sizes[0] += budget - sum(sizes)
    return tuple(sizes)


def min_target(ideal: int, ratio: Decimal) -> int:
    """Smallest acceptable order size for a slot of ``ideal`` size: ``ceil(ratio * ideal)``."""
    return math.ceil(Fraction(ratio) * ideal)


def is_dust(remaining: int, ideal: int, ratio: Decimal) -> bool:
    """Whether a partial's ``remaining`` is below ``ratio`` of its slot's ``ideal`` size."""
    return Fraction(remaining) < Fraction(ratio) * ideal


def exchange_qty(market: Market, side: Side, size: int, price: Decimal) -> int:
    """Base units an order selling ``size`` of its asset asks the exchange for.

    BUY sells quote: ``market.qty_for(size, price)``; SELL sells ``size`` base.
    """
    return market.qty_for(size, price) if side is Side.BUY else size


def worth_in_other_asset(market: Market, side: Side, size: int, price: Decimal) -> int:
    """What ``size`` of the sold asset buys in the other asset, rounded down (0 = dust)."""
    if side is Side.BUY:
        return market.qty_for(size, price)
    return market.notional(size, price, Rounding.DOWN)


def _check_geometry(config: GridConfig, geo: GridGeometry) -> None:
    n, b, gap, per_side = geo.size, geo.initial_boundary, geo.gap, config.active_orders
    buys, sells = b, n - b - gap
    if min(buys, sells) < per_side:
        raise InvalidConfig(
            f"no room for {per_side} orders per side: {n} levels in"
            f" [{config.min_price}, {config.max_price}] with a spread of {gap} slots leave"
            f" {max(buys, 0)} buy and {max(sells, 0)} sell slots"
        )
    for side in (Side.BUY, Side.SELL):
        indices = side_indices(side, b, gap, n)
        sizes = ideal_sizes(len(indices), config.budget(side), config.weight_ratio)
        for index, size in zip(indices, sizes, strict=True):
            if worth_in_other_asset(config.market, side, size, geo.prices[index]) < 1:
                asset = config.asset_sold(side).symbol
                raise InvalidConfig(
                    f"{side} budget {config.budget(side)} {asset} is too small: slot {index}"
                    f" at {geo.prices[index]} would get {size}, worth less than one unit of"
                    " the other asset"
                )
