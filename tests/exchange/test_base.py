"""The interface: protocol conformance and trade_to_fill."""

from __future__ import annotations

import pytest

import exchange
from exchange import Exchange, FillFeed, SimulatedExchange, Trade, trade_to_fill
from messages import Fill, InvalidMessage, Liquidity, Side
from tests.exchange.conftest import BTC_USDT, D


def _trade(**changes: object) -> Trade:
    trade: Trade = {
        "id": "T000042",
        "order": "O000007",
        "clientOrderId": "cf-p1-3",
        "timestamp": 1_700_000_000_000_000_000,
        "symbol": "BTC/USDT",
        "side": Side.SELL,
        "takerOrMaker": "taker",
        "price": D("43250.5"),
        "amount": 2_000_000,
        "cost": 86_501,
        "fee": {"cost": 87, "currency": "USDT"},
    }
    trade.update(changes)  # type: ignore[typeddict-item]
    return trade


def test_simulated_exchange_implements_both_protocols():
    ex: Exchange = SimulatedExchange([BTC_USDT], {})
    feed: FillFeed = SimulatedExchange([BTC_USDT], {})
    assert isinstance(ex, Exchange)
    assert isinstance(feed, FillFeed)
    assert not isinstance(object(), Exchange)


def test_trade_to_fill_maps_every_field():
    fill = trade_to_fill(_trade())
    assert fill == Fill(
        message_id="fill-T000042",
        ts_ns=1_700_000_000_000_000_000,
        trade_id="T000042",
        order_id="O000007",
        client_order_id="cf-p1-3",
        symbol="BTC/USDT",
        side=Side.SELL,
        qty=2_000_000,
        price=D("43250.5"),
        cost=86_501,
        fee=87,
        fee_asset="USDT",
        liquidity=Liquidity.TAKER,
    )
    assert trade_to_fill(_trade(takerOrMaker="maker"), message_id="m-1").liquidity is (
        Liquidity.MAKER
    )
    assert trade_to_fill(_trade(), message_id="m-1").message_id == "m-1"


def test_trade_to_fill_rejects_what_fill_rejects():
    with pytest.raises(InvalidMessage, match="qty must be positive"):
        trade_to_fill(_trade(amount=0))


def test_public_api_is_sorted_and_importable():
    assert exchange.__all__ == sorted(
        exchange.__all__, key=lambda n: (not n.isupper(), not n[0].isupper(), n)
    )
    for name in exchange.__all__:
        assert getattr(exchange, name) is not None
