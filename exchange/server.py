"""The exchange server process: ``python -m exchange.server``.

Hosts one :class:`SimulatedExchange` on 127.0.0.1 behind an authkey, with optional price
drivers, until SIGTERM/SIGINT or until its parent process ends. From a script::

    python -m exchange.server --port 0 --seed 1 --markets BTC/USDT \\
        --balance USDT=1000000 --balance BTC=100000000 \\
        --walk 100:2000:0.01 --rate 50 --print-address > server.json &

``--print-address`` prints one JSON line ``{"host", "port", "pid", "authkey"}`` (the authkey
in hex; set ``CAPFLOW_EXCHANGE_AUTHKEY`` to a hex key to choose it) and then nothing more on
stdout. ``RemoteExchange((host, port), bytes.fromhex(authkey))`` connects.

The server watches ``--parent-pid`` (default: the process that started it; 0: nobody) and
exits when that process is gone, so no server outlives the script that started it. From
Python, prefer :class:`exchange.ExchangeServer`, which starts this module with
``--config-stdin``: the configuration arrives pickled on stdin, and stdin stays open as a
lifeline (EOF = the parent is gone).

This module is not imported by the ``exchange`` package, so ``python -m`` runs it cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import pickle
import secrets
import signal
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from exchange._config import PartialFill
from exchange._service import Service, serve_forever
from exchange._wire import HOST
from exchange.hosted import EXIT_ADDRESS_IN_USE, PriceDriver, ServerConfig
from exchange.prices import load_csv, random_walk
from messages import Asset, CapflowError, Market

AUTHKEY_ENV = "CAPFLOW_EXCHANGE_AUTHKEY"
_WATCH_INTERVAL_S = 0.2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until it is told to stop or its parent is gone; the exit status."""
    args = _parser().parse_args(argv)
    try:
        config = _read_stdin_config() if args.config_stdin else _config(args)
        service = Service(config)
    except (CapflowError, OSError, ValueError) as exc:  # ValueError: a --state that is no JSON
        print(f"exchange server: {exc}", file=sys.stderr)
        return 2
    try:
        listener = socket.create_server((HOST, config.port), family=socket.AF_INET)
    except OSError as exc:
        print(f"exchange server: cannot listen on {HOST}:{config.port}: {exc}", file=sys.stderr)
        return EXIT_ADDRESS_IN_USE if exc.errno == errno.EADDRINUSE else 2
    port = listener.getsockname()[1]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    threading.Thread(
        target=serve_forever, args=(listener, service, config.authkey, stop), daemon=True
    ).start()
    if args.config_stdin:
        threading.Thread(target=_watch_lifeline, args=(stop,), daemon=True).start()
    service.start()

    ready: dict[str, Any] = {"host": HOST, "port": port, "pid": os.getpid()}
    if args.print_address:
        ready["authkey"] = config.authkey.hex()
    if args.print_address or args.config_stdin:
        print(json.dumps(ready), flush=True)
        os.dup2(2, 1)  # stdout was for that line only: let the reader see EOF
    else:
        print(f"exchange server on {HOST}:{port} (pid {os.getpid()})", file=sys.stderr)

    parent = os.getppid() if args.parent_pid is None else args.parent_pid
    is_parent = parent == os.getppid()
    try:
        while not stop.wait(_WATCH_INTERVAL_S):
            if parent and not _alive(parent, is_parent):
                break
    except KeyboardInterrupt:
        pass
    service.stop()
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of serve_forever
    listener.close()
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m exchange.server", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: a free one)")
    p.add_argument("--seed", type=int, default=0, help="the exchange's and the walk's seed")
    p.add_argument(
        "--markets", nargs="+", default=["BTC/USDT"], metavar="BASE/QUOTE[:BP:QP]",
        help="markets, with base/quote precisions (default 8:2)",
    )  # fmt: skip
    p.add_argument("--balance", action="append", default=[], metavar="ASSET=UNITS",
                   help="initial balance in minor units (repeat per asset)")  # fmt: skip
    for name in ("maker-fee", "taker-fee", "latency", "reject-rate", "duplicate-rate"):
        p.add_argument(f"--{name}", type=Decimal, default=Decimal(0))
    p.add_argument("--partial-fill", default="0.1:0.5", metavar="LOW:HIGH|whole")
    p.add_argument("--state", type=Path, help="start from a SimulatedExchange.to_state() JSON")
    p.add_argument("--walk", metavar="START:STEPS:VOL", help="drive the first market's price")
    p.add_argument("--prices-csv", type=Path, help="drive the first market along a CSV path")
    p.add_argument("--rate", type=Decimal, default=Decimal(100), help="driver steps per second")
    p.add_argument("--max-seconds", type=Decimal, help="the driver's lifetime")
    p.add_argument("--paused", action="store_true", help="start the driver paused")
    p.add_argument("--parent-pid", type=int, help="exit when this process is gone (0: never)")
    p.add_argument("--print-address", action="store_true", help="print the address as JSON")
    p.add_argument("--config-stdin", action="store_true", help=argparse.SUPPRESS)
    return p


