"""``expect`` steps: what a scenario claims about the runtime, and how each claim is checked.

An expectation is parsed into flat :class:`Check` values, each with its YAML path, a *target*
(where the value lives in the observation that :mod:`capflow.scenario_observe` builds after a
step) and the expected value. Only the keys written are checked. Amounts compare exactly: an
``int`` against minor units, a decimal string against major units of the value's asset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from capflow.scenario_yaml import Amount, Node
from messages import Asset

#: Events a runtime publishes; an ``events:`` expectation may name only these.
EVENT_TYPES = (
    "DeadLettered",
    "FillApplied",
    "FillRejected",
    "InvariantViolated",
    "OrderAccepted",
    "OrderRejected",
    "ReservationRejected",
)
STATUSES = ("starting", "bootstrap_held", "live", "restarting", "failed")


@dataclass(frozen=True, slots=True)
class Money:
    """An observed amount: minor units of an asset."""

    units: int
    asset: Asset

    def major(self) -> str:
        """The amount in major units, e.g. ``"990.00"``."""
        return str(self.asset.to_decimal(self.units))


@dataclass(frozen=True, slots=True)
class Check:
    """One claim: the value at ``target`` in the observation equals ``expected``.

    ``kind`` is ``"value"`` (plain equality), ``"money"`` (``expected`` is an Amount) or
    ``"unchanged"`` (``target`` is ``("unchanged", mark)``, ``expected`` the profile ids).
    """

    path: str
    target: tuple[str | int, ...]
    expected: Any
    kind: str = "value"
    missing_is_zero: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Expectation:
    """An ``expect`` step: its checks, in file order."""

    checks: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A check that did not hold: what was expected and what was found (JSON-ready)."""

    path: str
    expected: Any
    actual: Any
    asset: str | None = None


# -- schema --------------------------------------------------------------------------------
Parse = Callable[[Node], Any]


@dataclass(frozen=True, slots=True)
class Leaf:
    parse: Parse
    kind: str = "value"


@dataclass(frozen=True, slots=True)
class Fields:
    fields: Mapping[str, Schema]
    nullable: bool = False


@dataclass(frozen=True, slots=True)
class Keyed:
    key: Callable[[object, Node], str | int]
    value: Schema


Schema = Leaf | Fields | Keyed


def _optional(parse: Parse) -> Parse:
    return lambda node: None if node.value is None else parse(node)


def _enum(*options: str) -> Leaf:
    return Leaf(lambda node: node.choice(options))


MONEY = Leaf(lambda node: node.amount(), "money")
SIGNED_MONEY = Leaf(lambda node: node.amount(signed=True), "money")
COUNT = Leaf(lambda node: node.integer(low=0))
FLAG = Leaf(lambda node: node.boolean())
TEXT = Leaf(lambda node: node.text())
OPTIONAL_TEXT = Leaf(_optional(lambda node: node.text()))
OPTIONAL_COUNT = Leaf(_optional(lambda node: node.integer(low=0)))
PRICE = Leaf(lambda node: node.decimal(positive=True))
OPTIONAL_PRICE = Leaf(_optional(lambda node: node.decimal(positive=True)))
TEXTS = Leaf(lambda node: [item.text() for item in node.items()])
SIDE = _enum("buy", "sell")


def _any_id(key: object, node: Node) -> str:
    return Node(key, node.path).ident()


def _index(key: object, node: Node) -> int:
    return Node(key, node.path).integer(low=0)


def _one_of(names: Mapping[str, object] | tuple[str, ...], what: str) -> Callable[..., str]:
    def check(key: object, node: Node) -> str:
        if not isinstance(key, str) or key not in names:
            node.fail(f"unknown {what} {key!r}; expected one of {', '.join(sorted(names))}")
        return key

    return check


