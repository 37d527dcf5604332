"""Events: valid examples construct; each bad field value raises its exact error."""

from __future__ import annotations

import dataclasses

import pytest

from messages import (
    BootstrapCompleted,
    BootstrapStarted,
    DeadLettered,
    Fill,
    FillApplied,
    FillRejected,
    InvalidMessage,
    InvariantViolated,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    ReservationRejected,
)
from tests.messages.examples import (
    amount_cases,
    build,
    code_cases,
    count_cases,
    enum_cases,
    id_cases,
    params,
    price_cases,
    text_cases,
)

EVENTS = [
    Fill,
    OrderAccepted,
    OrderRejected,
    OrderCanceled,
    BootstrapStarted,
    BootstrapCompleted,
    ReservationRejected,
    FillApplied,
    FillRejected,
    InvariantViolated,
    DeadLettered,
]

CASES = [
    *params(
        Fill,
        [
            *id_cases("trade_id"),
            *id_cases("order_id"),
            *id_cases("client_order_id"),
            *id_cases("symbol"),
            *enum_cases("side", "Side", "buy"),
            *amount_cases("qty", positive=True),
            *price_cases("price"),
            *amount_cases("cost"),
            *amount_cases("fee"),
            *id_cases("fee_asset"),
            *enum_cases("liquidity", "Liquidity", "maker"),
        ],
    ),
    *params(
        OrderAccepted,
        [
            *id_cases("profile_id", optional=True),
            *id_cases("client_order_id"),
            *id_cases("exchange_order_id"),
            *id_cases("symbol"),
            *enum_cases("side", "Side", "SELL"),
            *amount_cases("qty", positive=True),
            *price_cases("price"),
        ],
    ),
    *params(
        OrderRejected,
        [
            *id_cases("profile_id", optional=True),
            *id_cases("client_order_id"),
            *text_cases("reason"),
        ],
    ),
    *params(
        OrderCanceled,
        [
            *id_cases("profile_id", optional=True),
            *id_cases("client_order_id"),
            *id_cases("exchange_order_id"),
            *amount_cases("remaining"),
        ],
    ),
    *params(BootstrapStarted, id_cases("profile_id")),
    *params(BootstrapCompleted, [*id_cases("profile_id"), *count_cases("replayed")]),
    *params(
        ReservationRejected,
        [
            *id_cases("profile_id"),
            *id_cases("client_order_id", optional=True),
            *[c for c in id_cases("signal_id") if c[1] is not None],
            *code_cases("reason"),
            *amount_cases("needed"),
            *amount_cases("available", negative_ok=True),
            *text_cases("detail"),
        ],
    ),
    *params(
        FillApplied,
        [
            *id_cases("profile_id"),
            *id_cases("trade_id"),
            *id_cases("client_order_id"),
            *amount_cases("qty", positive=True),
            ("duplicate", 1, InvalidMessage, r"^duplicate must be a bool, got int 1$"),
            ("duplicate", None, InvalidMessage, r"^duplicate must be a bool, got NoneType None$"),
            ("duplicate", "yes", InvalidMessage, r"^duplicate must be a bool, got str 'yes'$"),
        ],
    ),
    *params(
        FillRejected,
        [
            *id_cases("profile_id", optional=True),
            *id_cases("trade_id"),
            *code_cases("reason"),
            *text_cases("detail"),
        ],
    ),
    *params(InvariantViolated, [*id_cases("profile_id"), *text_cases("detail")]),
    *params(
        DeadLettered,
        [
            *id_cases("profile_id"),
            *count_cases("seq"),
            *id_cases("payload_type"),
            *text_cases("error"),
            *count_cases("attempts", positive=True),
        ],
    ),
]


@pytest.mark.parametrize(("cls", "name", "value", "error", "pattern"), CASES)
def test_bad_field_is_rejected_exactly(cls, name, value, error, pattern):
    with pytest.raises(error, match=pattern):
        build(cls, **{name: value})


@pytest.mark.parametrize("cls", EVENTS)
def test_example_is_valid_frozen_and_keyword_only(cls):
    msg = build(cls)
    assert msg == build(cls)
    assert cls.__match_args__ == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.message_id = "other"


def test_events_name_the_profile_when_they_know_it():
    for cls in (OrderAccepted, OrderRejected, OrderCanceled, FillRejected):
        assert build(cls, profile_id=None).profile_id is None
        assert build(cls, profile_id="p7").profile_id == "p7"


def test_reservation_rejected_names_an_order_or_a_signal():
    assert build(ReservationRejected, client_order_id="o-1", signal_id=None).signal_id is None
    assert build(ReservationRejected, client_order_id="o-1").signal_id == "sig-3"
    with pytest.raises(
        InvalidMessage, match=r"^ReservationRejected needs a client_order_id or a signal_id$"
    ):
        build(ReservationRejected, client_order_id=None, signal_id=None)


def test_reservation_rejected_available_may_be_negative():
    assert build(ReservationRejected, available=-(2**63 - 1)).available == -(2**63 - 1)


def test_free_text_may_hold_any_valid_unicode():
    reason = "Order would trigger immediately.\nCode: -2010 — «rejected»"
    assert build(OrderRejected, reason=reason).reason == reason


def test_fill_applied_duplicate_is_a_real_bool():
    assert build(FillApplied, duplicate=True).duplicate is True
