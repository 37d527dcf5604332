"""``capflow run`` end to end, in process: short runs bounded by a step budget, not by time."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import capflow.run
import capflow.run_setup
from accounting import GridBook, PositionLedger
from capflow import cli
from capflow.report import REPORT_KEYS
from capflow.run_setup import MARKET, QUOTE, Setup, World, grid_profile_config
from capflow.run_verify import comparable
from messages import InvariantViolated
from persistence import Checkpoint

#: A step budget, so that a slow machine runs the same steps, only slower.
SHORT = ["--duration", "60", "--no-progress", "--step-ms", "1"]


def run(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "report.json"
    code = cli.main(["run", *SHORT, "--report", str(report), *args])
    return code, json.loads(report.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def main_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], Path]:
    tmp = tmp_path_factory.mktemp("run")
    plot = tmp / "funds.png"
    code, report = run(
        tmp, "--max-steps", "400", "--seed", "3", "--duplicate-rate", "0.2", "--plot", str(plot)
    )
    return code, report, plot


def test_a_run_exits_0_and_reports_every_figure(main_run: tuple[int, dict[str, Any], Path]) -> None:
    code, report, _ = main_run
    assert code == 0
    assert set(REPORT_KEYS) <= set(report)
    assert report["profiles"] == 8
    assert report["seed"] == 3
    assert report["steps"] == 400
    assert report["invariant_violations"] == 0
    assert report["exchange_invariants"] == "ok"
    assert report["mismatched_profiles"] == 0
    assert report["unattributed_trades"] == 0
    assert report["dead_letters"] == 0
    assert report["exit_code"] == 0


def test_every_trade_is_applied_once_and_duplicates_are_ignored(
    main_run: tuple[int, dict[str, Any], Path],
) -> None:
    _, report, _ = main_run
    assert report["fills_applied"] > 0
    assert report["fills_applied"] == report["fills_on_exchange"]
    assert report["duplicates_ignored"] > 0
    assert report["trades_delivered"] == report["fills_on_exchange"] + report["duplicates_ignored"]
    assert report["fills_rejected"] == 0
    assert report["orders_placed"] > 0


def test_oversized_signals_are_refused(main_run: tuple[int, dict[str, Any], Path]) -> None:
    _, report, _ = main_run
    assert report["reservations_rejected"] > 0
    refused = report["rejections_by_reason"]["ReservationRejected"]
    assert refused["insufficient_capital"] >= report["oversized_signals"] >= 4
    assert sum(refused.values()) == report["reservations_rejected"]


def test_the_reported_books_equal_the_recomputation(
    main_run: tuple[int, dict[str, Any], Path],
) -> None:
    _, report, _ = main_run
    books, recomputed = report["books"], report["recomputed"]
    assert (
        sorted(books)
        == sorted(recomputed)
        == [f"grid{i}" for i in range(1, 5)] + [f"sig{i}" for i in range(1, 5)]
    )
    for pid in books:
        assert comparable(books[pid]) == recomputed[pid], pid
    start = {"BTC": 5_000_000, "USDT": 150_000}
    assert any(recomputed[f"grid{i}"]["total"] != start for i in range(1, 5))  # grids traded
    assert any(recomputed[f"sig{i}"]["realized_pnl"] != 0 for i in range(1, 5))  # exits filled


def test_the_report_is_exact_json(main_run: tuple[int, dict[str, Any], Path]) -> None:
    _, report, _ = main_run
    grid = report["books"]["grid1"]["funds"]["BTC"]
    assert all(type(v) is int for v in grid.values())
    assert type(report["books"]["sig1"]["realized_pnl"]) is int
    assert isinstance(report["last_price"], str)
    assert Decimal(report["last_price"]) > 0
    # the account holds exactly the claims: 4 grids of 0.05 BTC + 1500 USDT, 4 x 2000 USDT
    assert report["account"]["initial"] == {"BTC": 20_000_000, "USDT": 1_400_000}


def test_plot_writes_a_png(main_run: tuple[int, dict[str, Any], Path]) -> None:
    _, _, plot = main_run
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000


def test_replays_a_price_file(tmp_path: Path) -> None:
    prices = tmp_path / "prices.csv"
    swing = [100 + d for d in (0, -1, -2, -3, -2, -1, 0, 1, 2, 3, 2, 1)]
    rows = [f"{i},{p}.{i % 10}" for i, p in enumerate(swing * 3)]
    prices.write_text("timestamp,price\n" + "\n".join(rows) + "\n", encoding="utf-8")
    code, report = run(tmp_path, "--prices", str(prices), "--max-steps", "200")
    assert code == 0
    assert report["price_source"] == str(prices)
    assert report["steps"] == 200
    assert report["last_price"] == rows[(200 - 1) % len(rows)].split(",")[1]  # looped
    assert report["fills_applied"] > 0
    assert report["mismatched_profiles"] == 0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("price\n100\n-5\n", r"prices\.csv, line 3: price must be positive and finite, got '-5'"),
        ("price\n100\nabc\n", r"prices\.csv, line 3: price must be a decimal number, got 'abc'"),
        ("", r"prices\.csv: no prices"),
    ],
)
def test_a_malformed_price_file_exits_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text(content, encoding="utf-8")
    code = cli.main(["run", *SHORT, "--prices", str(prices)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("capflow run: error: ")
    assert re.search(expected, " ".join(err.split()))
    assert "Traceback" not in err


def test_a_missing_price_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", *SHORT, "--prices", str(tmp_path / "nope.csv")])
    assert code == 2
    assert "No such file" in capsys.readouterr().err


def test_no_profiles_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", *SHORT, "--grid-profiles", "0", "--signal-profiles", "0"])
    assert code == 2
    assert "no profiles" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags", [["--duration", "0"], ["--grid-profiles", "-1"], ["--duplicate-rate", "2"]]
)
def test_bad_flags_exit_2(flags: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", *flags])
    assert exited.value.code == 2


def test_a_mismatch_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    collect = capflow.run.collect_books

    def one_unit_off(world: World) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
        books, problems = collect(world)
        books["sig2"]["realized_pnl"] += 1
        return books, problems

    monkeypatch.setattr(capflow.run, "collect_books", one_unit_off)
    code, report = run(tmp_path, "--max-steps", "100")
    assert code == 1
    assert report["mismatched_profiles"] == 1
    (line,) = report["mismatches"]["sig2"]
    assert line.startswith("realized_pnl: books ")
    assert "MISMATCH sig2" in capsys.readouterr().err


def test_an_invariant_violation_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = capflow.run_setup.build_world

    def violated(setup: Any) -> World:
        world = build(setup)
        world.events.publish(
            InvariantViolated(message_id="t-1", ts_ns=1, profile_id="grid1", detail="injected")
        )
        return world

    monkeypatch.setattr("capflow.run.build_world", violated)
    code, report = run(
        tmp_path, "--max-steps", "50", "--grid-profiles", "1", "--signal-profiles", "1"
    )
    assert code == 1
    assert report["invariant_violations"] == 1
    assert report["mismatched_profiles"] == 0


def test_a_price_the_grids_cannot_work_with_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text("price\n1000000000\n", encoding="utf-8")
    code = cli.main(["run", *SHORT, "--prices", str(prices)])
    assert code == 2
    assert "buy budget 150000 USDT is too small" in capsys.readouterr().err


def test_a_checkpoint_that_disagrees_with_the_live_books_is_reported() -> None:
    ledger = PositionLedger(
        "sig1", quote=QUOTE, allocated_capital=100_000, markets={MARKET.symbol: MARKET}
    )
    grid = grid_profile_config(0, Setup())
    book = GridBook.create(
        "grid1", grid.grid, base_total=grid.base_total, quote_total=grid.quote_total
    )
    states = {"sig1": ledger.to_state(), "grid1": {"book": book.to_state()}}
    funds = {
        asset: {"total": f.total, "free": f.free, "committed": f.committed}
        for asset, f in book.recalculate_funds().items()
    }
    live = {
        "sig1": {"kind": "position", **ledger.summary()},
        "grid1": {"kind": "grid", "funds": funds},
    }
    world: Any = SimpleNamespace(
        profile_ids=["grid1", "sig1"],
        kind=lambda pid: "grid" if pid.startswith("grid") else "position",
        runtime=SimpleNamespace(
            books=lambda: live,
            store=SimpleNamespace(
                load=lambda pid: Checkpoint(profile_id=pid, seq=1, state=states[pid])
            ),
        ),
    )
    books, problems = capflow.run.collect_books(world)
    assert problems == {}
    assert books["sig1"]["positions"] == {}

    live["sig1"]["available"] += 1
    live["grid1"]["funds"]["USDT"]["free"] -= 1
    _, problems = capflow.run.collect_books(world)
    assert sorted(problems) == ["grid1", "sig1"]
    assert all(p[0].startswith("checkpoint {") for p in problems.values())