LEDGER = Fields(
    {
        "allocated_capital": MONEY,
        "reserved_for_orders": MONEY,
        "reserved_for_positions": MONEY,
        "realized_pnl": SIGNED_MONEY,
        "fees_paid": MONEY,
        "available": SIGNED_MONEY,
        "halted": FLAG,
        "pending_orders": COUNT,
        "open_positions": COUNT,
    }
)
POSITION = Fields({"symbol": TEXT, "qty": MONEY, "cost": MONEY}, nullable=True)
PENDING_ORDER = Fields(
    {
        "symbol": TEXT,
        "side": SIDE,
        "position_id": TEXT,
        "qty": MONEY,
        "filled_qty": MONEY,
        "reserved": MONEY,
        "limit_price": OPTIONAL_PRICE,
    },
    nullable=True,
)
FUNDS = Fields(
    dict.fromkeys(
        (
            "total",
            "free",
            "committed",
            "virtual",
            "in_flight",
            "available",
            "cache_funds",
            "fees_owed",
            "fee_reservation",
        ),
        MONEY,
    )
)
SLOT = Fields(
    {
        "state": _enum("virtual", "active", "partial"),
        "role": _enum("buy", "spread", "sell"),
        "size": MONEY,
        "order_id": OPTIONAL_TEXT,
        "exchange_id": OPTIONAL_TEXT,
        "in_flight": FLAG,
        "price": PRICE,
    }
)
GRID_ORDER = Fields(
    {
        "status": _enum("in_flight", "open", "canceling"),
        "exchange_id": OPTIONAL_TEXT,
        "slot": OPTIONAL_COUNT,
        "side": SIDE,
        "price": PRICE,
        "size": MONEY,
        "qty": MONEY,
        "remaining": MONEY,
        "filled_qty": MONEY,
    },
    nullable=True,
)
EXCHANGE_ORDER = Fields(
    {
        "id": TEXT,
        "status": _enum("open", "closed", "canceled", "rejected"),
        "side": SIDE,
        "price": OPTIONAL_PRICE,
        "amount": MONEY,
        "filled": MONEY,
        "remaining": MONEY,
        "cost": MONEY,
    },
    nullable=True,
)
BALANCE = Fields({"free": MONEY, "used": MONEY, "total": MONEY})
COMMON: dict[str, Schema] = {
    "status": _enum(*STATUSES),
    "incarnation": COUNT,
    "restarts": COUNT,
    "queued": COUNT,
    "halted": FLAG,
    "trades": TEXTS,
}
POSITION_PROFILE: dict[str, Schema] = {
    **COMMON,
    "ledger": LEDGER,
    "positions": Keyed(_any_id, POSITION),
    "orders": Keyed(_any_id, PENDING_ORDER),
}


def grid_profile(assets: Mapping[str, Asset]) -> dict[str, Schema]:
    """What a grid profile's expectation may name (``funds`` is keyed by asset symbol)."""
    return {
        **COMMON,
        "boundary": COUNT,
        "open_orders": COUNT,
        "funds": Keyed(_one_of(assets, "asset"), FUNDS),
        "slots": Keyed(_index, SLOT),
        "orders": Keyed(_any_id, GRID_ORDER),
        "done": Keyed(_any_id, _enum("filled", "canceled", "rejected")),
    }


# -- parsing -------------------------------------------------------------------------------
def _walk(schema: Schema, node: Node, target: tuple[str | int, ...]) -> list[Check]:
    if isinstance(schema, Leaf):
        return [Check(node.path, target, schema.parse(node), schema.kind)]
    if isinstance(schema, Keyed):
        return [
            check
            for key, child in node.entries()
            for check in _walk(schema.value, child, (*target, schema.key(key, child)))
        ]
    if node.value is None and schema.nullable:
        return [Check(node.path, target, None)]
    f = node.fields(optional=schema.fields)
    return [
        check
        for key, child in f.items()
        for check in _walk(schema.fields[key], child, (*target, key))
    ]


def _events(node: Node, target: tuple[str | int, ...]) -> list[Check]:
    checks = []
    for key, child in node.entries():
        name = _one_of(EVENT_TYPES, "event type")(key, child)
        if isinstance(child.value, dict):
            for code, count in child.entries():
                reason = Node(code, count.path).ident()
                where = (*target, name, "reasons", reason)
                checks.append(Check(count.path, where, count.integer(low=0), missing_is_zero=True))
        else:
            where = (*target, name, "total")
            checks.append(Check(child.path, where, child.integer(low=0), missing_is_zero=True))
    return checks


def _profile(node: Node, pid: str, kind: str, assets: Mapping[str, Asset]) -> list[Check]:
    schema = POSITION_PROFILE if kind == "position" else grid_profile(assets)
    checks: list[Check] = []
    for key, child in node.fields(optional=[*schema, "events"]).items():
        target: tuple[str | int, ...] = ("profiles", pid, key)
        if key == "events":
            checks += _events(child, target)
        else:
            checks += _walk(schema[key], child, target)
    return checks


def _dead_letters(node: Node) -> list[Check]:
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        return [Check(node.path, ("dead_letters", "count"), node.integer(low=0))]
    letters = []
    for item in node.items():
        f = item.fields(required=("profile", "payload"))
        letters.append([f["profile"].ident(), f["payload"].ident()])
    return [Check(node.path, ("dead_letters", "list"), letters)]


