"""Observability flags shared by ``capflow run``, ``loadtest``, the drill, and their wiring.

::

    add_observability_arguments(parser)     # --metrics-port PORT, --log-json, --log-level
    ...
    observer = Observer.from_args(args)     # logging configured now; metrics if asked
    runtime = Runtime(
        specs,
        store=observer.store(MemoryStore()),  # in memory: saves timed
        on_commit=observer.on_commit,         # durable mode: fenced commits timed
    )
    observer.listen(runtime.events)         # counters and audit lines
    with observer.serving(lambda: runtime) as url:  # GET url while the body runs
        ...

Metrics (:class:`actors.metrics.Metrics`) are only built when ``--metrics-port`` is given, so
that a run without it needs no ``prometheus-client``. The bound port (port 0: any free port)
is logged (``capflow.metrics``, INFO, ``metrics endpoint URL`` with ``port``) and
returned, for the command to print where a user (or a test) finds it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from actors.events import EventSink
from actors.logs import EventLogger, configure_logging
from persistence import SnapshotStore

if TYPE_CHECKING:
    from actors.metrics import Metrics, Observable

#: Logging levels ``--log-level`` accepts.
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

logger = logging.getLogger("capflow.metrics")


def port(text: str) -> int:
    """Argparse type: a TCP port, 0 meaning any free one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in [0, 65535], got {value}")
    return value


def _level(text: str) -> str:
    if text.upper() not in LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LEVELS)}, got {text!r}")
    return text.upper()


def add_observability_arguments(
    parser: argparse.ArgumentParser,
    *,
    what: str = "the run",
    logs: bool = True,
    logs_to: str = "stderr",
) -> None:
    """``--metrics-port PORT`` and, with ``logs``, ``--log-json`` and ``--log-level LEVEL``.

    Args:
        parser: where to add them.
        what: how the help text names what is observed ("the run", "each worker", ...).
        logs: add the logging flags too.
        logs_to: how the help text names where the logs go.
    """
    parser.add_argument(
        "--metrics-port",
        type=port,
        metavar="PORT",
        help=f"serve Prometheus metrics of {what} on http://127.0.0.1:PORT/metrics (0: any"
        " free port; the URL is printed)",
    )
    if not logs:
        return
    parser.add_argument(
        "--log-json",
        action="store_true",
        help=f"structured logs on {logs_to}: one JSON object per line, with profile_id and"
        " correlation_id (refusals at INFO; every event at --log-level DEBUG)",
    )
    parser.add_argument(
        "--log-level",
        type=_level,
        default=None,
        metavar="LEVEL",
        help=f"one of {', '.join(LEVELS)} (default: INFO with --log-json, else unchanged)",
    )


def observability_args(args: argparse.Namespace) -> list[str]:
    """The observability flags of ``args`` again, for a child process's command line."""
    out: list[str] = []
    if getattr(args, "metrics_port", None) is not None:
        out += ["--metrics-port", str(args.metrics_port)]
    if getattr(args, "log_json", False):
        out.append("--log-json")
    if getattr(args, "log_level", None) is not None:
        out += ["--log-level", str(args.log_level)]
    return out


class Observer:
    """One process's structured logs and metrics endpoint, from the observability flags.

    Logging is configured when it is built; :meth:`listen` feeds it a runtime's events.

    Args:
        metrics_port: serve metrics on this port (0: any free port); None: no metrics.
        log_json: JSON lines on stderr, and an :class:`actors.logs.EventLogger` listening.
        log_level: the root level; None: INFO when ``log_json``, else logging is left alone.
    """

    def __init__(
        self,
        *,
        metrics_port: int | None = None,
        log_json: bool = False,
        log_level: str | None = None,
    ) -> None:
        if log_json or log_level is not None:
            configure_logging(log_level or "INFO", json=log_json)
        self.log_json = log_json
        self.port = metrics_port
        self.metrics: Metrics | None = None
        if metrics_port is not None:
            from actors.metrics import Metrics  # noqa: PLC0415 - the metrics extra, if asked

            self.metrics = Metrics()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Observer:
        """From parsed flags (absent flags count as not given)."""
        return cls(
            metrics_port=getattr(args, "metrics_port", None),
            log_json=bool(getattr(args, "log_json", False)),
            log_level=getattr(args, "log_level", None),
        )

    def listen(self, events: EventSink) -> None:
        """Feed the counters (with metrics) and the audit lines (with JSON logs) from ``events``."""
        if self.metrics is not None:
            events.subscribe(self.metrics.on_event)
        if self.log_json:
            events.subscribe(EventLogger())

    @property
    def on_commit(self) -> Callable[[float, int], None] | None:
        """``Runtime(..., on_commit=...)`` for durable mode; None without metrics."""
        return self.metrics.observe_commit if self.metrics is not None else None

    def store(self, store: SnapshotStore) -> SnapshotStore:
        """``store``, with its saves timed into the commit histogram when metrics are on."""
        return self.metrics.timed(store) if self.metrics is not None else store

    @contextlib.contextmanager
    def serving(self, runtime: Callable[[], Observable]) -> Iterator[str | None]:
        """Serve ``/metrics`` and poll ``runtime()`` while the body runs; yields the URL.

        Yields None without ``--metrics-port``. ``runtime`` is called at every poll, so a
        process that replaces its runtime keeps being observed.

        Raises:
            OSError: the port cannot be bound (e.g. it is taken).
        """
        if self.metrics is None or self.port is None:
            yield None
            return
        server = self.metrics.serve(self.port)
        poller = self.metrics.watch(runtime)
        logger.info("metrics endpoint %s", server.url, extra={"port": server.port})
        try:
            yield server.url
        finally:
            poller.stop()
            server.close()
