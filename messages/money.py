"""Exact money: integer minor units, Decimal prices, explicit one-directional rounding.

Amounts are ``int`` counts of an asset's smallest unit (``Asset.precision`` decimal places).
Prices are ``Decimal`` in *major* units of quote per *major* unit of base (``43250.5`` USDT per
BTC). Converting between them goes through exact rationals (:class:`fractions.Fraction`), and the
caller picks the direction: reservations round **up** (never reserve too little), proceeds round
**down** (never credit what was not received). ``float`` never enters: it is rejected everywhere.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from messages.errors import InvalidAmount, InvalidMessage

MAX_PRECISION = 18
#: Largest amount accepted anywhere (2**63 - 1): fits msgpack int64 and Redis integers.
MAX_UNITS = 2**63 - 1


class Rounding(enum.Enum):
    """Direction of an explicit rounding to whole minor units."""

    UP = "up"  # reservations, costs we must be able to pay
    DOWN = "down"  # proceeds, credits


def check_units(
    value: object, *, name: str, allow_zero: bool = True, allow_negative: bool = False
) -> int:
    """Return ``value`` if it is an exact integer amount in range, else raise InvalidAmount.

    ``bool`` and ``float`` (including NaN and infinities) are rejected even when integral:
    an amount that passed through a float may already be wrong.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(
            f"{name} must be an int of minor units, got {type(value).__name__} {value!r}"
        )
    if value < 0 and not allow_negative:
        raise InvalidAmount(f"{name} must not be negative, got {value}")
    if value == 0 and not allow_zero:
        raise InvalidAmount(f"{name} must be positive, got 0")
    if abs(value) > MAX_UNITS:
        raise InvalidAmount(f"{name} {value} exceeds the largest amount {MAX_UNITS}")
    return value


#: Prices must lie within 10**-PRICE_EXPONENT_LIMIT .. 10**PRICE_EXPONENT_LIMIT and carry at most
#: PRICE_MAX_DIGITS significant digits: exact Fraction arithmetic on an unbounded exponent
#: (``Decimal("1E+999999999")``) would never finish.
PRICE_EXPONENT_LIMIT = 30
PRICE_MAX_DIGITS = 40


def check_price(value: object, *, name: str = "price") -> Decimal:
    """Return ``value`` if it is a finite, positive, bounded ``Decimal``; else InvalidAmount."""
    if not isinstance(value, Decimal):
        raise InvalidAmount(f"{name} must be a Decimal, got {type(value).__name__} {value!r}")
    if not value.is_finite():
        raise InvalidAmount(f"{name} must be finite, got {value}")
    if value <= 0:
        raise InvalidAmount(f"{name} must be positive, got {value}")
    digits = len(value.as_tuple().digits)
    if not -PRICE_EXPONENT_LIMIT <= value.adjusted() < PRICE_EXPONENT_LIMIT or (
        digits > PRICE_MAX_DIGITS
    ):
        raise InvalidAmount(
            f"{name} {value} is outside 1e-{PRICE_EXPONENT_LIMIT}..1e{PRICE_EXPONENT_LIMIT}"
            f" or has more than {PRICE_MAX_DIGITS} digits"
        )
    return value


