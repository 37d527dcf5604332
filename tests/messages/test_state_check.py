"""The snapshot state check's fast path accepts exactly what the explaining check accepts."""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messages import InvalidMessage, encode_state
from messages.codec import MAX_STATE_DEPTH, _explain_state, _state_ok


class Colour(enum.Enum):
    RED = "red"


class Text(str):
    pass


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.text(max_size=3),
    st.decimals(allow_nan=True, allow_infinity=True, places=2),
    st.floats(allow_nan=False),
    st.just(Colour.RED),
    st.just(Text("x")),
    st.just(b"bytes"),
)
keys = st.one_of(st.text(max_size=3), st.integers(0, 3), st.just(Text("k")))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(keys, inner, max_size=3),
        st.tuples(inner),
    ),
    max_leaves=12,
)


def explained_ok(root: dict[Any, Any]) -> bool:
    try:
        _explain_state(root, InvalidMessage)
    except InvalidMessage:
        return False
    return True


@given(st.dictionaries(keys, values, max_size=4))
def test_the_fast_check_agrees_with_the_explaining_check(root: dict[Any, Any]) -> None:
    assert _state_ok(root) == explained_ok(root)


@pytest.mark.parametrize("depth", [MAX_STATE_DEPTH - 1, MAX_STATE_DEPTH])
def test_the_depth_bound_is_the_same_on_both_paths(depth: int) -> None:
    root: dict[str, Any] = {}
    inner: dict[str, Any] = root
    for _ in range(depth):
        inner["x"] = {}
        inner = inner["x"]
    assert _state_ok(root) == explained_ok(root) == (depth < MAX_STATE_DEPTH)


def test_a_refused_state_still_names_its_problem() -> None:
    with pytest.raises(InvalidMessage, match=r"^state value at \$\.a\[1\] is a float \(1\.5\);"):
        encode_state(cast(dict[str, Any], {"a": [Decimal("1"), 1.5]}))
