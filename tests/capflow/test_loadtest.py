"""``capflow loadtest`` in process, with tiny parameters: exit status, report, exactness.

No wall-clock figure is asserted (a noisy 2-core machine runs these); counts are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import capflow.loadtest_run
from capflow import cli
from capflow.loadtest_measure import percentiles_ms
from capflow.loadtest_report import REPORT_KEYS
from capflow.loadtest_world import LOT, PRICE, ProfileModel, Workload, estimate_of

TINY = ["--profiles", "20", "--duration", "1", "--rate", "2000", "--no-progress"]
#: A small baseline: it is measured, never asserted.
QUICK = ["--baseline-messages", "2000"]


def loadtest(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "report.json"
    code = cli.main(["loadtest", *TINY, *QUICK, "--report", str(report), *args])
    return code, json.loads(report.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], Path]:
    tmp = tmp_path_factory.mktemp("loadtest")
    plot = tmp / "loadtest.png"
    code, report = loadtest(tmp, "--plot", str(plot))
    return code, report, plot


def test_a_tiny_load_test_exits_0_with_every_figure(tiny: tuple[int, dict[str, Any], Path]) -> None:
    code, report, plot = tiny
    assert code == 0
    assert set(REPORT_KEYS) <= set(report)
    assert report["profiles"] == 20
    assert report["mode"] == "rate"
    assert report["store"] == "memory"
    assert report["invariant_violations"] == 0
    assert report["problems"] == []
    assert report["baselines"]["pykka_tell_per_s"] > 0
    assert report["ratio_vs_pykka_tell"] is not None
    assert report["ratio_vs_redis_xadd"] is None  # no Redis baseline unless asked for
    assert report["generator_cpu_s"] > 0
    assert report["submit_cpu_s"] > 0
    assert report["runtime_cpu_us_per_fill"] > 0  # the process's CPU less the generator's
    assert plot.stat().st_size > 0


def test_every_fill_sent_is_applied_and_every_signal_decided(
    tiny: tuple[int, dict[str, Any], Path],
) -> None:
    _, report, _ = tiny
    assert report["fills_sent"] > 0
    assert report["fills_applied"] == report["fills_sent"]
    assert report["fill_latency_ms"]["count"] == report["fills_sent"]
    assert report["fill_commit_latency_ms"]["count"] == report["fills_sent"]
    assert report["signals_sent"] > 0
    assert report["signals_decided"] == report["signals_sent"]
    assert report["signal_latency_ms"]["count"] == report["signals_sent"]
    events = report["events"]
    assert events["FillApplied"] == report["fills_sent"]
    # Every tenth entry signal is far beyond the profile's capital: refused, and counted.
    assert report["signals_rejected"] >= 1
    for name in ("InvariantViolated", "FillRejected", "DeadLettered", "OrderRejected"):
        assert name not in events


def test_a_wrong_book_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: a model that books one unit of PnL too much makes the run fail."""
    fill = ProfileModel.fill

    def off_by_one(self: ProfileModel, order: Any, qty: int) -> tuple[int, int]:
        out = fill(self, order, qty)
        if self.profile_id == "lt00003" and self.fills == 5:
            self.realized_pnl += 1
        return out

    monkeypatch.setattr(ProfileModel, "fill", off_by_one)
    code, report = loadtest(tmp_path, "--baselines", "none")
    assert code == 1
    assert report["invariant_violations"] >= 1
    assert any(line.startswith("lt00003: books realized_pnl") for line in report["problems"])


def test_max_mode_keeps_a_bounded_window_and_stops_by_itself(tmp_path: Path) -> None:
    report_path = tmp_path / "max.json"
    code = cli.main(
        [
            "loadtest",
            *["--profiles", "5", "--duration", "30", "--max", "--window", "50"],
            *["--max-messages", "600", "--baselines", "none", "--no-progress"],
            *["--report", str(report_path)],
        ]
    )
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert code == 0
    assert report["mode"] == "max"
    assert report["fills_sent"] + report["signals_sent"] == 600  # the message budget
    assert report["fills_applied"] == report["fills_sent"]
    assert report["invariant_violations"] == 0


