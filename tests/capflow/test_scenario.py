"""``capflow scenario``: every shipped scenario passes, a wrong one fails, bad files exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from capflow import cli
from capflow.scenario_observe import Observation, observe

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
FAILING = Path(__file__).parent / "data" / "failing-example.yaml"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["scenario", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, dict[str, Any]]:
    code, out, err = run_cli(capsys, str(path), "--json")
    assert err == ""
    return code, json.loads(out)


def test_the_seed_scenarios_are_all_shipped() -> None:
    names = {path.stem for path in SCENARIOS}
    assert names >= {
        "seed000-1-concurrent-buys",
        "seed000-2-two-profiles",
        "seed000-3-partial-fill-then-exit",
        "seed000-4-restart-recovery",
        "seed001-cachefunds",
        "seed001-rotation",
        "seed001-bootstrap-queue",
        "bad-input",
    }


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenario_passes(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, str(path))
    assert (code, err) == (0, ""), out
    assert "PASS" in out.splitlines()[-1]
    assert " 0 failed, 0 invariant violations" in out


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenario_checks_something(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result = run_json(capsys, path)
    assert code == 0
    assert result["ok"] is True
    assert result["counts"]["checks"] >= 10
    assert result["failures"] == []
    assert result["invariant_violations"] == []


def test_failing_example_fails_and_names_each_wrong_expectation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, result = run_json(capsys, FAILING)
    assert code == 1
    assert result["ok"] is False
    failures = result["failures"]
    assert failures[:3] == [
        {
            "step": 1,
            "path": "steps[1].expect.profiles.p1.ledger.available",
            "expected": "100.00",
            "actual": "99.10",
            "asset": "USDT",
        },
        {
            "step": 1,
            "path": "steps[1].expect.profiles.p1.orders.cf-p1-b.reserved",
            "expected": 1,
            "actual": "absent",
        },
        {
            "step": 1,
            "path": "steps[1].expect.profiles.p1.events.OrderAccepted",
            "expected": 2,
            "actual": 1,
        },
    ]
    unchanged = failures[3]
    assert unchanged["path"] == "steps[4].expect.unchanged.p1"
    assert unchanged["expected"] == "unchanged since before-fill"
    assert unchanged["actual"][0] == "applied_trade_ids: [] -> ['T000001']"
    assert len(failures) == 4
    assert result["counts"]["failures"] == 4
    assert [s["failed"] for s in result["steps"]] == [0, 3, 0, 0, 1]


def test_failing_example_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, str(FAILING))
    assert (code, err) == (1, "")
    assert (
        '         steps[1].expect.profiles.p1.ledger.available: expected "100.00" USDT,'
        ' actual "99.10" USDT'
    ) in out.splitlines()
    assert out.splitlines()[-1] == "FAIL: 5 steps, 6 checks, 4 failed, 0 invariant violations"


def test_a_broken_invariant_fails_the_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every expectation holds, but one step breaks an invariant: exit 1, reported once."""
    real = observe
    calls = 0

    def observe_with_a_violation(world: Any) -> Observation:
        nonlocal calls
        calls += 1
        seen = real(world)
        if calls >= 3:  # from the second step on, and it persists
            seen.problems.append("profile p1: books do not add up (injected)")
        return seen

    monkeypatch.setattr("capflow.scenario_run.observe", observe_with_a_violation)
    path = ROOT / "scenarios" / "seed000-1-concurrent-buys.yaml"
    code, result = run_json(capsys, path)
    assert code == 1
    assert result["ok"] is False
    assert result["failures"] == []
    assert result["invariant_violations"] == [
        {"step": 1, "detail": "profile p1: books do not add up (injected)"}
    ]


