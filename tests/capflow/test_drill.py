"""``capflow drill`` end to end: a real redis-server, the exchange server and worker processes.

Short drills bounded by load seconds and counts (no wall-clock asserts). The safe drill runs
the default mix of grid and position profiles (the grid findings it once tripped over are kept
as deterministic reproductions in ``test_drill_findings.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from capflow import cli
from capflow.drill_report import REPORT_KEYS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def drill(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "drill.json"
    code = cli.main(
        [
            "drill",
            "--no-progress",
            "--workdir",
            str(tmp_path / "work"),
            "--report",
            str(report),
            *args,
        ]
    )
    return code, json.loads(report.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def safe_drill(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any]]:
    return drill(
        tmp_path_factory.mktemp("drill"),
        *("--profiles", "10", "--grids", "3", "--duration", "20", "--kills", "3"),
        *("--actor-crashes", "3", "--supervisor-crashes", "1", "--redis-restarts", "1"),
        *("--seed", "7"),
    )


def test_a_short_drill_loses_nothing_and_doubles_nothing(
    safe_drill: tuple[int, dict[str, Any]],
) -> None:
    code, report = safe_drill
    assert set(REPORT_KEYS) <= set(report)
    assert report["examples"]["mismatches"] == {}
    assert report["worker_failures"] == []
    assert report["lost"] == 0
    assert report["duplicated"] == 0
    assert report["phantom"] == 0
    assert report["mismatched_profiles"] == 0
    assert report["invariant_violations"] == 0
    assert report["unattributed_trades"] == 0
    assert code == 0
    assert report["exit_code"] == 0


def test_the_drill_did_what_it_was_asked(safe_drill: tuple[int, dict[str, Any]]) -> None:
    _, report = safe_drill
    assert report["profiles"] == 10
    assert report["seed"] == 7
    assert report["kills"] == 3
    assert report["kills_during_recovery"] == 1  # a quarter of 3, rounded
    assert report["actor_crashes"] == 3 * 2  # three events, two actors each
    assert report["supervisor_crashes"] == 1
    assert report["redis_restarts"] == 1
    # one check after each restart that reached ready, after the supervisor crash, after the
    # redis restart, and at the end
    assert report["checks"] == (3 - 1) + 1 + 1 + 1
    assert report["fills_applied"] > 0
    assert report["fills_applied"] == report["fills_on_exchange"]
    assert report["recovery_seconds"]["n"] == 2
    assert 0 < report["recovery_seconds"]["p50"] <= report["recovery_seconds"]["max"]
    assert report["duration_s"] >= 20


def test_without_dedupe_the_drill_fails(tmp_path: Path) -> None:
    code, report = drill(
        tmp_path,
        *("--profiles", "8", "--grids", "2", "--duration", "10", "--kills", "1"),
        *("--duplicate-rate", "0.5", "--signal-rate", "0.05"),
        *("--supervisor-crashes", "0", "--redis-restarts", "0", "--seed", "5"),
        "--unsafe-no-dedupe",
    )
    assert report["unsafe_no_dedupe"] is True
    assert report["duplicated"] > 0
    assert report["mismatched_profiles"] > 0
    assert code == 1
    assert report["exit_code"] == 1
