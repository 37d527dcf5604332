"""The crash drill's fixed world: profiles, exchange settings, price path and the sent-order log.

The drill's parent process and every incarnation of its worker process build the same world from
the same :class:`DrillConfig` (the worker gets it on its command line): the same profile ids,
configurations and claims, so a restarted worker recovers exactly the profiles the killed one
ran, and the parent can rebuild any profile's books from its committed snapshot alone.

Profiles are those of ``capflow run`` (:mod:`capflow.run_setup`): grid profiles ``grid<i>``
first, then signal-driven position profiles ``sig<i>``, all on one account that holds exactly
the sum of their claims.

The signals' orders are the one thing that only the worker knows: it writes each one to an
append-only JSON-lines file (:class:`SentLog`) *before* it submits the signal, so the oracle
(:func:`capflow.run_verify.verify`) knows every order any incarnation may have placed.
"""

from __future__ import annotations

import collections
import json
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from accounting import GridBook, OrderStatus, PositionLedger
from actors.events import EventSink
from actors.grid_profile import GridProfile, GridProfileConfig, grid_factory
from actors.position_profile import PositionProfile, PositionProfileConfig, position_factory
from actors.profile import HandlerFactory
from actors.supervisor import ProfileSpec
from capflow.driver import PricePath
from capflow.run_setup import (
    ACCOUNT,
    BASE,
    MARKET,
    QUOTE,
    Setup,
    grid_profile_config,
    price_tick,
)
from capflow.run_signals import SentOrder
from capflow.run_verify import Profiles
from exchange import Exchange, ExchangeServer, PriceDriver
from messages import Side

#: Lease holder and journal consumer of every worker incarnation (one logical runtime).
HOLDER = "drill"
#: The exchange feed consumer the workers drain.
FEED_CONSUMER = "drill"
#: The position profiles' client order id prefix (``cf-<profile>-<signal>``).
ORDER_PREFIX = "cf"


@dataclass(frozen=True, slots=True, kw_only=True)
class DrillConfig:
    """What defines a drill's world; equal configs build equal worlds.

    Attributes:
        profiles: how many profiles in all.
        grids: how many of them are grid profiles (the rest are position profiles).
        seed: seeds the exchange, the price path and the signals.
        duplicate_rate: chance that the exchange's feed delivers a trade twice.
        price_rate: price steps per second of the exchange's driver.
        signal_rate: chance per signal step (10 a second) and position profile of a signal.
    """

    profiles: int
    grids: int
    seed: int
    duplicate_rate: Decimal = Decimal("0.02")
    price_rate: int = 20
    signal_rate: float = 0.02

    def __post_init__(self) -> None:
        if self.profiles < 1 or not 0 <= self.grids <= self.profiles:
            raise ValueError(
                f"need 1 <= profiles and 0 <= grids <= profiles, got {self.profiles}, {self.grids}"
            )

    @property
    def setup(self) -> Setup:
        """The ``capflow run`` setup these profiles come from (no exchange latency)."""
        return Setup(
            grid_profiles=self.grids,
            signal_profiles=self.profiles - self.grids,
            seed=self.seed,
            duplicate_rate=self.duplicate_rate,
            latency=Decimal(0),
        )

    def to_args(self) -> list[str]:
        """The worker's command-line flags for this config (see :func:`add_config_arguments`)."""
        return [
            "--profiles",
            str(self.profiles),
            "--grids",
            str(self.grids),
            "--seed",
            str(self.seed),
            "--duplicate-rate",
            str(self.duplicate_rate),
            "--price-rate",
            str(self.price_rate),
            "--signal-rate",
            str(self.signal_rate),
        ]


