"""``capflow loadtest``: after the drain, does every book equal the model of what was sent?

Checked, each mismatch one problem line (the report's ``invariant_violations`` counts them):

* no ``InvariantViolated``, ``FillRejected``, ``DeadLettered`` or ``OrderRejected`` event;
* every fill sent was applied exactly once (by trade id), none reported as a duplicate;
* every signal got the reservation decision the model predicted;
* every profile is live and its books (``Runtime.books()``) equal the model's;
* with the in-memory store: every profile's checkpoint covers every message sent to it, and
  the checkpointed positions equal the model's, and nothing is parked or dead-lettered.
"""

from __future__ import annotations

from typing import Any

from accounting import PositionLedger
from actors.events import EventSink
from actors.runtime import Runtime
from capflow.loadtest_measure import Timings
from capflow.loadtest_world import Workload

#: Examples kept per kind of problem (the count is always complete).
_EXAMPLES = 5
_BAD_EVENTS = ("InvariantViolated", "FillRejected", "DeadLettered", "OrderRejected")


class Findings:
    """What the verification found: a complete count, and example lines (capped per kind)."""

    def __init__(self) -> None:
        self.count = 0
        self._lines: list[str] = []
        self._kinds: dict[str, int] = {}

    def add(self, kind: str, line: str) -> None:
        self.count += 1
        seen = self._kinds.get(kind, 0)
        self._kinds[kind] = seen + 1
        if seen < _EXAMPLES:
            self._lines.append(line)

    @property
    def lines(self) -> list[str]:
        """The example lines, then one "... N more" line per kind that had more."""
        more = [
            f"... and {count - _EXAMPLES} more {kind} problem(s)"
            for kind, count in sorted(self._kinds.items())
            if count > _EXAMPLES
        ]
        return [*self._lines, *more]


def verify(
    runtime: Runtime,
    workload: Workload,
    timings: Timings,
    events: EventSink,
    *,
    durable: bool,
) -> Findings:
    """Compare the runtime's outcome with the workload's model (see the module docstring)."""
    findings = Findings()
    counts = events.counts()
    for name in _BAD_EVENTS:
        recent = events.recent(name)
        for i in range(counts.get(name, 0)):
            detail = str(recent[i]) if i < len(recent) else "(no longer kept)"
            findings.add(name, f"{name}: {detail}")
    _check_fills(timings, findings)
    _check_decisions(workload, timings, findings)
    check_books(runtime, workload, findings, durable=durable)
    return findings


def _check_fills(timings: Timings, problems: Findings) -> None:
    applied = timings.fill_applied
    for n in range(timings.fills_sent):
        if f"t{n}" not in applied:
            problems.add("lost fill", f"fill t{n} was sent and never applied")
    if len(applied) > timings.fills_sent:
        problems.add("extra fill", f"{len(applied) - timings.fills_sent} unknown fills applied")
    for trade_id in timings.duplicates:
        problems.add("duplicate", f"fill {trade_id} was reported as a duplicate")


def _check_decisions(workload: Workload, timings: Timings, problems: Findings) -> None:
    for message_id, signal in workload.signals.items():
        decided = timings.signal_decided.get(message_id)
        want = "OrderAccepted" if signal.accepted else "ReservationRejected"
        got = None if decided is None else decided[0]
        if got != want:
            problems.add(
                "decision",
                f"signal {message_id} of {signal.profile_id}: expected {want}, got {got}",
            )


def check_books(
    runtime: Runtime,
    workload: Workload,
    problems: Findings,
    *,
    durable: bool,
    label: str = "",
) -> None:
    """Every profile live with the model's books (and, in memory mode, its checkpoint).

    ``label`` starts each problem line (e.g. ``"recovered "`` for a second runtime).
    """
    books = runtime.books()
    info = runtime.inspect()
    if info["parked"]:
        problems.add(
            label + "parked", f"{label}{info['parked']} message(s) parked: no profile owned them"
        )
    if info["dead_letters"]:
        problems.add(
            label + "dead letter", f"{label}dead letters: {info['dead_letters'][:_EXAMPLES]}"
        )
    for pid, model in workload.models.items():
        want = model.summary()
        live = books.get(pid)
        if live is None:
            problems.add(label + "books", f"{label}{pid}: not live at the end")
            continue
        got = {key: live.get(key) for key in want}
        if got != want:
            problems.add(label + "books", f"{label}{pid}: books {_diff(got, want)}")
        if durable:
            continue  # sequence numbers are journal offsets there; the checkpoint is Redis'
        row = info["profiles"][pid]
        if row["next_seq"] - 1 != model.seq or row["checkpoint_seq"] != model.seq:
            problems.add(
                label + "sequence",
                f"{label}{pid}: {model.seq} messages sent, supervisor has"
                f" next_seq {row['next_seq']} and checkpoint_seq {row['checkpoint_seq']}",
            )
        checkpoint = runtime.store.load(pid)
        if checkpoint is None or checkpoint.seq != model.seq:
            seq = None if checkpoint is None else checkpoint.seq
            problems.add(
                label + "checkpoint", f"{label}{pid}: checkpoint at seq {seq}, expected {model.seq}"
            )
            continue
        ledger = PositionLedger.from_state(checkpoint.state)
        saved = {p: (pos.qty, pos.cost) for p, pos in ledger.positions.items()}
        expected = {p: (pos.qty, pos.cost) for p, pos in model.positions.items()}
        if saved != expected:
            problems.add(
                label + "positions", f"{label}{pid}: checkpointed positions {saved} != {expected}"
            )
        saved_summary = {key: ledger.summary().get(key) for key in want}
        if saved_summary != want:
            problems.add(
                label + "checkpoint", f"{label}{pid}: checkpoint {_diff(saved_summary, want)}"
            )


def _diff(got: dict[str, Any], want: dict[str, Any]) -> str:
    return ", ".join(
        f"{key} {got.get(key)!r} != expected {want[key]!r}"
        for key in want
        if got.get(key) != want[key]
    )
