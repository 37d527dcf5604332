"""Reading scenario YAML strictly: every value is type-checked where it is used, by its path.

The loader refuses duplicate keys and keeps floats as :class:`FloatLiteral` (their source text),
so that a float is refused with a fix to copy (``1000.5 is a float; write "1000.50"``) instead
of being silently rounded. :class:`Node` pairs a value with its YAML path
(``steps[3].signal.qty``); every accessor raises :class:`InvalidScenario` naming that path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

import yaml

from messages import Asset, InvalidAmount, InvalidConfig, InvalidMessage, check_id, check_units


class InvalidScenario(InvalidConfig):
    """A scenario that cannot run, with the YAML path of what is wrong.

    Attributes:
        path: where, e.g. ``profiles[0].allocated_capital`` (or ``line 3, column 5``).
        problem: what is wrong there, and what to write instead when that is known.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class FloatLiteral:
    """A YAML float, kept as its source text so that it can be refused helpfully."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and never builds a float."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | bool) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"found the key {key!r} twice",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _float(loader: yaml.SafeLoader, node: yaml.Node) -> FloatLiteral:
    return FloatLiteral(str(node.value))


_Loader.add_constructor("tag:yaml.org,2002:float", _float)


def load_yaml(text: str, *, source: str) -> Any:
    """Parse YAML text; a syntax error or a repeated key raises InvalidScenario with its line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = (
            source if mark is None else f"{source}, line {mark.line + 1}, column {mark.column + 1}"
        )
        problem = exc.problem or exc.context or "malformed YAML"
        raise InvalidScenario(where, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise InvalidScenario(source, f"YAML syntax error: {exc}") from None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, FloatLiteral):
        return "float"
    return {bool: "bool", int: "int", str: "string", list: "list", dict: "mapping"}.get(
        type(value), type(value).__name__
    )


