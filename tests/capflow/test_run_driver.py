"""The driver's parts: the price path, the signals, the exact JSON."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from pathlib import Path

import pytest

from capflow.driver import PricePath
from capflow.report import write_report
from capflow.run_setup import MARKET, Setup, build_world, price_tick
from capflow.run_signals import SignalGenerator
from messages import (
    ClosePosition,
    FillApplied,
    InvalidConfig,
    OpenPosition,
    ReservationRejected,
    Rounding,
    Side,
)

START = Decimal("30000")


def walk(seed: int, n: int) -> list[Decimal]:
    return list(itertools.islice(PricePath(seed=seed, start=START, tick=Decimal("0.01")), n))


def test_the_walk_is_determined_by_its_seed_and_stays_in_its_band() -> None:
    path = walk(7, 50_000)
    assert path == walk(7, 50_000)
    assert path[:100] != walk(8, 100)
    assert all(p == p.quantize(Decimal("0.01")) for p in path)
    # the band is +-10 % around the start; a chunk (1024 steps) may overshoot it a little
    assert START * Decimal("0.85") < min(path) < max(path) < START * Decimal("1.15")


def test_a_replay_loops_in_order() -> None:
    replay = [Decimal("1.5"), Decimal("2"), Decimal("1.75")]
    path = PricePath(seed=0, start=replay[0], tick=Decimal("0.01"), replay=replay)
    assert list(itertools.islice(path, 7)) == replay * 2 + replay[:1]


def signals(seed: int = 1) -> SignalGenerator:
    return SignalGenerator(
        {"sig1": 200_000, "sig2": 200_000}, MARKET, seed=seed, tick=Decimal("0.01"), rate=1.0
    )


def test_each_profile_starts_with_a_signal_too_large_for_its_capital() -> None:
    gen = signals()
    first = gen.step(START, 1)
    assert [type(s) for s in first] == [OpenPosition, OpenPosition]
    for signal in first:
        assert isinstance(signal, OpenPosition)
        assert signal.limit_price is not None
        assert MARKET.notional(signal.qty, signal.limit_price, Rounding.UP) > 200_000
    assert gen.oversized == 2


def test_signals_are_recorded_under_their_client_order_ids_and_repeat_with_the_seed() -> None:
    a, b = signals(), signals()
    run_a = [a.step(START, 1) for _ in range(50)]
    run_b = [b.step(START, 1) for _ in range(50)]
    assert run_a == run_b
    sent = [s for step in run_a for s in step]
    assert {f"cf-{s.profile_id}-{s.signal_id}" for s in sent} == set(a.sent)
    for s in sent:
        order = a.sent[f"cf-{s.profile_id}-{s.signal_id}"]
        assert order.position_id == s.position_id
        assert order.side is (Side.SELL if isinstance(s, ClosePosition) else Side.BUY)


def fill(cid: str, qty: int) -> FillApplied:
    pid = cid.split("-")[1]
    return FillApplied(
        message_id=f"f-{cid}", ts_ns=1, profile_id=pid, trade_id=f"T-{cid}",
        client_order_id=cid, qty=qty, duplicate=False,
    )  # fmt: skip


def refusal(pid: str, signal_id: str) -> ReservationRejected:
    return ReservationRejected(
        message_id=f"r-{signal_id}", ts_ns=1, profile_id=pid, signal_id=signal_id,
        reason="insufficient_position", needed=0, available=0, detail="nothing to sell",
    )  # fmt: skip


def test_only_filled_positions_are_exited_and_a_refused_exit_is_retried() -> None:
    gen = signals()
    sent = [s for _ in range(30) for s in gen.step(START, 1)]
    assert not any(isinstance(s, ClosePosition) for s in sent)  # nothing filled yet
    entry = next(s for s in sent if isinstance(s, OpenPosition) and s.signal_id[0] == "o")
    gen.on_event(fill(f"cf-{entry.profile_id}-{entry.signal_id}", entry.qty))
    exits: list[ClosePosition] = []
    for _ in range(200):
        exits += [s for s in gen.step(START, 1) if isinstance(s, ClosePosition)]
    assert exits
    assert {(e.profile_id, e.position_id) for e in exits} == {
        (entry.profile_id, entry.position_id)
    }  # the only position whose entries all filled, exited once
    (exit_,) = exits
    gen.on_event(refusal(exit_.profile_id, exit_.signal_id))
    later = [s for _ in range(200) for s in gen.step(START, 1) if isinstance(s, ClosePosition)]
    assert [(e.profile_id, e.position_id) for e in later] == [(entry.profile_id, entry.position_id)]


def test_a_refused_entry_opens_nothing_to_exit() -> None:
    gen = signals()
    sent = [s for _ in range(30) for s in gen.step(START, 1)]
    entries = [s for s in sent if isinstance(s, OpenPosition) and s.signal_id[0] == "o"]
    for e in entries:
        gen.on_event(refusal(e.profile_id, e.signal_id))
    assert any(gen._held.values())
    gen.step(START, 1)  # learns of the refusals (and sends new signals)
    refused = {e.position_id for e in entries}
    assert not refused & {p for held in gen._held.values() for p in held}


def test_the_account_holds_exactly_the_profiles_claims() -> None:
    world = build_world(Setup(grid_profiles=2, signal_profiles=3))
    assert world.balances == {"BTC": 2 * 5_000_000, "USDT": 2 * 1500_00 + 3 * 2000_00}
    assert world.exchange.fetch_balance()["total"] == world.balances
    assert world.profile_ids == ["grid1", "grid2", "sig1", "sig2", "sig3"]


def test_a_start_price_the_grid_cannot_work_with_is_refused() -> None:
    with pytest.raises(InvalidConfig, match=r"^buy budget 150000 USDT is too small: "):
        build_world(Setup(grid_profiles=1, signal_profiles=0, start_price=Decimal("1e9")))


def test_the_tick_follows_the_price() -> None:
    assert price_tick(START) == Decimal("0.01")
    assert price_tick(Decimal("1.2345")) == Decimal("0.00001")  # levels ~0.005 apart


def test_the_report_keeps_ints_and_writes_decimals_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_report(path, {"units": 10**20 + 1, "price": Decimal("30000.10")})
    assert json.loads(path.read_text()) == {"units": 10**20 + 1, "price": "30000.10"}
    with pytest.raises(TypeError, match=r"^object <object object at .*> has no exact JSON form$"):
        write_report(path, {"x": object()})