def _unchanged(node: Node, marks: set[str], kinds: Mapping[str, str]) -> list[Check]:
    if isinstance(node.value, dict):
        f = node.fields(required=("since",), optional=("profiles",))
        mark_node = f["since"]
        profiles = None
        if "profiles" in f:
            profiles = [_one_of(kinds, "profile")(p.ident(), p) for p in f["profiles"].items()]
    else:
        mark_node, profiles = node, None
    mark = mark_node.ident()
    if mark not in marks:
        mark_node.fail(f"no earlier `mark: {mark}` step")
    ids = tuple(profiles) if profiles is not None else tuple(kinds)
    return [Check(node.path, ("unchanged", mark), ids, "unchanged")]


def parse_expect(
    node: Node, *, kinds: Mapping[str, str], assets: Mapping[str, Asset], marks: set[str]
) -> Expectation:
    """Parse an ``expect`` step; ``kinds`` maps each profile id to ``position`` or ``grid``."""
    f = node.fields(
        optional=("profiles", "exchange", "events", "dead_letters", "parked", "unchanged")
    )
    if not f:
        node.fail("an expect step needs at least one of: profiles, exchange, events, ...")
    checks: list[Check] = []
    for key, child in f.items():
        if key == "profiles":
            for key_, sub in child.entries():
                pid = _one_of(kinds, "profile")(key_, sub)
                checks += _profile(sub, pid, kinds[pid], assets)
        elif key == "exchange":
            schema = Fields(
                {
                    "open_orders": TEXTS,
                    "orders": Keyed(_any_id, EXCHANGE_ORDER),
                    "balance": Keyed(_one_of(assets, "asset"), BALANCE),
                }
            )
            checks += _walk(schema, child, ("exchange",))
        elif key == "events":
            checks += _events(child, ("events",))
        elif key == "dead_letters":
            checks += _dead_letters(child)
        elif key == "parked":
            checks.append(Check(child.path, ("parked",), child.integer(low=0)))
        else:
            checks += _unchanged(child, marks, kinds)
    if not checks:
        node.fail("the expectation checks nothing")
    return Expectation(checks=tuple(checks))


# -- evaluation ----------------------------------------------------------------------------
class _Missing:
    """No observed value. Both kinds show as ``"absent"``; only ABSENT (the last key is missing
    from a mapping that exists: a closed order, a position not open) satisfies ``null``."""

    def __repr__(self) -> str:
        return "absent"


ABSENT = _Missing()
#: Something above the target is missing (e.g. the whole order, or a profile's books).
UNAVAILABLE = _Missing()


def lookup(observation: Mapping[str, Any], check: Check) -> Any:
    """The observed value at the check's target (an event count not seen is 0)."""
    value: Any = observation
    for depth, step in enumerate(check.target, start=1):
        if not isinstance(value, Mapping) or step not in value:
            if check.missing_is_zero:
                return 0
            return (
                ABSENT if depth == len(check.target) and isinstance(value, Mapping) else UNAVAILABLE
            )
        value = value[step]
    return value


def _same(expected: Any, actual: Any) -> bool:
    if expected is None:
        return actual is None or actual is ABSENT
    if actual is None:
        return False
    if isinstance(expected, Decimal) or isinstance(actual, Decimal):
        return isinstance(actual, Decimal) and isinstance(expected, Decimal) and actual == expected
    return type(expected) is type(actual) and bool(expected == actual)


def plain(value: Any) -> Any:
    """A JSON-ready form of an observed or expected value."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Money):
        return value.units
    if isinstance(value, _Missing):
        return "absent"
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def evaluate(check: Check, actual: Any) -> Outcome | None:
    """None if ``check`` holds for the observed ``actual``; else what differs."""
    if check.kind == "money" and isinstance(actual, Money):
        amount: Amount = check.expected
        shown: int | str
        if isinstance(amount.raw, int):
            ok, shown = actual.units == amount.raw, actual.units
        else:
            ok, shown = actual.asset.to_decimal(actual.units) == amount.raw, actual.major()
        return None if ok else Outcome(check.path, amount.written, shown, actual.asset.symbol)
    expected = check.expected.written if isinstance(check.expected, Amount) else check.expected
    if check.kind == "money" or not _same(check.expected, actual):
        return Outcome(check.path, plain(expected), plain(actual))
    return None