class DrillWorld:
    """The profiles of a drill, their configurations and what the verifier knows of them."""

    def __init__(self, config: DrillConfig) -> None:
        self.config = config
        setup = config.setup
        self.setup = setup
        self.tick = price_tick(setup.start_price)
        self.grids: dict[str, GridProfileConfig] = {
            f"grid{i + 1}": grid_profile_config(i, setup) for i in range(setup.grid_profiles)
        }
        self.max_fee_rate = max(setup.maker_fee, setup.taker_fee)
        self.positions: dict[str, PositionProfileConfig] = {
            f"sig{i + 1}": PositionProfileConfig(
                quote=QUOTE,
                allocated_capital=setup.position_capital,
                markets={MARKET.symbol: MARKET},
                max_fee_rate=self.max_fee_rate,
                order_prefix=ORDER_PREFIX,
            )
            for i in range(setup.signal_profiles)
        }
        self.claims: dict[str, dict[str, int]] = {}
        for pid, grid in self.grids.items():
            self.claims[pid] = {BASE.symbol: grid.base_total, QUOTE.symbol: grid.quote_total}
        for pid, position in self.positions.items():
            self.claims[pid] = {QUOTE.symbol: position.allocated_capital}
        totals: collections.Counter[str] = collections.Counter()
        for claim in self.claims.values():
            totals.update(claim)
        self.balances = dict(totals)

    @property
    def profile_ids(self) -> list[str]:
        """Grid profiles first, then position profiles."""
        return [*self.grids, *self.positions]

    def factory(self, profile_id: str, exchange: Exchange, events: EventSink) -> HandlerFactory:
        """The profile's handler factory (the actors' own code)."""
        grid = self.grids.get(profile_id)
        # cast: the factories are plain Callables, which mypy does not accept as the protocol.
        if grid is not None:
            return cast(HandlerFactory, grid_factory(grid, exchange=exchange, events=events))
        position = self.positions[profile_id]
        return cast(HandlerFactory, position_factory(position, exchange=exchange, events=events))

    def specs(self, exchange: Exchange, events: EventSink) -> list[ProfileSpec]:
        """Every profile, for a :class:`actors.runtime.Runtime` on ``exchange``."""
        return [
            ProfileSpec(
                profile_id=pid,
                factory=self.factory(pid, exchange, events),
                symbols=frozenset({MARKET.symbol}),
                account_id=ACCOUNT,
                claims=self.claims[pid],
            )
            for pid in self.profile_ids
        ]

    def verifier_profiles(self) -> Profiles:
        """What the oracle (:mod:`capflow.run_verify`) needs to know of the profiles."""
        return Profiles(
            market=MARKET,
            grids={
                pid: {BASE.symbol: g.base_total, QUOTE.symbol: g.quote_total}
                for pid, g in self.grids.items()
            },
            positions={pid: p.allocated_capital for pid, p in self.positions.items()},
            max_fee_rate=self.max_fee_rate,
            order_prefix=ORDER_PREFIX,
        )

    def exchange_server(self, steps: int) -> ExchangeServer:
        """The exchange (not started): seeded, its price driver paused until the first resume."""
        setup = self.setup
        path = PricePath(seed=setup.seed, start=setup.start_price, tick=self.tick)
        prices = [next(path) for _ in range(max(1, steps))]
        driver = PriceDriver(prices=prices, rate=Decimal(self.config.price_rate), paused=True)
        return ExchangeServer(
            [MARKET],
            self.balances,
            maker_fee=setup.maker_fee,
            taker_fee=setup.taker_fee,
            duplicate_rate=setup.duplicate_rate,
            seed=setup.seed,
            drivers=[driver],
        )

    def books_from_state(self, profile_id: str, state: dict[str, Any]) -> Recovered:
        """A profile's books rebuilt from committed snapshot state, with the handler's own code.

        Raises:
            FundInvariantViolation: the state does not add up (checked on load).
        """

        def nothing(_: str) -> None:
            return None

        # No exchange call happens when a handler is built from state.
        handler = self.factory(profile_id, cast(Exchange, None), EventSink())(
            profile_id, state, nothing
        )
        summary = handler.summary()
        if isinstance(handler, PositionProfile):
            ledger = handler.ledger
            positions = {
                pos_id: {"qty": ledger.positions[pos_id].qty, "cost": ledger.positions[pos_id].cost}
                for pos_id in sorted(ledger.positions)
            }
            return Recovered(
                summary=summary,
                books={**summary, "positions": positions},
                applied=list(cast(list[str], state["applied_trade_ids"])),
                open_orders=frozenset(ledger.orders),
                halted=ledger.halt_reason,
            )
        assert isinstance(handler, GridProfile)
        book = handler.book
        if book is not None:
            book.check_invariants()
        applied = [] if book is None else sorted(book.trade_ids)
        open_orders = frozenset(
            ()
            if book is None
            else (oid for oid, order in book.orders.items() if order.status is OrderStatus.OPEN)
        )
        halted = state.get("halted")
        return Recovered(
            summary=summary,
            books=summary,
            applied=applied,
            open_orders=open_orders,
            halted=halted if isinstance(halted, str) else None,
        )

    def fresh_books(self, profile_id: str) -> Recovered:
        """What a profile with no snapshot yet holds (nothing applied)."""
        grid = self.grids.get(profile_id)
        if grid is not None:
            book = GridBook.create(
                profile_id, grid.grid, base_total=grid.base_total, quote_total=grid.quote_total
            )
            state = {"book": book.to_state(), "awaiting": {}, "halted": None}
            return self.books_from_state(profile_id, state)
        position = self.positions[profile_id]
        ledger = PositionLedger(
            profile_id,
            quote=position.quote,
            allocated_capital=position.allocated_capital,
            markets=position.markets,
            max_fee_rate=position.max_fee_rate,
        )
        return self.books_from_state(profile_id, ledger.to_state())


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovered:
    """A profile's books as its committed snapshot describes them.

    Attributes:
        summary: what the live profile's ``GetBooks`` would answer.
        books: the summary plus, for a position profile, its open positions (the verifier's
            input).
        applied: the trade ids the books have applied (a fill applied twice under the drill's
            unsafe mode appears twice, as ``<trade id>~<suffix>``).
        open_orders: client order ids the books hold as open on the exchange (a position
            ledger's pending orders, a grid's OPEN orders).
        halted: why the profile is halted, or None.
    """

    summary: dict[str, Any]
    books: dict[str, Any]
    applied: list[str]
    open_orders: frozenset[str]
    halted: str | None


