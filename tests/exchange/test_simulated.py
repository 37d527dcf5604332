"""SimulatedExchange: matching, exact money, locks, idempotency, errors, outage, latency."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from exchange import PartialFill, SimulatedExchange, Trade
from messages import (
    Asset,
    DuplicateOrder,
    ExchangeUnavailable,
    InsufficientCapital,
    InvalidAmount,
    InvalidConfig,
    InvalidMessage,
    Market,
    Rounding,
    Side,
    UnknownOrder,
)
from tests.exchange.conftest import BTC_USDT, ETH_USDT, XYZ_USD, D, ManualClock


def test_maker_and_taker_fees_are_exact_and_rounded_up(make_exchange):
    ex = make_exchange(maker_fee=D("0.001"), taker_fee=D("0.0015"))
    buy = ex.create_order("BTC/USDT", "limit", "buy", 50_000_000, D("100.03"))
    # lock = ceil(0.5 * 100.03 USDT) = ceil(5001.5 cents)
    assert ex.fetch_balance()["used"] == {"BTC": 0, "USDT": 5002}
    assert ex.fetch_balance()["free"]["USDT"] == 994_998

    (maker,) = ex.advance(D("100.03"))
    assert maker["order"] == buy["id"]
    assert maker["takerOrMaker"] == "maker"
    assert (maker["amount"], maker["price"], maker["cost"]) == (50_000_000, D("100.03"), 5002)
    assert maker["fee"] == {"cost": 50_000, "currency": "BTC"}  # 0.1 % of the base received

    sell = ex.create_order("BTC/USDT", "market", "sell", 30_000_000)
    (taker,) = sell["trades"]
    assert taker["takerOrMaker"] == "taker"
    # proceeds floor(3000.9) = 3000 cents; fee ceil(3000 * 0.0015) = ceil(4.5) = 5 cents
    assert (taker["cost"], taker["fee"]) == (3000, {"cost": 5, "currency": "USDT"})
    assert sell["status"] == "closed"
    assert sell["price"] == D("100.03")

    assert ex.fetch_balance() == {
        "free": {"BTC": 119_950_000, "USDT": 997_993},
        "used": {"BTC": 0, "USDT": 0},
        "total": {"BTC": 119_950_000, "USDT": 997_993},
    }
    assert ex.house_balance() == {"BTC": -19_950_000, "USDT": 2007}
    assert ex.fees_collected() == {"BTC": 50_000, "USDT": 5}
    ex.check_invariants()


def test_seller_cost_rounds_down_and_market_buyer_cost_rounds_up(make_exchange):
    ex = make_exchange(maker_fee=D("0.001"), taker_fee=D("0.0015"))
    ex.create_order("BTC/USDT", "limit", "sell", 333_333, D("100.07"))
    (trade,) = ex.advance(D("100.07"))
    # 333,333 sat at 100.07 = 33.3566... cents: the seller gets 33; fee ceil(0.033) = 1
    assert (trade["cost"], trade["fee"]["cost"]) == (33, 1)
    assert ex.fetch_balance()["free"]["USDT"] == 1_000_032

    order = ex.create_order("BTC/USDT", "market", "buy", 12_345)
    # 12,345 sat at 100.07 = 1.2353... cents: the buyer pays 2; fee ceil(18.5175) = 19 sat
    assert (order["cost"], order["fee"]) == (2, {"cost": 19, "currency": "BTC"})
    assert ex.fetch_balance()["free"] == {"BTC": 100_000_000 - 333_333 + 12_326, "USDT": 1_000_030}


def test_partial_fills_over_several_steps_sum_to_the_amount(make_exchange):
    ex = make_exchange(partial_fill=PartialFill(low=D("0.1"), high=D("0.3")), seed=3)
    order = ex.create_order("BTC/USDT", "limit", "buy", 1_000_000, D("100"))
    assert ex.advance(D("100.01")) == []  # above the limit: not fillable

    trades = []
    for _ in range(20):
        trades += ex.advance(D("99.5"))
    amounts = [t["amount"] for t in trades]
    assert len(amounts) >= 4  # at most 300,000 per step
    assert sum(amounts) == 1_000_000
    assert all(a <= 300_000 for a in amounts)
    assert all(a >= 100_000 for a in amounts[:-1])  # only the remainder may be smaller
    assert all(t["price"] == D("100") for t in trades)  # a resting order fills at its limit
    final = ex.fetch_order(order["id"])
    assert (final["status"], final["filled"], final["remaining"]) == ("closed", 1_000_000, 0)
    assert final["cost"] == sum(t["cost"] for t in trades)
    assert [t["id"] for t in final["trades"]] == [t["id"] for t in trades]
    assert ex.fetch_balance()["used"]["USDT"] == 0
    ex.check_invariants()


def test_sell_limit_fills_only_at_or_above_its_price(make_exchange):
    ex = make_exchange()
    ex.create_order("BTC/USDT", "limit", "sell", 1_000, D("100"))
    assert ex.advance(D("99.99")) == []
    (trade,) = ex.advance(D("100"))
    assert (trade["side"], trade["amount"], trade["price"]) == (Side.SELL, 1_000, D("100"))


def test_partial_buys_cost_exactly_their_lock_under_cumulative_rounding():
    # XYZ/USD in whole units at 0.5: 3 XYZ lock ceil(1.5) = 2 USD. Rounded one trade at a time,
    # three 1-unit trades would cost ceil(0.5) * 3 = 3, more than the lock. Rounded on the
    # order's cumulative fill they cost ceil(0.5)=1, ceil(1.0)-1=0, ceil(1.5)-1=1: exactly 2.
    one_at_a_time = PartialFill(low=D("0.33"), high=D("0.33"))
    ex = SimulatedExchange([XYZ_USD], {"USD": 2}, partial_fill=one_at_a_time)
    ex.create_order("XYZ/USD", "limit", "buy", 3, D("0.5"))
    assert ex.fetch_balance()["free"]["USD"] == 0
    trades = [t for _ in range(3) for t in ex.advance(D("0.5"))]
    assert [(t["amount"], t["cost"]) for t in trades] == [(1, 1), (1, 0), (1, 1)]
    for trade in trades:
        low, high = XYZ_USD.cost_bounds(trade["amount"], trade["price"])
        assert low <= trade["cost"] <= high  # each trade is still a fair rounding of its own
    assert ex.fetch_balance()["free"] == {"USD": 0, "XYZ": 3}
    assert ex.fetch_balance()["used"] == {"USD": 0, "XYZ": 0}
    ex.check_invariants()


def test_cancel_releases_exactly_the_remaining_lock(make_exchange):
    ex = make_exchange(partial_fill=PartialFill(low=D("0.2"), high=D("0.4")), seed=5)
    order = ex.create_order("BTC/USDT", "limit", "buy", 1_000_001, D("100.03"))
    assert ex.fetch_balance()["used"]["USDT"] == 101  # ceil(100.03100... cents)
    (trade,) = ex.advance(D("100"))
    remaining = 1_000_001 - trade["amount"]
    before = ex.fetch_balance()
    whole = BTC_USDT.notional(1_000_001, D("100.03"), Rounding.UP)
    assert before["used"]["USDT"] == whole - trade["cost"]  # what the rest will cost

    canceled = ex.cancel_order(order["id"], "BTC/USDT")
    assert (canceled["status"], canceled["remaining"]) == ("canceled", remaining)
    after = ex.fetch_balance()
    assert after["used"]["USDT"] == 0
    assert after["free"]["USDT"] == before["free"]["USDT"] + before["used"]["USDT"]
    assert after["total"] == before["total"]
    assert ex.advance(D("90")) == []  # a cancelled order never fills again
    assert ex.cancel_order(order["id"]) == canceled  # idempotent
    ex.check_invariants()


def test_cancel_of_a_sell_releases_its_base_and_a_closed_order_stays_closed(make_exchange):
    ex = make_exchange()
    sell = ex.create_order("BTC/USDT", "limit", "sell", 40_000_000, D("120"))
    assert ex.fetch_balance()["used"]["BTC"] == 40_000_000
    ex.cancel_order(sell["clientOrderId"])
    assert ex.fetch_balance()["free"]["BTC"] == 100_000_000

    buy = ex.create_order("BTC/USDT", "limit", "buy", 1_000, D("100"))
    ex.advance(D("100"))
    assert ex.cancel_order(buy["id"])["status"] == "closed"


def test_create_order_is_idempotent_on_client_order_id(make_exchange):
    ex = make_exchange()
    first = ex.create_order(
        "BTC/USDT", "limit", "buy", 1_000, D("100"), {"clientOrderId": "cf-p1-7"}
    )
    again = ex.create_order(
        "BTC/USDT", "limit", Side.BUY, 1_000, D("100.0"), {"clientOrderId": "cf-p1-7"}
    )
    assert again == first
    assert len(ex.fetch_open_orders()) == 1
    assert ex.fetch_balance()["used"]["USDT"] == 1  # locked once
    assert ex.fetch_order("cf-p1-7")["id"] == first["id"]

    state = ex.to_state()
    with pytest.raises(DuplicateOrder, match=r"^clientOrderId 'cf-p1-7' is order O000001 "):
        ex.create_order("BTC/USDT", "limit", "buy", 2_000, D("100"), {"clientOrderId": "cf-p1-7"})
    with pytest.raises(DuplicateOrder, match="exchange id"):
        ex.create_order("BTC/USDT", "limit", "buy", 1, D("100"), {"clientOrderId": "O000001"})
    assert ex.to_state() == state

    # A resent rejected order stays rejected: the caller must pick a new clientOrderId.
    rejecting = make_exchange(reject_rate=D(1))
    rejecting.advance(D("100"))
    rejected = rejecting.create_order("BTC/USDT", "market", "buy", 1, params={"clientOrderId": "x"})
    assert rejected["status"] == "rejected"
    assert rejecting.create_order(
        "BTC/USDT", "market", "buy", 1, params={"clientOrderId": "x"}
    ) == (rejected)


def test_exchange_ids_never_collide_with_client_order_ids(make_exchange):
    ex = make_exchange()
    first = ex.create_order("BTC/USDT", "limit", "buy", 1, D("1"), {"clientOrderId": "O000002"})
    second = ex.create_order("BTC/USDT", "limit", "buy", 1, D("1"))
    assert (first["id"], second["id"]) == ("O000001", "O000003")
    assert second["clientOrderId"] == "O000003"  # none given: the exchange id
    assert ex.fetch_order("O000002")["id"] == "O000001"


def test_trade_ids_are_unique_and_monotonic(make_exchange):
    ex = make_exchange(partial_fill=PartialFill(), seed=11)
    for i in range(10):
        ex.create_order("BTC/USDT", "limit", "buy" if i % 2 else "sell", 10_000 + i, D("100"))
    for _ in range(30):
        ex.advance(D("100"))
    ids = [t["id"] for t in ex.fetch_my_trades()]
    assert len(ids) > 10
    assert ids == [f"T{n:06d}" for n in range(1, len(ids) + 1)]


def test_fetch_my_trades_since_and_limit(clock: ManualClock) -> None:
    ex = SimulatedExchange(
        [BTC_USDT, ETH_USDT],
        {"USDT": 1_000_000, "BTC": 10**8, "ETH": 10**8},
        partial_fill=None,
        clock=clock,
    )
    for ts, symbol in ((10, "BTC/USDT"), (20, "ETH/USDT"), (30, "BTC/USDT")):
        clock.now = ts
        ex.create_order(symbol, "limit", "sell", 1_000, D("50"))
        ex.on_price(symbol, D("50"))
    stamps = [t["timestamp"] for t in ex.fetch_my_trades()]
    assert stamps == [10, 20, 30]
    assert [t["timestamp"] for t in ex.fetch_my_trades(since=20)] == [20, 30]  # inclusive
    assert [t["timestamp"] for t in ex.fetch_my_trades(since=21)] == [30]
    assert ex.fetch_my_trades(since=31) == []
    assert [t["timestamp"] for t in ex.fetch_my_trades(since=0, limit=2)] == [10, 20]
    assert [t["timestamp"] for t in ex.fetch_my_trades(limit=2)] == [20, 30]  # most recent
    assert [t["timestamp"] for t in ex.fetch_my_trades("BTC/USDT", since=11)] == [30]
    with pytest.raises(InvalidMessage, match=r"^limit must be a positive int, got 0$"):
        ex.fetch_my_trades(limit=0)


def test_timestamps_never_go_back_when_the_clock_does(
    make_exchange: Callable[..., SimulatedExchange], clock: ManualClock
) -> None:
    ex = make_exchange()
    clock.now = 500
    ex.create_order("BTC/USDT", "limit", "buy", 1, D("100"))
    clock.now = 400
    (trade,) = ex.advance(D("100"))
    assert trade["timestamp"] == 500


def test_reject_rate_is_deterministic_under_a_seed(make_exchange):
    def statuses(seed: int) -> list[str]:
        ex = make_exchange(reject_rate=D("0.3"), seed=seed)
        out = [
            ex.create_order("BTC/USDT", "limit", "buy", 1_000, D("100"))["status"]
            for _ in range(100)
        ]
        open_count = len(ex.fetch_open_orders())
        assert open_count == out.count("open")
        assert ex.fetch_balance()["used"]["USDT"] == open_count  # a rejected order locks nothing
        return out

    first = statuses(7)
    assert first == statuses(7)
    assert first != statuses(8)
    assert set(first) == {"open", "rejected"}
    assert 10 <= first.count("rejected") <= 50

    def all_statuses(rate: Decimal) -> set[str]:
        ex = make_exchange(reject_rate=rate)
        return {ex.create_order("BTC/USDT", "limit", "buy", 1, D(1))["status"] for _ in range(20)}

    assert all_statuses(D(0)) == {"open"}
    assert all_statuses(D(1)) == {"rejected"}


def test_insufficient_free_balance_raises_and_changes_nothing(make_exchange):
    ex = make_exchange(balances={"USDT": 10_000, "BTC": 0})
    ex.create_order("BTC/USDT", "limit", "buy", 90_000_000, D("100"))  # locks 9,000 cents
    state = ex.to_state()
    with pytest.raises(
        InsufficientCapital, match=r"^limit buy 20000000 BTC/USDT needs 2000 USDT, free is 1000$"
    ):
        ex.create_order("BTC/USDT", "limit", "buy", 20_000_000, D("100"), {"clientOrderId": "a"})
    with pytest.raises(InsufficientCapital, match="needs 1 BTC, free is 0"):
        ex.create_order("BTC/USDT", "limit", "sell", 1, D("100"))
    assert ex.to_state() == state
    with pytest.raises(ExchangeUnavailable, match="no price for BTC/USDT yet"):
        ex.create_order("BTC/USDT", "market", "buy", 1)
    assert ex.to_state() == state


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("ETH/BTC", "limit", "buy", 1, D(1)), InvalidMessage, "^unknown symbol 'ETH/BTC'"),
        (("BTC/USDT", "stop", "buy", 1, D(1)), InvalidMessage, "order type"),
        (("BTC/USDT", "limit", "hold", 1, D(1)), InvalidMessage, "^side must be 'buy' or 'sell'"),
        (("BTC/USDT", "limit", "buy", 1.0, D(1)), InvalidAmount, "got float 1.0$"),
        (("BTC/USDT", "limit", "buy", 0, D(1)), InvalidAmount, "^amount must be positive"),
        (("BTC/USDT", "limit", "buy", -5, D(1)), InvalidAmount, "must not be negative"),
        (("BTC/USDT", "limit", "buy", True, D(1)), InvalidAmount, "got bool"),
        (("BTC/USDT", "limit", "buy", 1, 100.5), InvalidAmount, "^price must be a Decimal"),
        (("BTC/USDT", "limit", "buy", 1, None), InvalidAmount, "^price must be a Decimal"),
        (("BTC/USDT", "limit", "buy", 1, D("NaN")), InvalidAmount, "finite"),
        (("BTC/USDT", "limit", "buy", 1, D(0)), InvalidAmount, "positive"),
        (("BTC/USDT", "market", "buy", 1, D(1)), InvalidMessage, "market order takes no price"),
    ],
)
def test_malformed_orders_are_refused_without_a_trace(make_exchange, args, error, message):
    ex = make_exchange()
    ex.advance(D("100"))
    state = ex.to_state()
    with pytest.raises(error, match=message):
        ex.create_order(*args)
    assert ex.to_state() == state


def test_unknown_params_and_bad_client_ids_are_refused(make_exchange):
    ex = make_exchange()
    with pytest.raises(InvalidMessage, match=r"^unsupported params \['clientOrderID'\]"):
        ex.create_order("BTC/USDT", "limit", "buy", 1, D(1), {"clientOrderID": "typo"})
    with pytest.raises(InvalidMessage, match="clientOrderId must be a non-empty string"):
        ex.create_order("BTC/USDT", "limit", "buy", 1, D(1), {"clientOrderId": ""})
    assert ex.fetch_open_orders() == []


def test_unknown_orders_raise_unknown_order(make_exchange):
    ex = make_exchange()
    order = ex.create_order("BTC/USDT", "limit", "buy", 1, D(1), {"clientOrderId": "c1"})
    with pytest.raises(UnknownOrder, match=r"^no order with id or clientOrderId 'nope'$"):
        ex.fetch_order("nope")
    with pytest.raises(UnknownOrder, match="'nope'"):
        ex.cancel_order("nope")
    ex2 = SimulatedExchange([BTC_USDT, ETH_USDT], {})
    with pytest.raises(UnknownOrder):
        ex2.fetch_order("O000001")
    assert ex.fetch_order(order["id"], "BTC/USDT")["clientOrderId"] == "c1"


def test_an_order_looked_up_in_another_market_is_unknown():
    ex = SimulatedExchange([BTC_USDT, ETH_USDT], {"USDT": 100})
    order = ex.create_order("BTC/USDT", "limit", "buy", 1, D(1))
    with pytest.raises(UnknownOrder, match=r"in ETH/USDT$"):
        ex.cancel_order(order["id"], "ETH/USDT")
    assert ex.fetch_order(order["id"])["status"] == "open"
    with pytest.raises(InvalidMessage, match="advance\\(\\) needs a symbol"):
        ex.advance(D(1))


def test_outage_refuses_requests_but_the_market_keeps_moving(make_exchange):
    ex = make_exchange()
    seen: list[Trade] = []
    ex.subscribe(seen.append)
    order = ex.create_order("BTC/USDT", "limit", "buy", 1_000, D("100"))
    ex.set_available(False)
    calls = [
        lambda: ex.create_order("BTC/USDT", "limit", "buy", 1, D(1)),
        lambda: ex.cancel_order(order["id"]),
        lambda: ex.fetch_order(order["id"]),
        ex.fetch_open_orders,
        ex.fetch_my_trades,
        ex.fetch_balance,
        ex.load_markets,
        ex.drain_fills,
    ]
    for call in calls:
        with pytest.raises(ExchangeUnavailable, match="unavailable"):
            call()
    (trade,) = ex.advance(D("99"))  # the order fills during the outage...
    assert seen == []  # ...but the feed holds it
    ex.set_available(True)
    assert seen == [trade]
    assert ex.drain_fills() == [trade]
    assert ex.fetch_order(order["id"])["status"] == "closed"


def test_latency_goes_through_the_injected_sleep(make_exchange):
    slept: list[float] = []
    ex = make_exchange(latency=D("0.25"), sleep=slept.append)
    ex.load_markets()
    ex.create_order("BTC/USDT", "limit", "buy", 1, D(1))
    ex.fetch_balance()
    ex.advance(D(2))  # the market itself has no latency
    assert slept == [0.25, 0.25, 0.25]
    make_exchange(latency=D(0), sleep=slept.append).fetch_balance()
    assert len(slept) == 3  # no latency: sleep is not called


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"maker_fee": D("-0.1")}, "maker_fee must be within"),
        ({"taker_fee": 0.001}, "taker_fee must be a finite Decimal"),
        ({"reject_rate": D("1.5")}, "reject_rate must be within"),
        ({"latency": 0.5}, "latency must be a Decimal"),
        ({"partial_fill": "half"}, "partial_fill must be a PartialFill"),
        ({"seed": "1"}, "seed must be an int"),
        ({"markets": {}}, "at least one market"),
        ({"markets": {"X": BTC_USDT}}, "must be a Market with that symbol"),
        ({"balances": {"USDT": -1}}, "must not be negative"),
    ],
)
def test_bad_settings_are_refused(make_exchange, kwargs, message):
    with pytest.raises((InvalidConfig, InvalidAmount), match=message):
        make_exchange(**kwargs)


def test_partial_fill_bounds_are_checked():
    with pytest.raises(InvalidConfig, match=r"^partial fill low 0.5 exceeds high 0.2$"):
        PartialFill(low=D("0.5"), high=D("0.2"))
    with pytest.raises(InvalidConfig, match="high must be a Decimal in"):
        PartialFill(high=D("1.5"))


def test_returned_structures_are_copies(make_exchange):
    ex = make_exchange()
    order = ex.create_order("BTC/USDT", "limit", "buy", 1_000, D("100"))
    ex.advance(D("100"))
    fetched = ex.fetch_order(order["id"])
    fetched["trades"][0]["fee"]["cost"] = 999
    fetched["trades"][0]["amount"] = 7
    ex.fetch_balance()["free"]["USDT"] = 0
    assert ex.fetch_my_trades()[0]["amount"] == 1_000
    assert ex.fetch_my_trades()[0]["fee"]["cost"] == 0
    ex.check_invariants()


def test_markets_of_one_asset_must_agree_on_its_precision():
    eth_btc = Market(symbol="ETH/BTC", base=ETH_USDT.base, quote=BTC_USDT.base)
    ex = SimulatedExchange([BTC_USDT, eth_btc], {})
    assert ex.load_markets() == {"BTC/USDT": BTC_USDT, "ETH/BTC": eth_btc}
    assert ex.fetch_balance()["total"] == {"BTC": 0, "ETH": 0, "USDT": 0}
    coarse_btc = Market(
        symbol="ETH/BTC", base=ETH_USDT.base, quote=Asset(symbol="BTC", precision=2)
    )
    with pytest.raises(InvalidConfig, match="BTC has two precisions"):
        SimulatedExchange([BTC_USDT, coarse_btc], {})


def test_market_order_uses_the_current_price_of_its_own_market(clock: ManualClock) -> None:
    ex = SimulatedExchange([BTC_USDT, ETH_USDT], {"USDT": 10**6}, partial_fill=None, clock=clock)
    ex.on_price("BTC/USDT", D("100"))
    ex.on_price("ETH/USDT", D("10"))
    order = ex.create_order("ETH/USDT", "market", "buy", 10**8)
    assert (order["price"], order["cost"]) == (D("10"), 1_000)
    assert ex.price("BTC/USDT") == D("100")
    assert Decimal("10") == ex.price("ETH/USDT")
