"""What ``capflow drill`` reports: the JSON report, its definitions, the summary line."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from capflow.drill_check import CheckResult
from capflow.drill_run import Drill, Options

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130

#: Keys every drill report has (the tests check them).
REPORT_KEYS = (
    "actor_crashes",
    "duplicated",
    "duration_s",
    "fills_applied",
    "fills_on_exchange",
    "invariant_violations",
    "kills",
    "lost",
    "mismatched_profiles",
    "profiles",
    "recovery_seconds",
    "redis_restarts",
    "seed",
    "supervisor_crashes",
)
DEFINITIONS = {
    "lost": "(profile, exchange trade) pairs, over all checks, where the exchange has a trade "
    "for one of the profile's orders that its committed books have not applied",
    "duplicated": "(profile, exchange trade) pairs, over all checks, that the profile's "
    "committed books have applied more than once",
    "phantom": "(profile, trade id) pairs applied by the books that the exchange has no trade "
    "for, for this profile",
    "mismatched_profiles": "profiles that at some check had a lost, duplicated or phantom "
    "trade, books that the oracle's recomputation from the exchange record disagrees with, "
    "live books that differ from the committed snapshot, or no snapshot",
    "invariant_violations": "distinct violations found: a snapshot whose books do not add up, "
    "a profile halted for an invariant violation, the exchange's books not adding up",
    "recovery_seconds": "SIGKILL restarts: from spawning the next worker process until every "
    "profile is live again (snapshots loaded, journal replay delivered, reconciled)",
}


def _spread(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"p50": None, "max": None, "n": 0}
    return {
        "p50": round(statistics.median(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def _sum_reasons(reports: Iterable[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    total: dict[str, dict[str, int]] = {}
    for report in reports:
        for event, reasons in report.items():
            for reason, n in reasons.items():
                total.setdefault(event, {})
                total[event][reason] = total[event].get(reason, 0) + n
    return total


def build_report(
    options: Options, drill: Drill, wall_s: float, aborted: str | None
) -> dict[str, Any]:
    """The drill's figures as plain data (see :data:`REPORT_KEYS` and :data:`DEFINITIONS`)."""
    tally = drill.tally
    checks: list[CheckResult] = tally.checks
    lost = set().union(*(c.lost for c in checks))
    duplicated = set().union(*(c.duplicated for c in checks))
    phantom = set().union(*(c.phantom for c in checks))
    unattributed = set().union(*(c.unattributed for c in checks))
    violations = {v for c in checks for v in c.violations}
    mismatched: dict[str, list[str]] = {}
    for c in checks:
        for pid, lines in c.mismatches.items():
            mismatched.setdefault(pid, [f"{c.label}: {line}" for line in lines])
    final = checks[-1] if checks else CheckResult(label="none")
    config = options.config
    dead_letters = sum(tally.dead_letters.values())
    failed = bool(
        lost
        or duplicated
        or phantom
        or unattributed
        or violations
        or mismatched
        or tally.worker_failures
        or dead_letters
        or not checks
    )
    exit_code = EXIT_FAILED if failed else EXIT_OK
    if aborted is not None:
        exit_code = EXIT_INTERRUPTED if aborted == "interrupted" else EXIT_FAILED
    return {
        "profiles": config.profiles,
        "grid_profiles": config.grids,
        "position_profiles": config.profiles - config.grids,
        "seed": config.seed,
        "unsafe_no_dedupe": options.unsafe_no_dedupe,
        "duration_s": round(drill.load_elapsed(), 3),
        "wall_s": round(wall_s, 3),
        "kills": tally.kills,
        "kills_during_recovery": tally.kills_during_recovery,
        "actor_crashes": tally.actor_crashes,
        "supervisor_crashes": tally.supervisor_crashes,
        "redis_restarts": tally.redis_restarts,
        "redis_downtime_s": round(tally.redis_downtime_s, 3),
        "incarnations": tally.incarnations,
        "checks": len(checks),
        "fills_on_exchange": final.fills_on_exchange,
        "fills_applied": final.fills_applied,
        "lost": len(lost),
        "duplicated": len(duplicated),
        "phantom": len(phantom),
        "mismatched_profiles": len(mismatched),
        "invariant_violations": len(violations),
        "unattributed_trades": len(unattributed),
        "halted_profiles": len(final.halted),
        "dead_letters": dead_letters,
        "parked_messages_at_last_check": tally.parked.get(tally.incarnations, 0),
        "fills_rejected": sum(c.get("FillRejected", 0) for c in tally.worker_counts.values()),
        "rejections_by_reason": _sum_reasons(tally.worker_reasons.values()),
        "store_retries": sum(tally.store_retries.values()),
        "recovery_seconds": _spread(tally.recovery_s),
        "bootstrap_seconds": _spread(tally.bootstrap_s),
        "supervisor_recovery_seconds": _spread(tally.supervisor_recovery_s),
        "check_seconds": _spread([c.seconds for c in checks]),
        "worker_failures": tally.worker_failures[:20],
        "aborted": aborted,
        "examples": {
            "lost": sorted(lost)[:10],
            "duplicated": sorted(duplicated)[:10],
            "phantom": sorted(phantom)[:10],
            "violations": sorted(violations)[:10],
            "mismatches": dict(sorted(mismatched.items())[:10]),
        },
        "check_results": [c.summary() for c in checks],
        "definitions": DEFINITIONS,
        "command": command_line(options),
        "exit_code": exit_code,
    }


def command_line(options: Options) -> str:
    """A ``capflow drill`` command that runs this drill again."""
    config = options.config
    flags = [
        f"--profiles {config.profiles}",
        f"--grids {config.grids}",
        f"--duration {options.duration:g}",
        f"--kills {options.kills}",
        f"--boot-kill-share {options.boot_kill_share:g}",
        f"--actor-crashes {options.actor_crashes}",
        f"--crash-batch {options.crash_batch}",
        f"--supervisor-crashes {options.supervisor_crashes}",
        f"--redis-restarts {options.redis_restarts}",
        f"--seed {config.seed}",
        f"--duplicate-rate {config.duplicate_rate}",
        f"--price-rate {config.price_rate}",
        f"--signal-rate {config.signal_rate:g}",
    ]
    if options.unsafe_no_dedupe:
        flags.append("--unsafe-no-dedupe")
    return " ".join(["capflow drill", *flags])


def summary_line(report: dict[str, Any]) -> str:
    """One line for the terminal."""
    verdict = "OK" if report["exit_code"] == EXIT_OK else "FAILED"
    recovery = report["recovery_seconds"]
    return (
        f"drill {verdict}: {report['profiles']} profiles, {report['duration_s']:.0f} s load,"
        f" {report['kills']} kills ({report['kills_during_recovery']} during recovery),"
        f" {report['actor_crashes']} actor crashes, {report['supervisor_crashes']} supervisor"
        f" crashes, {report['redis_restarts']} redis restarts, {report['checks']} checks;"
        f" fills {report['fills_applied']} applied / {report['fills_on_exchange']} on the"
        f" exchange; lost {report['lost']}, duplicated {report['duplicated']}, mismatched"
        f" profiles {report['mismatched_profiles']}, invariant violations"
        f" {report['invariant_violations']}; recovery p50 {recovery['p50']} s,"
        f" max {recovery['max']} s"
    )
