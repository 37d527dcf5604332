"""Stateful property test: random order flow against the simulated exchange and a simple model.

The model is rebuilt from the exchange's own trade record and open orders with the textbook
formulas (no shared code path with the exchange's bookkeeping), and compared after every step:
per asset, account + house is the initial supply; the account's totals are the initial
balances plus what the trades say; ``used`` is the sum of the open orders' locks; each trade's
cost and fee are rounded as documented.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from exchange import PartialFill, SimulatedExchange
from messages import InsufficientCapital, Rounding, UnknownOrder, fee_for
from tests.exchange.conftest import BTC_USDT, XYZ_USD, D

RATES = [D(0), D("0.001"), D("0.0025"), D("0.3")]
FILLS = [
    None,
    PartialFill(),
    PartialFill(low=D("0.01"), high=D("0.05")),
    PartialFill(low=D(1), high=D(1)),
]
MARKETS = [BTC_USDT, XYZ_USD]


class ExchangeMachine(RuleBasedStateMachine):
    orders = Bundle("orders")

    @initialize(
        market=st.sampled_from(MARKETS),
        base=st.integers(0, 10**9),
        quote=st.one_of(st.integers(0, 50), st.integers(0, 10**7)),
        maker=st.sampled_from(RATES),
        taker=st.sampled_from(RATES),
        partial_fill=st.sampled_from(FILLS),
        reject_rate=st.sampled_from([D(0), D("0.2")]),
        seed=st.integers(0, 2**32),
    )
    def setup(self, *, market, base, quote, maker, taker, partial_fill, reject_rate, seed):
        self.market = market
        self.rates = {"maker": maker, "taker": taker}
        self.initial = {market.base.symbol: base, market.quote.symbol: quote}
        self.ex = SimulatedExchange(
            [market],
            self.initial,
            maker_fee=maker,
            taker_fee=taker,
            partial_fill=partial_fill,
            reject_rate=reject_rate,
            duplicate_rate=D("0.1"),
            seed=seed,
        )

    def _place(self, *args: Any) -> str | None:
        before = self.ex.to_state()
        try:
            return self.ex.create_order(self.market.symbol, *args)["id"]
        except InsufficientCapital:
            assert self.ex.to_state() == before  # a refused order leaves no trace
            return None

    @rule(
        target=orders,
        side=st.sampled_from(["buy", "sell"]),
        amount=st.integers(1, 10**8),
        cents=st.integers(1, 20_000),
    )
    def place_limit(self, side, amount, cents):
        return self._place("limit", side, amount, Decimal(cents) / 100)

    @rule(
        side=st.sampled_from(["buy", "sell"]),
        amount=st.integers(1, 10**8),
        cents=st.integers(1, 20_000),
    )
    def place_market(self, side, amount, cents):
        if self.ex.price(self.market.symbol) is None:
            self.ex.advance(Decimal(cents) / 100)
        self._place("market", side, amount)

    @rule(order_id=consumes(orders))
    def cancel(self, order_id):
        if order_id is None:
            return
        order = self.ex.cancel_order(order_id)
        assert order["status"] != "open"
        assert order["filled"] + order["remaining"] == order["amount"]

    @rule(order_id=orders)
    def resend(self, order_id):
        if order_id is None:
            return
        order = self.ex.fetch_order(order_id)
        again = self.ex.create_order(
            order["symbol"],
            order["type"],
            order["side"],
            order["amount"],
            order["price"] if order["type"] == "limit" else None,
            {"clientOrderId": order["clientOrderId"]},
        )
        assert again == order

    @rule(cents=st.integers(1, 20_000), steps=st.integers(1, 5))
    def step(self, cents, steps):
        for _ in range(steps):
            self.ex.advance(Decimal(cents) / 100)

    @rule()
    def unknown_order(self):
        try:
            self.ex.fetch_order("no-such-order")
        except UnknownOrder:
            pass
        else:
            raise AssertionError("fetch_order of an unknown id must raise UnknownOrder")

    @invariant()
    def books_balance(self):
        base, quote = self.market.base.symbol, self.market.quote.symbol
        balance = self.ex.fetch_balance()
        house = self.ex.house_balance()
        trades = self.ex.fetch_my_trades()

        # Conservation: account + house is constant per asset.
        for asset, supply in self.initial.items():
            assert balance["total"][asset] + house[asset] == supply
            assert balance["free"][asset] >= 0
            assert balance["total"][asset] == balance["free"][asset] + balance["used"][asset]

        # The account's totals follow from the trade record alone.
        expected = dict(self.initial)
        ids = set()
        cumulative: dict[str, tuple[int, int]] = {}  # order id -> (filled, cost) so far
        for t in trades:
            assert t["id"] not in ids
            ids.add(t["id"])
            low, high = self.market.cost_bounds(t["amount"], t["price"])
            rate = self.rates[t["takerOrMaker"]]
            assert low <= t["cost"] <= high
            # Cumulative rounding: an order's trades cost exactly its rounded filled total.
            filled, paid = cumulative.get(t["order"], (0, 0))
            filled, paid = filled + t["amount"], paid + t["cost"]
            cumulative[t["order"]] = (filled, paid)
            direction = Rounding.UP if t["side"] == "buy" else Rounding.DOWN
            assert paid == self.market.notional(filled, t["price"], direction)
            if t["side"] == "buy":
                assert t["fee"] == {
                    "cost": fee_for(t["amount"], rate, Rounding.UP),
                    "currency": base,
                }
                expected[base] += t["amount"] - t["fee"]["cost"]
                expected[quote] -= t["cost"]
            else:
                assert t["fee"] == {
                    "cost": fee_for(t["cost"], rate, Rounding.UP),
                    "currency": quote,
                }
                expected[base] -= t["amount"]
                expected[quote] += t["cost"] - t["fee"]["cost"]
        assert balance["total"] == expected

        # used == the sum of what each open order's remainder needs.
        used = {base: 0, quote: 0}
        for order in self.ex.fetch_open_orders():
            assert order["remaining"] == order["amount"] - order["filled"] > 0
            if order["side"] == "buy":
                # The lock is what the rest of the order will cost under cumulative rounding.
                whole = self.market.notional(order["amount"], order["price"], Rounding.UP)
                used[quote] += whole - order["cost"]
            else:
                used[base] += order["remaining"]
        assert balance["used"] == used
        self.ex.check_invariants()


TestExchangeMachine = ExchangeMachine.TestCase
# The invariant replays the whole trade record after every step: keep the budget modest
# (raise max_examples here for a deeper local run).
TestExchangeMachine.settings = settings(max_examples=40, stateful_step_count=30)