class SentLog:
    """The signals' orders, one JSON line each, appended by the worker before each submit.

    A ``write`` is one ``os.write`` of a whole line to a file opened with ``O_APPEND``: once it
    returns, the line is in the kernel and survives a ``kill -9`` of the process.
    """

    def __init__(self, directory: Path, incarnation: int) -> None:
        self.path = directory / f"sent-{incarnation:04d}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, client_order_id: str, order: SentOrder) -> None:
        line = {
            "cid": client_order_id,
            "profile_id": order.profile_id,
            "signal_id": order.signal_id,
            "position_id": order.position_id,
            "side": order.side.value,
            "qty": order.qty,
            "limit_price": str(order.limit_price),
        }
        os.write(self._fd, (json.dumps(line, sort_keys=True) + "\n").encode("utf-8"))

    def close(self) -> None:
        os.close(self._fd)

    @staticmethod
    def read_all(directory: Path) -> dict[str, SentOrder]:
        """Every order any incarnation wrote, by client order id (a torn last line is skipped:
        its signal was never submitted)."""
        sent: dict[str, SentOrder] = {}
        for path in sorted(directory.glob("sent-*.jsonl")):
            for raw in path.read_text(encoding="utf-8").splitlines():
                try:
                    line = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                sent[line["cid"]] = SentOrder(
                    profile_id=line["profile_id"],
                    signal_id=line["signal_id"],
                    position_id=line["position_id"],
                    side=Side(line["side"]),
                    qty=line["qty"],
                    limit_price=Decimal(line["limit_price"]),
                )
        return sent


def plain(value: Any) -> Any:
    """JSON-ready data: Decimals (and anything else unusual) as strings, for comparisons."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))
