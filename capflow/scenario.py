"""``capflow scenario FILE.yaml [--json]``: a deterministic, scripted replay with expectations.

A scenario declares assets, markets, an exchange account and profiles, then runs steps against
a real runtime on a simulated exchange: signals, price moves, scripted fills, cancels, crashes,
held bootstraps, restarts, exchange outages, and ``expect`` steps that check the books. The
format is documented in ``docs/scenarios.md``; the modules behind it:

* ``scenario_yaml`` — strict YAML reading (no floats, no duplicate keys, paths in errors);
* ``scenario_spec`` / ``scenario_expect`` — the parsed scenario and its expectations;
* ``scenario_world`` — runtime, simulated exchange, logical clock, event recorder;
* ``scenario_observe`` — the observation expectations address, and the invariant checks;
* ``scenario_run`` — executing the steps.

Exit status: 0 when every expectation held and no invariant was broken, 1 when not (or the
runtime did not settle), 2 when the scenario file is invalid (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

from capflow.scenario_parse import load_scenario
from capflow.scenario_run import ScenarioResult, run_scenario
from capflow.scenario_spec import Scenario
from capflow.scenario_yaml import InvalidScenario

__all__ = ["InvalidScenario", "Scenario", "ScenarioResult", "add_parser", "load_scenario", "main"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def add_parser(sub: Any) -> None:
    """Register the ``scenario`` subcommand."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "scenario",
        help="run a scripted scenario with expectations (docs/scenarios.md)",
        description="Replay a scripted scenario on a real runtime and a simulated exchange, "
        "checking its expectations and every invariant after each step.",
    )
    parser.add_argument("file", metavar="FILE.yaml", help="the scenario to run")
    parser.add_argument("--json", action="store_true", help="print a machine-readable result")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also show the runtime's log on stderr"
    )
    parser.set_defaults(func=main)


@contextlib.contextmanager
def _runtime_log(verbose: bool) -> Iterator[None]:
    """Keep the runtime's log (crash drills log tracebacks on purpose) off the terminal."""
    loggers = [logging.getLogger(name) for name in ("capflow", "pykka")]
    saved = [(lg, lg.propagate, lg.level) for lg in loggers]
    handler: logging.Handler = (
        logging.StreamHandler(sys.stderr) if verbose else logging.NullHandler()
    )
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
        if verbose:
            lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, propagate, level in saved:
            lg.removeHandler(handler)
            lg.propagate = propagate
            lg.setLevel(level)


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, list) else "; ".join(map(str, value))


def _print_text(result: ScenarioResult) -> None:
    print(f"scenario {result.name} ({result.source})")
    violations: dict[int | None, list[str]] = {}
    for v in result.violations:
        violations.setdefault(v.step, []).append(v.detail)
    for detail in violations.get(None, []):
        print(f"  INVARIANT at start-up: {detail}")
    for step in result.steps:
        broken = violations.get(step.index, [])
        status = "FAIL" if step.failures or broken else "ok"
        what = step.kind + (f" ({step.checks} checks)" if step.checks else "")
        note = f" — {step.note}" if step.note else ""
        print(f"  [{step.index:>2}] {status:<4} {what}{note}")
        for failure in step.failures:
            asset = f" {failure.asset}" if failure.asset else ""
            print(
                f"         {failure.path}: expected {_show(failure.expected)}{asset},"
                f" actual {_show(failure.actual)}{asset}"
            )
        for detail in broken:
            print(f"         INVARIANT: {detail}")
    counts = result.to_json()["counts"]
    verdict = "PASS" if result.ok else "FAIL"
    print(
        f"{verdict}: {counts['steps']} steps, {counts['checks']} checks,"
        f" {counts['failures']} failed, {counts['invariant_violations']} invariant violations"
    )


def main(args: argparse.Namespace) -> int:
    """Run the scenario named by ``args.file``; see the module docstring for exit codes."""
    try:
        with _runtime_log(getattr(args, "verbose", False)):
            result = run_scenario(load_scenario(args.file))
    except InvalidScenario as exc:
        where = "" if exc.path.startswith(args.file) else f"{args.file}: "
        print(f"capflow scenario: invalid scenario: {where}{exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "error": {"path": exc.path, "message": exc.problem}}))
        return EXIT_INVALID
    except TimeoutError as exc:
        print(f"capflow scenario: the runtime did not settle: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        _print_text(result)
    return EXIT_OK if result.ok else EXIT_FAILED
