"""The simulated exchange's settings: fees, latency, failure rates and the partial-fill model."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from messages import InvalidConfig, check_ratio

_ZERO, _ONE = Decimal(0), Decimal(1)


@dataclass(frozen=True, slots=True, kw_only=True)
class PartialFill:
    """How much of a fillable order one price step fills: a seeded random slice.

    Each step fills between ``ceil(amount * low)`` and ``floor(amount * high)`` base units
    (at least 1), capped at the order's remainder. ``PartialFill(low=1, high=1)`` fills whole.
    """

    low: Decimal = Decimal("0.1")
    high: Decimal = Decimal("0.5")

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite() or not 0 < value <= 1:
                raise InvalidConfig(
                    f"partial fill {name} must be a Decimal in (0, 1], got {value!r}"
                )
        if self.low > self.high:
            raise InvalidConfig(f"partial fill low {self.low} exceeds high {self.high}")

    def draw(self, amount: int, rng: random.Random) -> int:
        """One step's fill size for an order of ``amount`` units (before the remainder cap)."""
        lo = max(1, math.ceil(amount * Fraction(self.low)))
        hi = max(lo, math.floor(amount * Fraction(self.high)))
        return rng.randint(lo, hi)


#: The default: each price step fills 10-50 % of a fillable order's amount.
DEFAULT_PARTIAL_FILL = PartialFill()


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The keyword settings of :class:`exchange.SimulatedExchange`, validated."""

    maker_fee: Decimal = _ZERO
    taker_fee: Decimal = _ZERO
    latency: Decimal = _ZERO
    reject_rate: Decimal = _ZERO
    duplicate_rate: Decimal = _ZERO
    partial_fill: PartialFill | None = DEFAULT_PARTIAL_FILL
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("maker_fee", "taker_fee", "reject_rate", "duplicate_rate"):
            check_ratio(getattr(self, name), name=name, low=_ZERO, high=_ONE)
        latency = self.latency
        if not isinstance(latency, Decimal) or not latency.is_finite() or latency < 0:
            raise InvalidConfig(f"latency must be a Decimal of seconds >= 0, got {latency!r}")
        if self.partial_fill is not None and not isinstance(self.partial_fill, PartialFill):
            raise InvalidConfig(
                f"partial_fill must be a PartialFill or None, got {self.partial_fill!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InvalidConfig(f"seed must be an int, got {self.seed!r}")

    def dump(self) -> dict[str, Any]:
        """Plain data: Decimals as strings."""
        fill = self.partial_fill
        return {
            "maker_fee": str(self.maker_fee),
            "taker_fee": str(self.taker_fee),
            "latency": str(self.latency),
            "reject_rate": str(self.reject_rate),
            "duplicate_rate": str(self.duplicate_rate),
            "partial_fill": None if fill is None else [str(fill.low), str(fill.high)],
            "seed": self.seed,
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Settings:
        """Inverse of :meth:`dump`."""
        fill = data["partial_fill"]
        return cls(
            maker_fee=Decimal(data["maker_fee"]),
            taker_fee=Decimal(data["taker_fee"]),
            latency=Decimal(data["latency"]),
            reject_rate=Decimal(data["reject_rate"]),
            duplicate_rate=Decimal(data["duplicate_rate"]),
            partial_fill=None
            if fill is None
            else PartialFill(low=Decimal(fill[0]), high=Decimal(fill[1])),
            seed=data["seed"],
        )
