"""Running a scenario: each step acts on the runtime, then everything settles and is checked.

After every step the runtime is drained and the exchange pumped until nothing moves
(:meth:`World.settle`), then observed: invariants are checked after *every* step, expectations
only at ``expect`` steps. A :class:`ScenarioResult` holds what happened, without timings, so
that two runs of one scenario give the same result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors.profile import CrashNow
from capflow.scenario_expect import Expectation, Outcome, evaluate, lookup
from capflow.scenario_observe import Observation, differences, observe
from capflow.scenario_spec import (
    Bootstrap,
    CancelItem,
    CrashItem,
    ExchangeGate,
    FillItem,
    Mark,
    PriceItem,
    Restart,
    Scenario,
    SignalItem,
    Step,
    Submit,
    SubmitItem,
)
from capflow.scenario_world import World
from capflow.scenario_yaml import InvalidScenario
from messages import (
    ClosePosition,
    CrashProfile,
    Fill,
    InvalidMessage,
    OpenPosition,
    OrderCanceled,
    PriceTick,
    Side,
    UnknownOrder,
)


@dataclass(slots=True, kw_only=True)
class StepReport:
    """What one step did and which of its checks failed."""

    index: int
    kind: str
    note: str | None
    checks: int = 0
    failures: list[Outcome] = field(default_factory=list)
    details: list[str] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class Violation:
    """An invariant found broken after a step (``step`` None: at start-up)."""

    step: int | None
    detail: str


@dataclass(slots=True, kw_only=True)
class ScenarioResult:
    """Everything a run produced, in a deterministic, JSON-ready shape."""

    name: str
    source: str
    steps: list[StepReport] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    events: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[tuple[int, Outcome]]:
        return [(s.index, f) for s in self.steps for f in s.failures]

    @property
    def ok(self) -> bool:
        """Every expectation held and no invariant was broken."""
        return not self.failures and not self.violations

    def to_json(self) -> dict[str, Any]:
        """The result as plain data (no timings: equal runs give equal JSON)."""
        return {
            "scenario": self.name,
            "file": self.source,
            "ok": self.ok,
            "steps": [
                {
                    "index": s.index,
                    "type": s.kind,
                    "note": s.note,
                    "checks": s.checks,
                    "failed": len(s.failures),
                    "details": s.details,
                }
                for s in self.steps
            ],
            "failures": [
                {
                    "step": index,
                    "path": f.path,
                    "expected": f.expected,
                    "actual": f.actual,
                    **({"asset": f.asset} if f.asset is not None else {}),
                }
                for index, f in self.failures
            ],
            "invariant_violations": [{"step": v.step, "detail": v.detail} for v in self.violations],
            "counts": {
                "steps": len(self.steps),
                "checks": sum(s.checks for s in self.steps),
                "failures": len(self.failures),
                "invariant_violations": len(self.violations),
                "events": self.events,
            },
        }


class Runner:
    """Executes the steps of one scenario against a :class:`World`."""

    def __init__(self, scenario: Scenario, world: World) -> None:
        self.scenario = scenario
        self.world = world
        self.marks: dict[str, dict[str, dict[str, Any] | None]] = {}
        self.result = ScenarioResult(name=scenario.name, source=scenario.source)
        self._seen_problems: set[str] = set()

    def run(self) -> ScenarioResult:
        """Start the world, run every step, stop the world."""
        self.world.start()
        try:
            self._check(None, observe(self.world))
            for step in self.scenario.steps:
                self.result.steps.append(self.step(step))
            self.result.events = self.world.recorder.counts()
        finally:
            self.world.stop()
        return self.result

    def _check(self, index: int | None, observation: Observation) -> None:
        for problem in observation.problems:
            if problem not in self._seen_problems:  # report a lasting violation once
                self._seen_problems.add(problem)
                self.result.violations.append(Violation(step=index, detail=problem))

    def step(self, step: Step) -> StepReport:
        """Run one step, settle, check invariants (and the expectations of an expect step)."""
        report = StepReport(index=step.index, kind=step.kind, note=step.note)
        runtime, action = self.world.runtime, step.action
        if isinstance(action, Submit):
            payloads: list[Any] = []
            for item in action.items:
                payloads += self._payloads(item, report)
            runtime.submit(*payloads)
        elif isinstance(action, Bootstrap):
            if action.begin:
                runtime.hold_bootstrap(action.profile)
            else:
                runtime.complete_bootstrap(action.profile)
        elif isinstance(action, Restart):
            runtime.hold_bootstrap(action.profile)
            runtime.complete_bootstrap(action.profile)
        elif isinstance(action, ExchangeGate):
            gate = self.world.gate
            gate.create_up = gate.create_up if action.create is None else action.create
            gate.cancel_up = gate.cancel_up if action.cancel is None else action.cancel
        self.world.settle()
        observation = observe(self.world)
        self._check(step.index, observation)
        if isinstance(action, Mark):
            self.marks[action.name] = observation.states
        elif isinstance(action, Expectation):
            self._expect(action, observation, report)
        return report

    def _expect(self, expectation: Expectation, seen: Observation, report: StepReport) -> None:
        for check in expectation.checks:
            report.checks += 1
            if check.kind == "unchanged":
                mark = str(check.target[1])
                for pid in check.expected:
                    before, after = self.marks[mark].get(pid), seen.states.get(pid)
                    diff = differences(before, after)
                    if diff:
                        report.failures.append(
                            Outcome(f"{check.path}.{pid}", f"unchanged since {mark}", diff)
                        )
                continue
            outcome = evaluate(check, lookup(seen.data, check))
            if outcome is not None:
                report.failures.append(outcome)

    # -- messages --------------------------------------------------------------------------
    def _payloads(self, item: SubmitItem, report: StepReport) -> list[Any]:
        world, clock = self.world, self.world.clock
        if isinstance(item, SignalItem):
            return [self._signal(item)]
        if isinstance(item, PriceItem):
            world.exchange.on_price(item.symbol, item.price)
            out: list[Any] = world.take_fills()
            report.details.append(f"{item.symbol} at {item.price}: {len(out)} trade(s)")
            if item.tick:
                out.append(
                    PriceTick(
                        message_id=world.next_id("tick"),
                        ts_ns=clock(),
                        symbol=item.symbol,
                        price=item.price,
                    )
                )
            return out
        if isinstance(item, FillItem):
            return [self._fill(item)]
        if isinstance(item, CancelItem):
            return self._cancel(item, report)
        return [self._crash(item)]

    def _signal(self, item: SignalItem) -> OpenPosition | ClosePosition:
        message_id, ts_ns = self.world.next_id("signal"), self.world.clock()
        try:
            if item.action == "open":
                assert item.qty is not None  # the parser requires it
                return OpenPosition(
                    message_id=message_id,
                    ts_ns=ts_ns,
                    profile_id=item.profile,
                    signal_id=item.signal_id,
                    symbol=item.symbol,
                    position_id=item.position,
                    qty=item.qty,
                    limit_price=item.limit_price,
                    estimate=item.estimate,
                )
            return ClosePosition(
                message_id=message_id,
                ts_ns=ts_ns,
                profile_id=item.profile,
                signal_id=item.signal_id,
                symbol=item.symbol,
                position_id=item.position,
                qty=item.qty,
                limit_price=item.limit_price,
            )
        except InvalidMessage as exc:
            raise InvalidScenario(item.path, str(exc)) from None

    def _fill(self, item: FillItem) -> Fill:
        try:
            order: Any = self.world.exchange.fetch_order(item.client_order_id)
        except UnknownOrder:
            order = None
        side = item.side or (None if order is None else Side(order["side"]))
        if side is None:
            raise InvalidScenario(
                item.path, f"the exchange has no order {item.client_order_id}: set `side`"
            )
        market = self.scenario.markets[item.symbol]
        fee_asset = item.fee_asset or (market.base if side is Side.BUY else market.quote).symbol
        try:
            return Fill(
                message_id=self.world.next_id(f"fill-{item.trade_id}"),
                ts_ns=self.world.clock(),
                trade_id=item.trade_id,
                order_id=item.order_id
                or (f"x-{item.client_order_id}" if order is None else order["id"]),
                client_order_id=item.client_order_id,
                symbol=item.symbol,
                side=side,
                qty=item.qty,
                price=item.price,
                cost=item.cost,
                fee=item.fee.units(self.scenario.assets[fee_asset]),
                fee_asset=fee_asset,
            )
        except InvalidMessage as exc:
            raise InvalidScenario(item.path, str(exc)) from None

    def _cancel(self, item: CancelItem, report: StepReport) -> list[Any]:
        cid = item.client_order_id
        try:
            order = self.world.exchange.cancel_order(cid)
        except UnknownOrder:
            raise InvalidScenario(item.path, f"the exchange has no order {cid}") from None
        if order["status"] != "canceled":
            report.details.append(f"order {cid} is {order['status']}: nothing to cancel")
            return []
        report.details.append(f"order {cid} canceled with {order['remaining']} remaining")
        return [
            OrderCanceled(
                message_id=self.world.next_id("canceled"),
                ts_ns=self.world.clock(),
                client_order_id=cid,
                exchange_order_id=order["id"],
                remaining=order["remaining"],
            )
        ]

    def _crash(self, item: CrashItem) -> CrashNow | CrashProfile:
        if not item.poison:
            return CrashNow(profile_id=item.profile)
        return CrashProfile(
            message_id=self.world.next_id("poison"),
            ts_ns=self.world.clock(),
            profile_id=item.profile,
        )


def run_scenario(scenario: Scenario) -> ScenarioResult:
    """Run ``scenario`` on a fresh runtime and return what happened.

    Raises:
        InvalidScenario: a step refers to something the run cannot do (e.g. an unknown order).
        TimeoutError: the runtime did not settle after a step.
    """
    return Runner(scenario, World(scenario)).run()
