"""Price paths: the seeded random walk and the CSV loader."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from exchange import PricePoint, load_csv, random_walk
from messages import InvalidAmount, InvalidMessage
from tests.exchange.conftest import D


def test_random_walk_is_deterministic_and_on_the_tick():
    path = random_walk(7, D("100"), 500, D("0.01"), tick=D("0.05"))
    assert path == random_walk(7, D("100"), 500, D("0.01"), tick=D("0.05"))
    assert path != random_walk(8, D("100"), 500, D("0.01"), tick=D("0.05"))
    assert len(path) == 500
    assert all(isinstance(p, Decimal) and p % D("0.05") == 0 and p > 0 for p in path)
    previous = D("100")
    for price in path:  # each step moves at most vol (plus half a tick of quantization)
        assert abs(price - previous) <= previous * D("0.01") + D("0.025")
        previous = price
    assert len(set(path)) > 10  # it does move


def test_random_walk_never_goes_below_one_tick():
    path = random_walk(1, D("0.02"), 200, D("1"), tick=D("0.01"))
    assert min(path) == D("0.01")


def test_random_walk_with_zero_vol_stays_put_and_zero_steps_is_empty():
    assert random_walk(1, D("100.004"), 3, D(0)) == [D("100.00")] * 3
    assert random_walk(1, D("100"), 0, D("0.1")) == []


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"start": 100.0}, InvalidAmount, "^start must be a Decimal"),
        ({"steps": -1}, InvalidMessage, "^steps must be an int >= 0"),
        ({"vol": D("1.5")}, InvalidAmount, "^vol must be within"),
        ({"tick": D(0)}, InvalidAmount, "^tick must be positive"),
        ({"seed": "x"}, InvalidMessage, "^seed must be an int"),
    ],
)
def test_random_walk_checks_its_arguments(kwargs, error, message):
    args = {"seed": 1, "start": D("100"), "steps": 5, "vol": D("0.01")} | kwargs
    with pytest.raises(error, match=message):
        random_walk(**args)


def test_load_csv_reads_both_layouts(tmp_path):
    with_ts = tmp_path / "ts.csv"
    with_ts.write_text("timestamp,price\n# a comment\n1,100.5\n\n2, 101\n2,100.25\n")
    assert load_csv(with_ts, unit="s") == [
        PricePoint(price=D("100.5"), ts_ns=1_000_000_000),
        PricePoint(price=D("101"), ts_ns=2_000_000_000),
        PricePoint(price=D("100.25"), ts_ns=2_000_000_000),
    ]
    plain = tmp_path / "plain.csv"
    plain.write_text("\ufeff100\r\n100.01\r\n1E+2\r\n")
    assert load_csv(plain) == [PricePoint(price=D(p)) for p in ("100", "100.01", "1E+2")]
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("5,1.5\n")
    assert load_csv(headerless) == [PricePoint(price=D("1.5"), ts_ns=5)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timestamp,price\n1,100\n2,abc\n", r"line 3: price must be a decimal number, got 'abc'$"),
        ("price\n100\n-1\n", r"line 3: price must be positive and finite, got '-1'$"),
        ("100\n\n\n0\n", r"line 4: price must be positive and finite, got '0'$"),
        ("100\nNaN\n", r"line 2: price must be positive and finite, got 'NaN'$"),
        ("1,100\n2,101,3\n", r"line 2: expected 2 column\(s\) \(timestamp,price\), got 3"),
        ("100\n1,100\n", r"line 2: expected 1 column\(s\) \(price\), got 2"),
        ("1,2,3\n", r"line 1: expected 'timestamp,price' or 'price', got 3 columns"),
        ("x1,100\n", r"line 1: timestamp must be a non-negative integer, got 'x1'$"),
        ("-1,100\n", r"line 1: timestamp must be a non-negative integer, got '-1'$"),
        ("5,100\n4,100\n", r"line 2: timestamp 4 goes back in time"),
        ('1,"100\n', r"line 1: unexpected end of data"),
        ("timestamp,price\n# nothing\n", r": no prices$"),
    ],
)
def test_load_csv_names_the_line_of_a_malformed_row(tmp_path, text, message):
    path = tmp_path / "prices.csv"
    path.write_text(text)
    with pytest.raises(InvalidMessage, match=f"^{re.escape(str(path))}(, )?{message}"):
        load_csv(path)


def test_load_csv_refuses_binary_and_a_bad_unit(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_bytes(b"100\n\xff\xfe\n")
    with pytest.raises(InvalidMessage, match="not UTF-8 text"):
        load_csv(path)
    with pytest.raises(InvalidMessage, match="unit must be one of"):
        load_csv(path, unit="h")  # type: ignore[arg-type]