def test_a_redis_store_is_refused_clearly_while_the_runtime_has_no_durable_mode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(capflow.loadtest_run, "DURABLE_PARAMETERS", ("no_such_parameter",))
    code = cli.main(["loadtest", *TINY, "--store", "redis"])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--store redis is not yet supported by the runtime" in err


@pytest.mark.integration
def test_a_durable_run_on_redis_is_exact(tmp_path: Path) -> None:
    if capflow.loadtest_run.durable_parameter() is None:
        pytest.skip("the runtime has no durable mode yet")
    code, report = loadtest(
        tmp_path, "--store", "redis", "--profiles", "5", "--rate", "500", "--duration", "0.5"
    )
    assert code == 0
    assert report["store"] == "redis"
    assert report["fills_applied"] == report["fills_sent"] > 0
    assert report["baselines"]["redis_xadd_per_s"] > 0
    assert report["ratio_vs_redis_xadd"] is not None
    assert report["recovery_s"] > 0  # a second runtime loaded the snapshots: books equal
    assert report["invariant_violations"] == 0
    # Every fill was journaled (at least one script call) and committed on the real server.
    assert report["redis_commands_per_fill"] > 0
    calls = report["redis_calls_per_fill"]
    assert calls["evalsha"] > 0  # append and commit are Lua scripts
    assert calls["xadd"] >= 1  # each fill's journal entry, written inside the append script


def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["loadtest", "--profiles", "0"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["loadtest", "--rate", "10", "--max"])
    with pytest.raises(SystemExit):
        cli.main(["loadtest", "--store", "postgres://x"])
    assert "expected a whole number > 0, got 0" in capsys.readouterr().err


# -- the model ---------------------------------------------------------------------------------
def test_the_model_refuses_what_the_ledger_must_refuse() -> None:
    workload = Workload(["lt00000"], signal_share=0.5)
    model = workload.models["lt00000"]
    workload.resting_orders(1)
    available = model.available
    assert not model.open("x1", "r0", LOT, available + 1)  # more than available
    assert model.open("x2", "r0", LOT, available)
    assert model.available == 0
    assert not model.close("x3", "r0", LOT)  # nothing filled: no position to sell
    assert model.seq == 4 + 3


def test_an_exit_releases_the_cost_pro_rata_and_books_pnl() -> None:
    model = ProfileModel("p")
    assert model.open("b", "pos", 3 * LOT, estimate_of(3 * LOT, PRICE))
    buy = model.orders["b"]
    cost, fee = model.fill(buy, 3 * LOT)  # completes the order: the leftover is released
    assert (cost, fee) == (9000, 9)
    assert model.reserved_for_orders == 0
    assert model.reserved_for_positions == 9009
    assert model.close("s", "pos", LOT)
    assert not model.close("s2", "pos", 3 * LOT)  # 2 lots are left to promise
    cost, fee = model.fill(model.orders["s"], LOT)
    assert (cost, fee) == (3010, 3)
    assert model.reserved_for_positions == 9009 - 3003  # 9009 * 1 // 3
    assert model.realized_pnl == 3010 - 3 - 3003
    assert model.positions["pos"].qty == 2 * LOT


def test_percentiles_are_nearest_rank() -> None:
    samples = [i * 1_000_000 for i in range(1, 1001)]  # 1..1000 ms
    figures = percentiles_ms(samples)
    assert figures == {"count": 1000, "p50": 500.0, "p99": 990.0, "p999": 999.0, "max": 1000.0}
    assert percentiles_ms([])["count"] == 0


def test_micro_prints_the_cost_of_each_part(tmp_path: Path) -> None:
    report = tmp_path / "micro.json"
    assert cli.main(["loadtest", "--micro", "--report", str(report)]) == 0
    figures = json.loads(report.read_text(encoding="utf-8"))
    assert figures["handle_and_publish_per_fill_us"] > 0
    assert "to_state_20000_trades_us" in figures
