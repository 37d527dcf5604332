"""The pieces behind ``capflow scenario``: strict YAML, exact amounts, event counting, diffs."""

from __future__ import annotations

from decimal import Decimal

import pytest

from capflow.scenario_expect import ABSENT, Check, Money, evaluate, lookup
from capflow.scenario_observe import differences
from capflow.scenario_parse import parse_scenario
from capflow.scenario_world import EventRecorder
from capflow.scenario_yaml import InvalidScenario, Node, float_fix, load_yaml
from messages import Asset, FillApplied, InvalidConfig, ReservationRejected

USDT = Asset(symbol="USDT", precision=2)
BTC = Asset(symbol="BTC", precision=8)


def test_invalid_scenario_is_a_typed_config_error() -> None:
    exc = InvalidScenario("steps[2].fill.qty", "must be positive, got 0")
    assert isinstance(exc, InvalidConfig)
    assert isinstance(exc, ValueError)
    assert (exc.path, exc.problem) == ("steps[2].fill.qty", "must be positive, got 0")
    assert str(exc) == "steps[2].fill.qty: must be positive, got 0"


def test_yaml_refuses_a_repeated_key_with_its_line() -> None:
    with pytest.raises(InvalidScenario, match=r"^f\.yaml, line 2, column 1: .*'a' twice$"):
        load_yaml("a: 1\na: 2\n", source="f.yaml")


def test_yaml_keeps_floats_as_their_text() -> None:
    data = load_yaml("a: 1000.5\nb: 1_000\nc: '1000.5'\n", source="f.yaml")
    assert repr(data["a"]) == "1000.5"
    assert data["b"] == 1000
    assert data["c"] == "1000.5"


@pytest.mark.parametrize(
    ("text", "precision", "fix"),
    [
        ("1000.5", 2, "1000.50"),
        ("1000.5", None, "1000.5"),
        ("1.5e+3", 2, "1500.00"),
        ("0.123", 2, "0.123"),  # cannot be padded: the exact check will refuse it anyway
        (".inf", 2, ".inf"),
    ],
)
def test_float_fix_suggests_the_exact_string(text: str, precision: int | None, fix: str) -> None:
    assert float_fix(text, precision) == fix


def test_amounts_are_minor_units_or_major_unit_strings() -> None:
    assert Node(150, "x").units(USDT) == 150
    assert Node("1.50", "x").units(USDT) == 150
    assert Node("0.00999", "x").units(BTC) == 999_000
    assert Node("-4.68", "x").units(USDT, signed=True) == -468
    with pytest.raises(InvalidScenario, match=r"^x: must not be negative, got -1$"):
        Node(-1, "x").units(USDT)
    with pytest.raises(InvalidScenario, match=r"^x: 1.005 has more than the 2 decimal places"):
        Node("1.005", "x").units(USDT)
    with pytest.raises(InvalidScenario, match=r"^x: expected an int of minor units or a decimal"):
        Node(True, "x").units(USDT)
    with pytest.raises(InvalidScenario, match=r'^x: 1.5 is a float; write "1.50"$'):
        Node(load_yaml("1.5", source="f"), "x").units(USDT)


def test_parse_checks_the_whole_file_before_running() -> None:
    data = load_yaml(
        """
        assets: {USD: 0, BTS: 0}
        markets: {BTS/USD: {base: BTS, quote: USD}}
        account: {USD: 100}
        profiles: [{id: p1, kind: position, allocated_capital: 100}]
        steps:
          - price: "1.5"
          - expect: {profiles: {p1: {ledger: {available: 100}}}}
          - signal: {profile: p1, id: s, action: open, position: x}
        """,
        source="f",
    )
    with pytest.raises(InvalidScenario, match=r"^steps\[2\]\.signal: an open signal needs `qty`$"):
        parse_scenario(data, source="f")


def test_events_are_counted_once_per_distinct_fact() -> None:
    """A replay re-publishes an event with a new id and timestamp: one fact, counted once."""
    recorder = EventRecorder()

    def applied(message_id: str, ts: int, correlation: str, *, duplicate: bool) -> FillApplied:
        return FillApplied(
            message_id=message_id,
            ts_ns=ts,
            profile_id="p1",
            trade_id="T1",
            client_order_id="cf-p1-a",
            qty=5,
            duplicate=duplicate,
            correlation_id=correlation,
        )

    recorder(applied("p1:1", 10, "fill-1", duplicate=False))
    recorder(applied("p1:1", 20, "fill-1", duplicate=False))  # the replay after a crash
    recorder(applied("p1:7", 30, "fill-2", duplicate=True))  # a second delivery: a new fact
    recorder(
        ReservationRejected(
            message_id="p2:1",
            ts_ns=40,
            profile_id="p2",
            signal_id="s",
            reason="insufficient_capital",
            needed=10,
            available=5,
            detail="no",
        )
    )
    assert recorder.counts("p1") == {
        "FillApplied": {"total": 2, "reasons": {"applied": 1, "duplicate": 1}}
    }
    assert recorder.counts()["ReservationRejected"] == {
        "total": 1,
        "reasons": {"insufficient_capital": 1},
    }
    assert recorder.trades("p1") == ["T1"]
    assert recorder.trades("p2") == []


def test_money_compares_in_minor_or_major_units() -> None:
    money = Money(9910, USDT)
    check_minor = Check("p", ("x",), Node(9910, "p").amount(), "money")
    check_major = Check("p", ("x",), Node("99.1", "p").amount(), "money")
    check_wrong = Check("p", ("x",), Node("99.11", "p").amount(), "money")
    assert evaluate(check_minor, money) is None
    assert evaluate(check_major, money) is None
    outcome = evaluate(check_wrong, money)
    assert outcome is not None
    assert (outcome.expected, outcome.actual, outcome.asset) == ("99.11", "99.10", "USDT")


def test_null_means_absent_but_not_unobservable() -> None:
    seen = {"profiles": {"p1": {"orders": {"a": {"reserved": Money(1, USDT)}}}}}
    closed = Check("p", ("profiles", "p1", "orders", "b"), None)
    open_ = Check("p", ("profiles", "p1", "orders", "a"), None)
    unknown = Check("p", ("profiles", "p9", "orders", "b"), None)
    assert lookup(seen, closed) is ABSENT
    assert evaluate(closed, lookup(seen, closed)) is None
    assert evaluate(open_, lookup(seen, open_)) is not None
    outcome = evaluate(unknown, lookup(seen, unknown))
    assert outcome is not None
    assert outcome.actual == "absent"


def test_decimals_compare_exactly_and_never_with_ints() -> None:
    check = Check("p", ("x",), Decimal("0.994987"))
    assert evaluate(check, Decimal("0.9949870")) is None
    assert evaluate(check, Decimal("0.994988")) is not None
    assert evaluate(Check("p", ("x",), 1), True) is not None  # a bool is not the int 1


def test_differences_name_the_changed_paths() -> None:
    before = {"a": 1, "b": {"c": [1, 2], "d": "x"}, "e": 5}
    after = {"a": 1, "b": {"c": [1, 3], "d": "y"}, "f": 6}
    assert differences(before, after) == ["b.c[1]: 2 -> 3", "b.d: 'x' -> 'y'", "e: 5 -> 'absent'"]
    assert differences(before, before) == []