def _config(args: argparse.Namespace) -> ServerConfig:
    """The configuration the command line describes."""
    try:
        markets = dict(_market(spec) for spec in args.markets)
        balances = {}
        for item in args.balance:
            asset, _, units = item.partition("=")
            balances[asset] = int(units)
        if args.partial_fill == "whole":
            partial: PartialFill | None = None
        else:
            low, high = args.partial_fill.split(":")
            partial = PartialFill(low=Decimal(low), high=Decimal(high))
        prices: list[Decimal] = []
        if args.walk:
            start, steps, vol = args.walk.split(":")
            prices = random_walk(args.seed, Decimal(start), int(steps), Decimal(vol))
        elif args.prices_csv:
            prices = [point.price for point in load_csv(args.prices_csv)]
    except (ValueError, InvalidOperation) as exc:
        raise _usage(f"bad argument: {exc}") from None
    drivers: tuple[PriceDriver, ...] = ()
    if prices:
        first = next(iter(markets))
        driver = PriceDriver(
            prices=prices,
            symbol=first,
            rate=args.rate,
            max_seconds=args.max_seconds,
            paused=args.paused,
        )
        drivers = (driver,)
    key = os.environ.get(AUTHKEY_ENV)
    settings = {
        "maker_fee": args.maker_fee,
        "taker_fee": args.taker_fee,
        "latency": args.latency,
        "reject_rate": args.reject_rate,
        "duplicate_rate": args.duplicate_rate,
        "partial_fill": partial,
        "seed": args.seed,
    }
    return ServerConfig(
        markets=markets,
        balances=balances,
        settings=settings,
        state=json.loads(args.state.read_text()) if args.state else None,
        drivers=drivers,
        port=args.port,
        authkey=bytes.fromhex(key) if key else secrets.token_bytes(32),
    )


def _market(spec: str) -> tuple[str, Market]:
    symbol, _, precisions = spec.partition(":")
    base, _, quote = symbol.partition("/")
    base_prec, _, quote_prec = (precisions or "8:2").partition(":")
    market = Market(
        symbol=symbol,
        base=Asset(symbol=base, precision=int(base_prec)),
        quote=Asset(symbol=quote, precision=int(quote_prec)),
    )
    return symbol, market


def _usage(message: str) -> SystemExit:
    _parser().print_usage(sys.stderr)
    print(f"python -m exchange.server: error: {message}", file=sys.stderr)
    return SystemExit(2)


def _read_stdin_config() -> ServerConfig:
    """The pickled :class:`ServerConfig` that :class:`ExchangeServer` writes to stdin."""
    (size,) = struct.unpack(">Q", _read_exactly(8))
    config = pickle.loads(_read_exactly(size))
    if not isinstance(config, ServerConfig):
        raise OSError(f"stdin held a {type(config).__name__}, not a ServerConfig")
    return config


def _read_exactly(size: int) -> bytes:
    # os.read, not sys.stdin: nothing may be buffered past the configuration.
    chunks, left = [], size
    while left:
        chunk = os.read(0, left)
        if not chunk:
            raise OSError(f"stdin ended {left} bytes before the end of the configuration")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _watch_lifeline(stop: threading.Event) -> None:
    """Set ``stop`` when stdin ends: the parent closed it, or died."""
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    stop.set()


def _alive(pid: int, is_parent: bool) -> bool:
    if is_parent:
        return os.getppid() == pid  # once the parent dies, we are re-parented
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie is gone too (Linux: state "Z")
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


if __name__ == "__main__":
    sys.exit(main())
