"""Parsing a scenario file: assets, markets, exchange, account and profiles.

Every problem raises :class:`capflow.scenario_yaml.InvalidScenario` naming its YAML path, before
anything runs. Steps are parsed by :mod:`capflow.scenario_steps`.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

from accounting import GridConfig
from capflow.scenario_spec import (
    ExchangeSettings,
    GridDef,
    PositionDef,
    ProfileDef,
    Scenario,
)
from capflow.scenario_steps import known, parse_steps
from capflow.scenario_yaml import InvalidScenario, Node, document, load_yaml
from exchange import PartialFill
from messages import Asset, InvalidConfig, InvalidMessage, Market


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file.

    Raises:
        InvalidScenario: unreadable file, bad YAML, an unknown key, a float, a bad value.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidScenario(source, f"cannot read the file: {exc}") from None
    return parse_scenario(load_yaml(text, source=source), source=source)


def parse_scenario(data: object, *, source: str) -> Scenario:
    """Check a loaded YAML document and build the :class:`Scenario`."""
    root = document(data, source=source).fields(
        required=("assets", "markets", "account", "profiles", "steps"),
        optional=("name", "description", "exchange"),
    )
    assets = _assets(root["assets"])
    markets = _markets(root["markets"], assets)
    account = {
        known(symbol, node, assets, "asset"): node.units(assets[symbol])
        for symbol, node in root["account"].entries()
    }
    profiles = tuple(_profile(node, assets, markets) for node in root["profiles"].items())
    if not profiles:
        root["profiles"].fail("declare at least one profile")
    seen: set[str] = set()
    for node, profile in zip(root["profiles"].items(), profiles, strict=True):
        if profile.id in seen:
            node.child("id").fail(f"profile id {profile.id!r} is used twice")
        seen.add(profile.id)
    scenario = Scenario(
        name=root["name"].text() if "name" in root else Path(source).stem,
        description=root["description"].text() if "description" in root else None,
        source=source,
        assets=assets,
        markets=markets,
        exchange=_exchange(root["exchange"]) if "exchange" in root else ExchangeSettings(),
        account=account,
        profiles=profiles,
    )
    return dataclasses.replace(scenario, steps=parse_steps(root["steps"], scenario))


def _assets(node: Node) -> dict[str, Asset]:
    assets: dict[str, Asset] = {}
    for symbol, item in node.entries():
        if not isinstance(symbol, str):
            item.fail(f"an asset symbol must be a string, got {symbol!r}")
        if isinstance(item.value, dict):
            precision = item.fields(required=("precision",))["precision"].integer(low=0)
        else:
            precision = item.integer(low=0)
        try:
            assets[symbol] = Asset(symbol=symbol, precision=precision)
        except InvalidMessage as exc:
            item.fail(str(exc))
    if not assets:
        node.fail("declare at least one asset")
    return assets


def _markets(node: Node, assets: dict[str, Asset]) -> dict[str, Market]:
    markets: dict[str, Market] = {}
    for symbol, item in node.entries():
        if not isinstance(symbol, str):
            item.fail(f"a market symbol must be a string, got {symbol!r}")
        f = item.fields(required=("base", "quote"))
        base = assets[known(f["base"].text(), f["base"], assets, "asset")]
        quote = assets[known(f["quote"].text(), f["quote"], assets, "asset")]
        try:
            markets[symbol] = Market(symbol=symbol, base=base, quote=quote)
        except InvalidMessage as exc:
            item.fail(str(exc))
    if not markets:
        node.fail("declare at least one market")
    return markets


def _exchange(node: Node) -> ExchangeSettings:
    f = node.fields(optional=("maker_fee", "taker_fee", "partial_fill", "duplicate_rate", "seed"))
    rates = {}
    for name in ("maker_fee", "taker_fee", "duplicate_rate"):
        if name in f:
            rate = f[name].decimal()
            if not 0 <= rate <= 1:
                f[name].fail(f"must be within [0, 1], got {rate}")
            rates[name] = rate
    partial: PartialFill | None = None
    if "partial_fill" in f and f["partial_fill"].value is not None:
        pf = f["partial_fill"].fields(required=("low", "high"))
        try:
            partial = PartialFill(low=pf["low"].decimal(), high=pf["high"].decimal())
        except InvalidConfig as exc:
            f["partial_fill"].fail(str(exc))
    seed = f["seed"].integer(low=0) if "seed" in f else 0
    return ExchangeSettings(partial_fill=partial, seed=seed, **rates)


def _profile(node: Node, assets: dict[str, Asset], markets: dict[str, Market]) -> ProfileDef:
    if not isinstance(node.value, dict) or "kind" not in node.value:
        node.fields(required=("id", "kind"))  # raises with the right message
    kind = node.child("kind").choice(("position", "grid"))
    if kind == "position":
        return _position(node, assets, markets)
    return _grid(node, markets)


def _position(node: Node, assets: dict[str, Asset], markets: dict[str, Market]) -> PositionDef:
    f = node.fields(
        required=("id", "kind", "allocated_capital"),
        optional=("quote", "markets", "max_fee_rate"),
    )
    pid = f["id"].ident()
    if "markets" in f:
        symbols = [known(m.text(), m, markets, "market") for m in f["markets"].items()]
    else:
        symbols = list(markets)
    if "quote" in f:
        quote = assets[known(f["quote"].text(), f["quote"], assets, "asset")]
        if "markets" not in f:
            symbols = [s for s in symbols if markets[s].quote == quote]
    else:
        quotes = sorted({markets[s].quote.symbol for s in symbols})
        if len(quotes) != 1:
            node.fail(f"its markets are quoted in {', '.join(quotes)}: set `quote`")
        quote = assets[quotes[0]]
    for symbol in symbols:
        if markets[symbol].quote != quote:
            f.get("markets", node).fail(f"market {symbol} is not quoted in {quote.symbol}")
    if not symbols:
        node.fail(f"no market is quoted in {quote.symbol}")
    max_fee = f["max_fee_rate"].decimal() if "max_fee_rate" in f else Decimal("0.001")
    if not 0 <= max_fee <= 1:
        f["max_fee_rate"].fail(f"must be within [0, 1], got {max_fee}")
    return PositionDef(
        id=pid,
        quote=quote,
        allocated_capital=f["allocated_capital"].units(quote),
        markets={s: markets[s] for s in symbols},
        max_fee_rate=max_fee,
    )


_GRID_DECIMALS = ("center_price", "increment", "target_spread", "min_price", "max_price")
_GRID_OPTIONAL_DECIMALS = ("weight_ratio", "dust_ratio", "min_target_ratio")


def _grid(node: Node, markets: dict[str, Market]) -> GridDef:
    f = node.fields(
        required=(
            "id",
            "kind",
            "market",
            *_GRID_DECIMALS,
            "active_orders",
            "budget_base",
            "budget_quote",
            "price_decimals",
        ),
        optional=(
            "base_total",
            "quote_total",
            *_GRID_OPTIONAL_DECIMALS,
            "op_fee",
            "op_fee_asset",
            "fee_reservation_ops",
        ),
    )
    pid = f["id"].ident()
    market = markets[known(f["market"].text(), f["market"], markets, "market")]
    budget_base = f["budget_base"].units(market.base)
    budget_quote = f["budget_quote"].units(market.quote)
    options: dict[str, object] = {
        name: f[name].decimal() for name in _GRID_OPTIONAL_DECIMALS if name in f
    }
    op_fee_asset = f["op_fee_asset"].text() if "op_fee_asset" in f else "quote"
    if "op_fee" in f:
        fee_asset = market.base if op_fee_asset in ("base", market.base.symbol) else market.quote
        options["op_fee"] = f["op_fee"].units(fee_asset)
    if "fee_reservation_ops" in f:
        options["fee_reservation_ops"] = f["fee_reservation_ops"].integer(low=0)
    try:
        config = GridConfig(
            market=market,
            **{name: f[name].decimal() for name in _GRID_DECIMALS},  # type: ignore[arg-type]
            active_orders=f["active_orders"].integer(low=1),
            budget_base=budget_base,
            budget_quote=budget_quote,
            price_decimals=f["price_decimals"].integer(low=0),
            op_fee_asset=op_fee_asset,
            **options,  # type: ignore[arg-type]
        )
    except InvalidConfig as exc:
        node.fail(f"grid configuration: {exc}")
    return GridDef(
        id=pid,
        config=config,
        base_total=f["base_total"].units(market.base) if "base_total" in f else budget_base,
        quote_total=f["quote_total"].units(market.quote) if "quote_total" in f else budget_quote,
    )
