"""Exact money: conversions, one-directional rounding, and rejection of inexact inputs."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messages import (
    MAX_UNITS,
    Asset,
    InvalidAmount,
    InvalidMessage,
    Market,
    Rounding,
    check_price,
    check_units,
    pro_rata,
)
from messages.money import fee_for

USDT = Asset(symbol="USDT", precision=2)
BTC = Asset(symbol="BTC", precision=8)
BTCUSDT = Market(symbol="BTC/USDT", base=BTC, quote=USDT)

prices = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(10**6), places=4)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.0, r"^qty must be an int of minor units, got float 1\.0$"),
        (float("nan"), r"^qty must be an int of minor units, got float nan$"),
        (True, r"^qty must be an int of minor units, got bool True$"),
        (Decimal(1), r"^qty must be an int of minor units, got Decimal Decimal\('1'\)$"),
        (-1, r"^qty must not be negative, got -1$"),
        (2**63, r"^qty 9223372036854775808 exceeds the largest amount 9223372036854775807$"),
    ],
)
def test_check_units_rejects_inexact_or_out_of_range(value: object, message: str) -> None:
    with pytest.raises(InvalidAmount, match=message):
        check_units(value, name="qty")


def test_check_units_zero_is_configurable() -> None:
    assert check_units(0, name="fee") == 0
    with pytest.raises(InvalidAmount, match=r"^qty must be positive, got 0$"):
        check_units(0, name="qty", allow_zero=False)


def test_asset_conversion_is_exact_and_refuses_extra_places() -> None:
    assert USDT.to_units("12.34") == 1234
    assert USDT.to_units(Decimal("0.1")) == 10
    assert USDT.to_decimal(1234) == Decimal("12.34")
    assert USDT.format(5) == "0.05 USDT"
    with pytest.raises(InvalidAmount, match=r"^USDT amount 0\.001 has more than 2 decimal places$"):
        USDT.to_units("0.001")
    with pytest.raises(InvalidAmount, match=r"^USDT amount must not be float$"):
        USDT.to_units(0.1)  # type: ignore[arg-type]
    with pytest.raises(InvalidAmount, match=r"^USDT amount must be finite, got 'NaN'$"):
        USDT.to_units("NaN")


def test_asset_and_market_validate() -> None:
    with pytest.raises(InvalidMessage, match=r"^asset X precision must be an int in \[0, 18\]"):
        Asset(symbol="X", precision=19)
    with pytest.raises(InvalidMessage, match=r"^market BTC/BTC has the same base and quote asset$"):
        Market(symbol="BTC/BTC", base=BTC, quote=BTC)


def test_notional_rounds_in_the_requested_direction() -> None:
    # 0.00012345 BTC at 43250.50 USDT = 5.3392742... USDT = 533.92742... cents
    assert BTCUSDT.notional(12345, Decimal("43250.50"), Rounding.UP) == 534
    assert BTCUSDT.notional(12345, Decimal("43250.50"), Rounding.DOWN) == 533
    assert BTCUSDT.cost_bounds(10**8, Decimal("100")) == (10000, 10000)


@given(qty=st.integers(min_value=0, max_value=10**12), price=prices)
def test_notional_bounds_the_exact_value(qty: int, price: Decimal) -> None:
    exact = Fraction(qty) * Fraction(price) * Fraction(10) ** (2 - 8)
    down = BTCUSDT.notional(qty, price, Rounding.DOWN)
    up = BTCUSDT.notional(qty, price, Rounding.UP)
    assert down <= exact <= up
    assert up - down == (0 if exact.denominator == 1 else 1)


@given(quote=st.integers(min_value=0, max_value=10**9), price=prices)
def test_qty_for_is_the_largest_affordable_quantity(quote: int, price: Decimal) -> None:
    qty = BTCUSDT.qty_for(quote, price)
    assert BTCUSDT.notional(qty, price, Rounding.UP) <= quote
    if qty < MAX_UNITS:  # else capped at the largest amount capflow represents
        assert BTCUSDT.notional(qty + 1, price, Rounding.UP) > quote


def test_prices_with_unbounded_exponents_are_refused() -> None:
    # Exact Fraction arithmetic on 1E+999999999 would never finish: refuse it up front.
    with pytest.raises(InvalidAmount, match=r"^price 1E\+999999999 is outside 1e-30\.\.1e30"):
        check_price(Decimal("1E+999999999"))
    assert check_price(Decimal("1E-29")) == Decimal("1E-29")


def test_fee_rounding() -> None:
    assert fee_for(1001, Decimal("0.001"), Rounding.UP) == 2
    assert fee_for(1001, Decimal("0.001"), Rounding.DOWN) == 1
    with pytest.raises(InvalidAmount, match=r"^fee rate must be within \[0, 1\], got 2$"):
        fee_for(1, Decimal(2), Rounding.UP)


@given(
    amount=st.integers(min_value=0, max_value=10**15),
    parts=st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=20),
)
def test_pro_rata_slices_sum_exactly_to_the_whole(amount: int, parts: list[int]) -> None:
    whole = sum(parts)
    remaining_amount, remaining_qty, released = amount, whole, 0
    for part in parts:
        piece = pro_rata(remaining_amount, part, remaining_qty)
        assert 0 <= piece <= remaining_amount
        released += piece
        remaining_amount -= piece
        remaining_qty -= part
    assert released == amount
    assert remaining_amount == 0