@pytest.mark.parametrize(
    "name", ["seed000-4-restart-recovery", "seed001-rotation", "seed000-2-two-profiles"]
)
def test_two_runs_give_identical_json(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(ROOT / "scenarios" / f"{name}.yaml")
    first = run_cli(capsys, path, "--json")
    second = run_cli(capsys, path, "--json")
    assert first == second
    assert first[0] == 0
    assert "time" not in first[1]  # no timing fields at all


# -- invalid files: exit 2, one line naming the path, no traceback -------------------------
VALID = """\
assets: {USDT: 2, BTC: 8}
markets:
  BTC/USDT: {base: BTC, quote: USDT}
account: {USDT: "10000.00"}
profiles:
  - {id: p1, kind: position, allocated_capital: "1000.00"}
steps:
  - signal: {profile: p1, id: a, action: open, position: x, qty: "0.01", limit_price: "30000"}
  - expect:
      profiles:
        p1:
          ledger: {available: "699.70"}
"""

INVALID = [
    pytest.param(
        VALID.replace('allocated_capital: "1000.00"', "allocated_capital: 1000.5"),
        'profiles[0].allocated_capital: 1000.5 is a float; write "1000.50"',
        id="float",
    ),
    pytest.param(
        VALID.replace('limit_price: "30000"', "limit_price: 30000.0"),
        'steps[0].signal.limit_price: 30000.0 is a float; write "30000.0"',
        id="float-price",
    ),
    pytest.param(
        VALID.replace("  - signal:", "  - teleport:"),
        "steps[0]: unknown step type 'teleport'; a step has exactly one of: signal, price,"
        " fill, cancel, crash, batch, bootstrap, restart, exchange, mark, expect",
        id="unknown-step",
    ),
    pytest.param(
        VALID.replace('qty: "0.01"', 'quantity: "0.01"'),
        "steps[0].signal: unknown key 'quantity'; expected one of action, estimate, id,"
        " limit_price, position, profile, qty, symbol",
        id="unknown-key",
    ),
    pytest.param(
        VALID.replace("ledger: {available", "ledger: {availble"),
        "steps[1].expect.profiles.p1.ledger: unknown key 'availble'; expected one of"
        " allocated_capital, available, fees_paid, halted, open_positions, pending_orders,"
        " realized_pnl, reserved_for_orders, reserved_for_positions",
        id="unknown-expect-key",
    ),
    pytest.param(
        VALID.replace("account: {USDT", "account: {USDT: 1, USDT"),
        None,  # the line/column form
        id="duplicate-key",
    ),
    pytest.param(
        VALID.replace('qty: "0.01"', 'qty: "0.000000001"'),
        "steps[0].signal.qty: 0.000000001 has more than the 8 decimal places of BTC",
        id="off-precision",
    ),
    pytest.param(
        VALID.replace("id: a,", "id: a, profile: p1,"),
        None,
        id="duplicate-key-in-flow",
    ),
    pytest.param(
        VALID + "  - crash: {profile: p9}\n",
        "steps[2].crash.profile: unknown profile 'p9'; declared: p1",
        id="undeclared-profile",
    ),
    pytest.param(
        VALID + "  - expect: {unchanged: nowhere}\n",
        "steps[2].expect.unchanged: no earlier `mark: nowhere` step",
        id="unknown-mark",
    ),
    pytest.param(
        VALID.replace('account: {USDT: "10000.00"}', 'account: {USDT: "500.00"}'),
        "profiles: the runtime refuses them: profiles on account main claim 100000 USDT but"
        " it holds 50000",
        id="over-allocated",
    ),
]


def test_the_valid_base_file_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "valid.yaml"
    path.write_text(VALID)
    assert run_cli(capsys, str(path))[0] == 0


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_file_exits_2_with_its_path(
    text: str, message: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, out, err = run_cli(capsys, str(path))
    assert (code, out) == (2, "")
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1
    prefix = f"capflow scenario: invalid scenario: {path}"
    if message is None:
        assert lines[0].startswith(f"{prefix}, line ")
        assert "found the key" in lines[0]
        assert "twice" in lines[0]
    else:
        assert lines[0] == f"{prefix}: {message}"


def test_yaml_syntax_error_names_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "syntax.yaml"
    path.write_text("assets: {USDT: 2\nmarkets: [\n")
    code, out, err = run_cli(capsys, str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f"capflow scenario: invalid scenario: {path}, line 2, column ")
    assert "YAML syntax error" in err
    assert len(err.splitlines()) == 1


def test_invalid_file_with_json_prints_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(VALID.replace("  - signal:", "  - teleport:"))
    code, out, err = run_cli(capsys, str(path), "--json")
    assert code == 2
    assert json.loads(out) == {
        "ok": False,
        "error": {
            "path": "steps[0]",
            "message": "unknown step type 'teleport'; a step has exactly one of: signal,"
            " price, fill, cancel, crash, batch, bootstrap, restart, exchange, mark, expect",
        },
    }
    assert err.startswith("capflow scenario: invalid scenario:")


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, str(tmp_path / "nope.yaml"))
    assert (code, out) == (2, "")
    assert "cannot read the file" in err


def test_a_step_that_cannot_run_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found only at run time: canceling an order the exchange never saw."""
    path = tmp_path / "cancel.yaml"
    path.write_text(VALID + "  - cancel: {client_order_id: cf-p1-zzz}\n")
    code, out, err = run_cli(capsys, str(path))
    assert (code, out) == (2, "")
    assert err == (
        f"capflow scenario: invalid scenario: {path}: steps[2].cancel:"
        " the exchange has no order cf-p1-zzz\n"
    )


def test_the_annotated_example_of_the_docs_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = (ROOT / "docs" / "scenarios.md").read_text()
    section = doc.split("## An annotated example", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.yaml"
    path.write_text(example)
    code, out, _ = run_cli(capsys, str(path))
    assert code == 0, out
    assert out.splitlines()[-1] == "PASS: 4 steps, 12 checks, 0 failed, 0 invariant violations"