def check_ratio(value: object, *, name: str, low: Decimal, high: Decimal) -> Decimal:
    """Return a Decimal ratio (fee rate, increment) within ``[low, high]``."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidAmount(f"{name} must be a finite Decimal, got {value!r}")
    if not low <= value <= high:
        raise InvalidAmount(f"{name} must be within [{low}, {high}], got {value}")
    return value


def _round(value: Fraction, rounding: Rounding) -> int:
    return math.ceil(value) if rounding is Rounding.UP else math.floor(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Asset:
    """An asset and the number of decimal places of its smallest unit."""

    symbol: str
    precision: int

    def __post_init__(self) -> None:
        if not isinstance(self.symbol, str) or not self.symbol or not self.symbol.isprintable():
            raise InvalidMessage(f"asset symbol must be a non-empty string, got {self.symbol!r}")
        if (
            isinstance(self.precision, bool)
            or not isinstance(self.precision, int)
            or not 0 <= self.precision <= MAX_PRECISION
        ):
            raise InvalidMessage(
                f"asset {self.symbol} precision must be an int in [0, {MAX_PRECISION}],"
                f" got {self.precision!r}"
            )

    def to_units(self, amount: Decimal | str | int) -> int:
        """Exact conversion of a major-unit amount to minor units; off-precision is an error."""
        if isinstance(amount, bool | float):
            raise InvalidAmount(f"{self.symbol} amount must not be {type(amount).__name__}")
        try:
            dec = Decimal(amount)
        except (InvalidOperation, TypeError, ValueError) as exc:
            raise InvalidAmount(f"{self.symbol} amount {amount!r} is not a number") from exc
        if not dec.is_finite():
            raise InvalidAmount(f"{self.symbol} amount must be finite, got {amount!r}")
        scaled = Fraction(dec) * 10**self.precision
        if scaled.denominator != 1:
            raise InvalidAmount(
                f"{self.symbol} amount {amount} has more than {self.precision} decimal places"
            )
        return check_units(int(scaled), name=f"{self.symbol} amount", allow_negative=True)

    def to_decimal(self, units: int) -> Decimal:
        """Minor units back to an exact Decimal in major units."""
        return Decimal(check_units(units, name="units", allow_negative=True)).scaleb(
            -self.precision
        )

    def format(self, units: int) -> str:
        """Human-readable amount, e.g. ``'12.50 USDT'``."""
        return f"{self.to_decimal(units):.{self.precision}f} {self.symbol}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Market:
    """A trading pair: quantities in ``base`` minor units, costs in ``quote`` minor units."""

    symbol: str
    base: Asset
    quote: Asset

    def __post_init__(self) -> None:
        if not isinstance(self.symbol, str) or not self.symbol:
            raise InvalidMessage(f"market symbol must be a non-empty string, got {self.symbol!r}")
        if self.base.symbol == self.quote.symbol:
            raise InvalidMessage(f"market {self.symbol} has the same base and quote asset")

    def _scale(self) -> Fraction:
        return Fraction(10) ** (self.quote.precision - self.base.precision)

    def notional(self, qty: int, price: Decimal, rounding: Rounding) -> int:
        """Quote units worth ``qty`` base units at ``price``, rounded in the given direction."""
        check_units(qty, name="qty")
        check_price(price)
        whole, rest = self._divmod(qty, price)
        return whole + 1 if rest and rounding is Rounding.UP else whole

    def _divmod(self, qty: int, price: Decimal) -> tuple[int, int]:
        # Exact integer arithmetic (the hot path of every fill): no Fraction objects.
        numerator, denominator = price.as_integer_ratio()
        numerator *= qty
        shift = self.quote.precision - self.base.precision
        if shift >= 0:
            numerator *= 10**shift
        else:
            denominator *= 10**-shift
        return divmod(numerator, denominator)

    def qty_for(self, quote_units: int, price: Decimal) -> int:
        """Largest base quantity (<= MAX_UNITS) whose notional rounded UP fits ``quote_units``."""
        check_units(quote_units, name="quote_units")
        check_price(price)
        qty = min(MAX_UNITS, math.floor(Fraction(quote_units) / (Fraction(price) * self._scale())))
        # ceil(qty*p) can exceed quote_units only by rounding; step back at most once.
        while qty > 0 and self.notional(qty, price, Rounding.UP) > quote_units:
            qty -= 1
        return qty

    def cost_bounds(self, qty: int, price: Decimal) -> tuple[int, int]:
        """The (floor, ceil) notional: an exchange-reported trade cost must lie within."""
        check_units(qty, name="qty")
        check_price(price)
        return self.valid_cost_bounds(qty, price)

    def valid_cost_bounds(self, qty: int, price: Decimal) -> tuple[int, int]:
        """:meth:`cost_bounds` of a ``qty`` and ``price`` validated already (a ``Fill``'s).

        The same result without checking the arguments again: every fill's hot path.
        """
        whole, rest = self._divmod(qty, price)  # one exact division for both bounds
        return whole, whole + 1 if rest else whole


def fee_for(amount: int, rate: Decimal, rounding: Rounding) -> int:
    """A fee of ``rate`` (e.g. ``Decimal('0.001')``) on ``amount`` units, rounded explicitly."""
    check_units(amount, name="amount")
    check_ratio(rate, name="fee rate", low=Decimal(0), high=Decimal(1))
    return _round(Fraction(amount) * Fraction(rate), rounding)


def pro_rata(amount: int, part: int, whole: int) -> int:
    """``amount * part / whole`` rounded down, and exactly ``amount`` when ``part == whole``.

    Used to release a slice of a cost basis: slices round down, and the last slice takes the
    remainder, so the releases of a position always sum to exactly its cost.
    """
    check_units(amount, name="amount")
    check_units(part, name="part")
    check_units(whole, name="whole", allow_zero=False)
    if part > whole:
        raise InvalidAmount(f"part {part} exceeds whole {whole}")
    if part == whole:
        return amount
    return amount * part // whole
