"""Grid configuration: price levels, spread gap, roles, geometric sizes, impossible configs."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accounting.grid import (
    Role,
    grid_geometry,
    ideal_sizes,
    min_target,
    price_levels,
    spread_gap,
)
from accounting.grid_records import SlotState
from messages import InvalidConfig, Side
from tests.accounting.test_grid_support import make_book, make_config

EXAMPLE_PRICES = tuple(
    Decimal(p)
    for p in (
        "0.955781",
        "0.965435",
        "0.975187",
        "0.985038",
        "0.994987",
        "1.004988",
        "1.015037",
        "1.025188",
        "1.035440",
        "1.045794",
    )
)


def test_example_levels_are_geometric_around_the_center() -> None:
    geo = grid_geometry(make_config())
    assert geo.prices == EXAMPLE_PRICES
    # first level each way is center * sqrt(1 +/- inc); then steps of (1 +/- inc)
    assert geo.prices[5] == Decimal("1.004988")  # sqrt(1.01) = 1.0049875...
    assert geo.prices[4] == Decimal("0.994987")  # sqrt(0.99) = 0.9949874...
    assert geo.prices[6] == Decimal("1.015037")  # 1.0049875 * 1.01
    assert (geo.gap, geo.initial_boundary, geo.size) == (2, 4, 10)


def test_levels_stop_at_the_price_bounds_and_are_deterministic() -> None:
    levels, below = price_levels(
        Decimal("100"), Decimal("0.1"), Decimal("80"), Decimal("120"), decimals=4
    )
    # up: 104.8809, 115.3690, (126.9 > 120 stops); down: 94.8683, 85.3815, (76.8 < 80 stops)
    assert levels == tuple(Decimal(p) for p in ("85.3815", "94.8683", "104.8809", "115.3690"))
    assert below == 2
    assert price_levels(Decimal("100"), Decimal("0.1"), Decimal("80"), Decimal("120"), 4) == (
        levels,
        below,
    )


@pytest.mark.parametrize(
    ("spread", "gap"),
    [
        # G = max(2, ceil(ln(1+s) / ln(1+inc)) - 1), inc = 1 %
        ("0.021", 2),  # ceil(2.09) - 1 = 2
        ("0.03", 2),  # ceil(2.97) - 1 = 2
        ("0.04", 3),  # ceil(3.94) - 1 = 3
        ("0.05", 4),  # ceil(4.90) - 1 = 4
        ("0.1", 9),  # ceil(9.58) - 1 = 9
    ],
)
def test_spread_gap_formula(spread: str, gap: int) -> None:
    assert spread_gap(Decimal(spread), Decimal("0.01")) == gap


def test_initial_roles_center_the_spread() -> None:
    book = make_book()
    roles = [s.role for s in book.slots]
    assert roles == [Role.BUY] * 4 + [Role.SPREAD] * 2 + [Role.SELL] * 4
    assert book.boundary == 4
    assert list(book.side_slots(Side.BUY)) == [3, 2, 1, 0]
    assert list(book.side_slots(Side.SELL)) == [6, 7, 8, 9]


def test_initial_slots_get_their_ideal_size_as_virtual() -> None:
    book = make_book()
    assert [s.size for s in book.slots] == [100, 200, 400, 800, 0, 0, 800, 400, 200, 100]
    assert all(s.state is SlotState.VIRTUAL and s.order_id is None for s in book.slots)


@pytest.mark.parametrize(
    ("count", "budget", "ratio", "sizes"),
    [
        (4, 1500, "0.5", (800, 400, 200, 100)),  # exact: weights 8:4:2:1
        (4, 1000, "0.5", (535, 266, 133, 66)),  # floors 533+266+133+66 = 998; +2 to the largest
        (3, 100, "0.95", (36, 33, 31)),  # floors 35+33+31 = 99; +1 to the largest
        (3, 10, "1", (4, 3, 3)),  # equal weights; the remainder still goes to k = 0
        (1, 7, "0.95", (7,)),
        (0, 0, "0.95", ()),
    ],
)
def test_ideal_sizes_sum_exactly_with_remainder_to_largest(
    count: int, budget: int, ratio: str, sizes: tuple[int, ...]
) -> None:
    assert ideal_sizes(count, budget, Decimal(ratio)) == sizes


@given(
    count=st.integers(1, 60),
    budget=st.integers(0, 10**15),
    ratio=st.decimals(min_value=Decimal("0.01"), max_value=Decimal(1), places=2),
)
def test_ideal_sizes_always_sum_to_budget_and_decay(
    count: int, budget: int, ratio: Decimal
) -> None:
    sizes = ideal_sizes(count, budget, ratio)
    assert sum(sizes) == budget
    assert all(a >= b for a, b in itertools.pairwise(sizes))


def test_min_target_rounds_up() -> None:
    assert min_target(800, Decimal("0.10")) == 80
    assert min_target(801, Decimal("0.10")) == 81
    assert min_target(0, Decimal("0.10")) == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"target_spread": Decimal("0.02")},
            r"target_spread 0\.02 must be at least 2\.1 x increment 0\.01 = 0\.021",
        ),
        (
            {"min_price": Decimal("1")},
            r"prices must satisfy min_price < center_price < max_price, got 1 < 1 < 1\.05",
        ),
        (
            {"active_orders": 5},
            r"no room for 5 orders per side: 10 levels in \[0\.95, 1\.05\] with a spread of 2"
            r" slots leave 4 buy and 4 sell slots",
        ),
        (
            {"budget_quote": 10},
            r"buy budget 10 USD is too small: slot 0 at 0\.955781 would get 0, worth less than"
            r" one unit of the other asset",
        ),
        (
            {"price_decimals": 1},
            r"price_decimals 1 is too coarse: adjacent levels both round to 1\.0",
        ),
        ({"increment": Decimal("0.6")}, r"increment must be within \(0, 0\.5\], got 0\.6"),
        ({"center_price": 1.0}, r"center_price must be a Decimal, got float 1\.0"),
        ({"weight_ratio": Decimal(0)}, r"weight_ratio must be within \(0, 1\], got 0"),
        (
            {"op_fee_asset": "EUR"},
            r"op_fee_asset must be 'base', 'quote', 'BTS' or 'USD', got 'EUR'",
        ),
        ({"active_orders": True}, r"active_orders must be an int, got bool True"),
        ({"budget_base": -1}, r"budget_base must not be negative, got -1"),
        ({"budget_base": 0}, r"budget_base must be positive, got 0"),
        (
            {"increment": Decimal("1e-9"), "min_price": Decimal("0.0001")},
            r"grid would have more than 5000 levels; raise the increment or narrow"
            r" \[min_price, max_price\]",
        ),
    ],
)
def test_impossible_configs_are_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidConfig, match=rf"^{message}$"):
        make_config(**overrides)


def test_budget_above_balance_is_rejected() -> None:
    with pytest.raises(InvalidConfig, match=r"^sell budget 1500 BTS exceeds the balance 1000$"):
        make_book(base_total=1000)


def test_fee_asset_and_reservation() -> None:
    config = make_config(op_fee=3, op_fee_asset="base", fee_reservation_ops=4)
    assert config.fee_asset.symbol == "BTS"
    assert config.fee_reservation == 12
    assert make_config(op_fee=3, op_fee_asset="USD").fee_asset.symbol == "USD"
