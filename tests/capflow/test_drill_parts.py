"""The crash drill's parts, without processes: schedule, sent-order log, checks, report."""

from __future__ import annotations

import argparse
import shlex
from decimal import Decimal
from pathlib import Path

import pytest

from capflow import cli
from capflow.drill import add_arguments, options_from
from capflow.drill_check import CheckResult, _compare_trades
from capflow.drill_report import build_report, command_line
from capflow.drill_run import Drill, Options, schedule
from capflow.drill_world import DrillConfig, DrillWorld, Recovered, SentLog
from capflow.run_signals import SentOrder
from capflow.run_verify import verify
from exchange import Trade
from messages import Side


def options(**changes: object) -> Options:
    base: dict[str, object] = {
        "config": DrillConfig(profiles=8, grids=2, seed=5),
        "duration": 60.0,
        "kills": 8,
        "actor_crashes": 4,
        "crash_batch": 3,
        "supervisor_crashes": 2,
        "redis_restarts": 1,
    }
    return Options(**(base | changes))  # type: ignore[arg-type]


def test_the_schedule_has_every_disruption_asked_for_within_the_load() -> None:
    opts = options()
    events = schedule(opts, DrillWorld(opts.config))
    kinds = [e.kind for e in events]
    boot = sum(e.boot_kill_after for e in events)
    assert boot == 2  # a quarter of 8
    assert kinds.count("kill") + boot == 8
    assert kinds.count("actors") == 4
    assert all(len(e.profiles) == 3 for e in events if e.kind == "actors")
    assert kinds.count("supervisor") == 2
    assert kinds.count("redis") == 1
    assert all(0 < e.at < 60 for e in events)
    assert [e.at for e in events] == sorted(e.at for e in events)


def test_the_schedule_is_the_seeds() -> None:
    opts = options()
    world = DrillWorld(opts.config)
    assert schedule(opts, world) == schedule(opts, world)
    other = options(config=DrillConfig(profiles=8, grids=2, seed=6))
    assert schedule(other, DrillWorld(other.config)) != schedule(opts, world)


def test_a_single_kill_is_never_a_boot_kill() -> None:
    opts = options(kills=1, boot_kill_share=1.0)
    events = schedule(opts, DrillWorld(opts.config))
    assert [(e.kind, e.boot_kill_after) for e in events if e.kind == "kill"] == [("kill", False)]


def test_the_sent_log_reads_back_what_every_incarnation_wrote(tmp_path: Path) -> None:
    order = SentOrder(
        profile_id="sig1",
        signal_id="i1n1",
        position_id="i1n1",
        side=Side.BUY,
        qty=5,
        limit_price=Decimal("30000.01"),
    )
    first = SentLog(tmp_path, 1)
    first.write("cf-sig1-i1n1", order)
    first.close()
    second = SentLog(tmp_path, 2)
    second.write("cf-sig1-i2n1", order)
    second.close()
    with open(second.path, "a", encoding="utf-8") as torn:
        torn.write('{"cid": "cf-sig1-i2n2", "prof')  # killed in the middle of a write
    assert SentLog.read_all(tmp_path) == {"cf-sig1-i1n1": order, "cf-sig1-i2n1": order}


def trade(tid: str) -> Trade:
    return {"id": tid, "clientOrderId": "cf-sig1-x"}  # type: ignore[typeddict-item]


def test_lost_duplicated_and_phantom_trades_are_told_apart() -> None:
    recovered = Recovered(
        summary={},
        books={},
        applied=["T1", "T2~1.5", "T2~2.9", "T9"],  # the unsafe mode's re-applied ids
        open_orders=frozenset(),
        halted=None,
    )
    result = CheckResult(label="t")
    _compare_trades(result, "sig1", recovered, [trade("T1"), trade("T2"), trade("T3")])
    assert result.lost == {("sig1", "T3")}
    assert result.duplicated == {("sig1", "T2")}
    assert result.phantom == {("sig1", "T9")}
    assert result.fills_applied == 4
    assert not result.ok
    assert set(result.mismatches) == {"sig1"}


def test_fresh_books_rebuilt_from_state_satisfy_the_oracle() -> None:
    world = DrillWorld(DrillConfig(profiles=4, grids=2, seed=1))
    books = {pid: world.fresh_books(pid).books for pid in world.profile_ids}
    outcome = verify(books, [], [], {}, world.verifier_profiles())
    assert outcome.mismatches == {}
    assert set(books) == {"grid1", "grid2", "sig1", "sig2"}


def test_a_report_fails_on_any_loss_and_passes_a_clean_drill() -> None:
    drill = Drill(options())
    assert build_report(drill.options, drill, 1.0, None)["exit_code"] == 1  # no check at all
    drill.tally.checks.append(CheckResult(label="final", fills_on_exchange=3, fills_applied=3))
    report = build_report(drill.options, drill, 1.0, None)
    assert report["exit_code"] == 0
    assert (report["lost"], report["fills_applied"]) == (0, 3)
    drill.tally.checks.append(CheckResult(label="final", lost={("sig1", "T1")}))
    report = build_report(drill.options, drill, 1.0, None)
    assert (report["exit_code"], report["lost"]) == (1, 1)
    assert build_report(drill.options, drill, 1.0, "interrupted")["exit_code"] == 130


@pytest.mark.parametrize("unsafe", [False, True])
def test_the_report_names_a_command_that_runs_the_same_drill(unsafe: bool) -> None:
    opts = options(unsafe_no_dedupe=unsafe, workdir=Path("/tmp/x"))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    words = shlex.split(command_line(opts))
    assert words[:2] == ["capflow", "drill"]
    again = options_from(parser.parse_args(words[2:]), Path("/tmp/x"))
    assert again == opts


@pytest.mark.parametrize(
    "args", [["--profiles", "3", "--grids", "5"], ["--profiles", "0"]], ids=["grids", "none"]
)
def test_an_impossible_drill_is_refused_before_anything_starts(
    args: list[str], tmp_path: Path
) -> None:
    code = cli.main(["drill", "--no-progress", "--workdir", str(tmp_path), *args])
    assert code == 2
    assert list(tmp_path.iterdir()) == []  # no worker ever ran
