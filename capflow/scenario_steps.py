"""Parsing the ``steps`` of a scenario (``expect`` steps: :mod:`capflow.scenario_expect`).

A step is a mapping with exactly one step type (and an optional ``note``); steps that submit
messages (signal, price, fill, cancel, crash) take one item or a list, and ``batch`` mixes them
in one submission. Every problem raises InvalidScenario naming its YAML path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from capflow.scenario_expect import parse_expect
from capflow.scenario_spec import (
    STEP_TYPES,
    SUBMIT_TYPES,
    Action,
    Bootstrap,
    CancelItem,
    CrashItem,
    ExchangeGate,
    FillItem,
    GridDef,
    Mark,
    PositionDef,
    PriceItem,
    Restart,
    Scenario,
    SignalItem,
    Step,
    Submit,
    SubmitItem,
)
from capflow.scenario_yaml import Node
from messages import Market, Side


def known(key: object, node: Node, declared: Mapping[str, object], what: str) -> str:
    """``key`` if it names one of ``declared`` (assets, markets), else InvalidScenario."""
    if not isinstance(key, str) or key not in declared:
        listed = ", ".join(sorted(declared)) or "none"
        node.fail(f"unknown {what} {key!r}; declared: {listed}")
    return key


def parse_steps(node: Node, scenario: Scenario) -> tuple[Step, ...]:
    steps: list[Step] = []
    marks: set[str] = set()
    for index, item in enumerate(node.items()):
        if not isinstance(item.value, dict):
            item.fail(f"a step is a mapping with one of: {', '.join(STEP_TYPES)}")
        kinds = [key for key in item.value if key != "note"]
        if len(kinds) != 1 or kinds[0] not in STEP_TYPES:
            unknown = [k for k in kinds if k not in STEP_TYPES]
            if unknown:
                problem = f"unknown step type {unknown[0]!r}"
            elif kinds:
                problem = f"several step types ({', '.join(map(str, kinds))})"
            else:
                problem = "no step type"
            item.fail(f"{problem}; a step has exactly one of: {', '.join(STEP_TYPES)}")
        kind = kinds[0]
        f = item.fields(required=(kind,), optional=("note",))
        note = f["note"].text() if "note" in f else None
        action = _action(kind, f[kind], scenario, marks)
        if isinstance(action, Mark):
            marks.add(action.name)
        steps.append(Step(index=index, kind=kind, action=action, note=note))
    return tuple(steps)


def _declared(node: Node, scenario: Scenario) -> str:
    pid = node.ident()
    if scenario.profile(pid) is None:
        listed = ", ".join(p.id for p in scenario.profiles)
        node.fail(f"unknown profile {pid!r}; declared: {listed}")
    return pid


def _action(kind: str, node: Node, scenario: Scenario, marks: set[str]) -> Action:
    if kind in SUBMIT_TYPES:
        return Submit(items=tuple(_submit_items(kind, node, scenario)))
    if kind == "batch":
        items: list[SubmitItem] = []
        for entry in node.items():
            if not isinstance(entry.value, dict) or len(entry.value) != 1:
                entry.fail(f"a batch entry is a mapping with one of: {', '.join(SUBMIT_TYPES)}")
            (sub,) = entry.value
            if sub not in SUBMIT_TYPES:
                entry.fail(
                    f"unknown batch entry {sub!r}; expected one of {', '.join(SUBMIT_TYPES)}"
                )
            items += _submit_items(sub, entry.child(sub), scenario)
        if not items:
            node.fail("a batch needs at least one entry")
        return Submit(items=tuple(items))
    if kind == "bootstrap":
        f = node.fields(required=("profile", "action"))
        return Bootstrap(
            profile=_declared(f["profile"], scenario),
            begin=f["action"].choice(("begin", "end")) == "begin",
        )
    if kind == "restart":
        return Restart(profile=_declared(node.fields(required=("profile",))["profile"], scenario))
    if kind == "exchange":
        f = node.fields(optional=("create", "cancel"))
        if not f:
            node.fail("say which API goes up or down: create, cancel")
        up = {k: f[k].choice(("up", "down")) == "up" for k in f}
        return ExchangeGate(create=up.get("create"), cancel=up.get("cancel"))
    if kind == "mark":
        return Mark(name=node.ident())
    kinds = {p.id: "position" if isinstance(p, PositionDef) else "grid" for p in scenario.profiles}
    return parse_expect(node, kinds=kinds, assets=scenario.assets, marks=marks)


def _submit_items(kind: str, node: Node, scenario: Scenario) -> list[SubmitItem]:
    if kind == "price" and not isinstance(node.value, dict | list):
        return [_price(node, scenario)]
    parse: dict[str, Callable[[Node, Scenario], SubmitItem]] = {
        "signal": _signal,
        "price": _price,
        "fill": _fill,
        "cancel": _cancel,
        "crash": _crash,
    }
    return [parse[kind](item, scenario) for item in node.one_or_many()]


def _default_symbol(node: Node, scenario: Scenario, choices: dict[str, Market]) -> str:
    if len(choices) != 1:
        node.fail(f"several markets ({', '.join(sorted(choices))}): set `symbol`")
    return next(iter(choices))


def _symbol(f: dict[str, Node], node: Node, scenario: Scenario, within: dict[str, Market]) -> str:
    if "symbol" in f:
        return known(f["symbol"].text(), f["symbol"], scenario.markets, "market")
    return _default_symbol(node, scenario, within)


def _signal(node: Node, scenario: Scenario) -> SignalItem:
    f = node.fields(
        required=("profile", "id", "action", "position"),
        optional=("symbol", "qty", "limit_price", "estimate"),
    )
    pid = f["profile"].ident()  # an undeclared profile is allowed: the runtime must refuse it
    profile = scenario.profile(pid)
    if isinstance(profile, GridDef):
        f["profile"].fail(f"profile {pid!r} is a grid; signals go to position profiles")
    action = f["action"].choice(("open", "close"))
    symbol = _symbol(f, node, scenario, profile.markets if profile else scenario.markets)
    market = scenario.markets[symbol]
    if action == "open" and "qty" not in f:
        node.fail("an open signal needs `qty`")
    qty = f["qty"].units(market.base) if "qty" in f else None
    if qty == 0:
        f["qty"].fail("must be positive, got 0")
    estimate = f["estimate"].units(market.quote) if "estimate" in f else None
    if estimate is not None and action == "close":
        f["estimate"].fail("a close signal reserves nothing; remove `estimate`")
    return SignalItem(
        path=node.path,
        profile=pid,
        signal_id=f["id"].ident(),
        action=action,
        symbol=symbol,
        position=f["position"].ident(),
        qty=qty,
        limit_price=f["limit_price"].decimal(positive=True) if "limit_price" in f else None,
        estimate=estimate,
    )


def _price(node: Node, scenario: Scenario) -> PriceItem:
    if not isinstance(node.value, dict):
        return PriceItem(
            path=node.path,
            symbol=_default_symbol(node, scenario, scenario.markets),
            price=node.decimal(positive=True),
            tick=True,
        )
    f = node.fields(required=("price",), optional=("symbol", "tick"))
    return PriceItem(
        path=node.path,
        symbol=_symbol(f, node, scenario, scenario.markets),
        price=f["price"].decimal(positive=True),
        tick=f["tick"].boolean() if "tick" in f else True,
    )


def _fill(node: Node, scenario: Scenario) -> FillItem:
    f = node.fields(
        required=("trade_id", "client_order_id", "qty", "price", "cost", "fee"),
        optional=("order_id", "symbol", "side", "fee_asset"),
    )
    symbol = _symbol(f, node, scenario, scenario.markets)
    market = scenario.markets[symbol]
    fee_asset = None
    if "fee_asset" in f:
        fee_asset = known(f["fee_asset"].text(), f["fee_asset"], scenario.assets, "asset")
    fee = f["fee"].amount(
        precision=None if fee_asset is None else scenario.assets[fee_asset].precision
    )
    if fee_asset is not None:
        fee.units(scenario.assets[fee_asset])  # off-precision is refused before the run
    qty = f["qty"].units(market.base)
    if qty == 0:
        f["qty"].fail("must be positive, got 0")
    return FillItem(
        path=node.path,
        trade_id=f["trade_id"].ident(),
        client_order_id=f["client_order_id"].ident(),
        order_id=f["order_id"].ident() if "order_id" in f else None,
        symbol=symbol,
        side=Side(f["side"].choice(("buy", "sell"))) if "side" in f else None,
        qty=qty,
        price=f["price"].decimal(positive=True),
        cost=f["cost"].units(market.quote),
        fee=fee,
        fee_asset=fee_asset,
    )


def _cancel(node: Node, scenario: Scenario) -> CancelItem:
    f = node.fields(required=("client_order_id",))
    return CancelItem(path=node.path, client_order_id=f["client_order_id"].ident())


def _crash(node: Node, scenario: Scenario) -> CrashItem:
    f = node.fields(required=("profile",), optional=("poison",))
    return CrashItem(
        path=node.path,
        profile=_declared(f["profile"], scenario),
        poison=f["poison"].boolean() if "poison" in f else False,
    )