def float_fix(text: str, precision: int | None = None) -> str:
    """The string to write instead of a float literal (padded to the asset's precision)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text
    if not value.is_finite():
        return text
    if precision is not None and -value.as_tuple().exponent <= precision:  # type: ignore[operator]
        return f"{value:.{precision}f}"
    return str(value) if "e" not in text.lower() else f"{value:f}"


@dataclass(frozen=True, slots=True)
class Amount:
    """An amount as written: ``int`` minor units, or a ``Decimal`` of major units (a string)."""

    raw: int | Decimal
    path: str
    text: str

    def units(self, asset: Asset, *, signed: bool = False) -> int:
        """Exact minor units of ``asset``; off-precision or out of range raises InvalidScenario."""
        if isinstance(self.raw, Decimal) and self.raw % Decimal(1).scaleb(-asset.precision):
            raise InvalidScenario(
                self.path,
                f"{self.text} has more than the {asset.precision} decimal places of {asset.symbol}",
            )
        try:
            units = self.raw if isinstance(self.raw, int) else asset.to_units(self.raw)
            return check_units(units, name=f"{asset.symbol} amount", allow_negative=signed)
        except InvalidAmount as exc:
            raise InvalidScenario(self.path, str(exc)) from None

    @property
    def written(self) -> int | str:
        """The amount as the scenario wrote it."""
        return self.raw if isinstance(self.raw, int) else self.text


@dataclass(frozen=True, slots=True)
class Node:
    """A YAML value and its path; accessors check its type and raise InvalidScenario."""

    value: Any
    path: str

    def fail(self, problem: str) -> NoReturn:
        """Raise InvalidScenario at this node."""
        raise InvalidScenario(self.path or "(top level)", problem)

    def child(self, key: str | int) -> Node:
        """The node under ``key`` (the value must be a mapping or list holding it)."""
        value = self.value[key]
        if isinstance(key, int) and isinstance(self.value, list):
            return Node(value, f"{self.path}[{key}]")
        return Node(value, f"{self.path}.{key}" if self.path else str(key))

    def _refuse_float(self, precision: int | None = None) -> None:
        if isinstance(self.value, FloatLiteral):
            fix = float_fix(self.value.text, precision)
            self.fail(f'{self.value.text} is a float; write "{fix}"')

    def _expect(self, what: str) -> NoReturn:
        self._refuse_float()
        self.fail(f"expected {what}, got {_type_name(self.value)} {self.value!r}")

    # -- containers ------------------------------------------------------------------------
    def fields(
        self, *, required: Iterable[str] = (), optional: Iterable[str] = ()
    ) -> dict[str, Node]:
        """A mapping with string keys, all of ``required`` and only those and ``optional``."""
        if not isinstance(self.value, dict):
            self._expect("a mapping")
        need, allowed = list(required), [*required, *optional]
        for key in self.value:
            if not isinstance(key, str):
                self.fail(f"keys must be strings, got {_type_name(key)} {key!r}")
            if key not in allowed:
                self.fail(f"unknown key {key!r}; expected one of {', '.join(sorted(allowed))}")
        missing = [key for key in need if key not in self.value]
        if missing:
            self.fail(f"missing key {missing[0]!r}")
        return {key: self.child(key) for key in self.value}

    def entries(self) -> list[tuple[Any, Node]]:
        """Every (key, node) of a mapping with arbitrary keys (ids, indices), in file order."""
        if not isinstance(self.value, dict):
            self._expect("a mapping")
        return [(key, self.child(key)) for key in self.value]

    def items(self) -> list[Node]:
        """The elements of a list."""
        if not isinstance(self.value, list):
            self._expect("a list")
        return [self.child(i) for i in range(len(self.value))]

    def one_or_many(self) -> list[Node]:
        """A mapping (one item) or a non-empty list of them."""
        if isinstance(self.value, list):
            if not self.value:
                self.fail("expected a mapping or a non-empty list, got an empty list")
            return self.items()
        return [self]

    # -- scalars ---------------------------------------------------------------------------
    def text(self) -> str:
        """A non-empty string."""
        if not isinstance(self.value, str) or not self.value:
            self._expect("a non-empty string")
        return self.value

    def ident(self) -> str:
        """An id (non-empty printable string of at most 200 characters)."""
        value = self.text()
        try:
            return check_id(value, name="id")
        except InvalidMessage as exc:
            self.fail(str(exc))

    def integer(self, *, low: int | None = None) -> int:
        """An int (not a bool), at least ``low``."""
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            self._expect("an integer")
        if low is not None and self.value < low:
            self.fail(f"must be >= {low}, got {self.value}")
        return self.value

    def boolean(self) -> bool:
        """``true`` or ``false``."""
        if not isinstance(self.value, bool):
            self._expect("true or false")
        return self.value

    def choice(self, options: Iterable[str]) -> str:
        """One of ``options`` (case-insensitive); returned in lower case."""
        allowed = list(options)
        value = self.text().lower()
        if value not in allowed:
            self.fail(f"expected one of {', '.join(allowed)}, got {self.value!r}")
        return value

    def decimal(self, *, positive: bool = False) -> Decimal:
        """An exact decimal: an int, or a decimal string such as ``"30000.5"``."""
        self._refuse_float()
        if isinstance(self.value, bool) or not isinstance(self.value, int | str):
            self._expect('an integer or a decimal string such as "1.5"')
        try:
            value = Decimal(self.value)
        except InvalidOperation:
            self.fail(f"{self.value!r} is not a decimal number")
        if not value.is_finite():
            self.fail(f"{self.value!r} is not a finite number")
        if positive and value <= 0:
            self.fail(f"must be positive, got {self.value}")
        return value

    def amount(self, *, precision: int | None = None, signed: bool = False) -> Amount:
        """An amount: int minor units, or a decimal string of major units (``"1000.50"``)."""
        self._refuse_float(precision)
        if isinstance(self.value, bool) or not isinstance(self.value, int | str):
            self._expect('an int of minor units or a decimal string such as "1000.50"')
        raw: int | Decimal = self.value if isinstance(self.value, int) else self.decimal()
        if not signed and raw < 0:
            self.fail(f"must not be negative, got {self.value}")
        return Amount(raw, self.path, str(self.value))

    def units(self, asset: Asset, *, signed: bool = False) -> int:
        """An amount converted exactly to minor units of ``asset``."""
        return self.amount(precision=asset.precision, signed=signed).units(asset, signed=signed)


def document(value: Any, *, source: str) -> Node:
    """The root node of a loaded scenario (which must be a mapping)."""
    node = Node(value, "")
    if not isinstance(value, Mapping):
        raise InvalidScenario(source, f"a scenario is a mapping, got {_type_name(value)}")
    return node
