"""A real ``redis-server`` on a free loopback port, for tests, drills and benchmarks.

    with RedisServer(appendonly=True, appendfsync="everysec") as server:
        store = RedisStore(server.url)
        ...
        server.kill()      # SIGKILL: what a crash does to the process
        server.restart()   # same port and directory: the AOF is replayed

The server runs in its own directory (a new temporary one unless given) with the persistence
chosen here and nothing else; it never listens on 6379 and never on a public interface.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

from messages import InvalidConfig, StoreUnavailable

_DEFAULT_PORT: Final = 6379  # the system's own server lives there: never ours
_SUN_PATH_MAX: Final = 107  # sockaddr_un.sun_path on Linux, minus the terminating NUL
_PORT_ATTEMPTS: Final = 5

AppendFsync = Literal["always", "everysec", "no"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (never 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != _DEFAULT_PORT:
            return port


class RedisServer:
    """One ``redis-server`` process that this object starts, stops, kills and restarts.

    Args:
        appendonly: keep an append-only file (the AOF is what survives ``kill()``).
        appendfsync: the AOF fsync policy: ``"always"``, ``"everysec"`` or ``"no"``.
        save: RDB save points (``""``: no RDB snapshots).
        port: TCP port; default: a free one (chosen once, kept across restarts).
        unix_socket: also listen on ``<directory>/redis.sock`` (see :attr:`unix_url`).
        directory: where the server keeps its files; default: a new temporary directory,
            removed by :meth:`close`.
        binary: the ``redis-server`` executable (a name on PATH or a path).
        config: more ``redis.conf`` directives, e.g. ``{"maxmemory": "64mb"}``.
        startup_timeout_s: how long :meth:`start` waits for the server to answer PING.

    Raises:
        StoreUnavailable: the binary cannot be found.
        InvalidConfig: a setting that cannot work (unknown fsync policy, port 6379, a socket
            path too long for the OS).
    """

    def __init__(
        self,
        *,
        appendonly: bool = True,
        appendfsync: AppendFsync = "everysec",
        save: str = "",
        port: int | None = None,
        unix_socket: bool = False,
        directory: str | os.PathLike[str] | None = None,
        binary: str = "redis-server",
        config: Mapping[str, str] | None = None,
        startup_timeout_s: float = 10.0,
    ) -> None:
        found = shutil.which(binary)
        if found is None:
            raise StoreUnavailable(
                f"redis-server binary {binary!r} not found (PATH or path): install Redis "
                "(Debian/Ubuntu: apt-get install redis-server) or pass binary=/path/to/it"
            )
        if appendfsync not in ("always", "everysec", "no"):
            raise InvalidConfig(f"appendfsync must be always, everysec or no, got {appendfsync!r}")
        if port == _DEFAULT_PORT:
            raise InvalidConfig("port 6379 belongs to the system's redis-server; choose another")
        self.binary = found
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.save = save
        self.unix_socket = unix_socket
        self.config = dict(config or {})
        self.startup_timeout_s = startup_timeout_s
        self._auto_port = port is None
        self.port = free_port() if port is None else port
        self._own_dir = directory is None
        self.directory = Path(
            tempfile.mkdtemp(prefix="capflow-redis-") if directory is None else directory
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        if unix_socket and len(str(self.socket_path)) > _SUN_PATH_MAX:
            if self._own_dir:
                shutil.rmtree(self.directory, ignore_errors=True)
            raise InvalidConfig(f"unix socket path too long for the OS: {self.socket_path}")
        self._proc: subprocess.Popen[bytes] | None = None

    # --- addresses ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def unix_url(self) -> str:
        """``unix://<directory>/redis.sock`` (only if started with ``unix_socket=True``)."""
        if not self.unix_socket:
            raise InvalidConfig("this server was not started with unix_socket=True")
        return f"unix://{self.socket_path}"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the server and wait until it answers PING (no-op if it runs).

        Raises:
            StoreUnavailable: it exited or did not answer within ``startup_timeout_s``; the
                message carries the end of its log.
        """
        if self.running:
            return self
        for attempt in range(_PORT_ATTEMPTS):
            conf = self._write_config()
            # Config errors go to stderr before the log file is opened: keep both.
            with open(self.directory / "redis.stdout", "wb") as out:
                self._proc = subprocess.Popen(
                    [self.binary, str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.directory,
                )
            problem = self._wait_ready()
            if problem is None:
                return self
            self._reap()
            log = self._log_tail()
            if self._auto_port and "Address already in use" in log and attempt + 1 < _PORT_ATTEMPTS:
                self.port = free_port()  # lost a race for the port: pick another
                continue
            raise StoreUnavailable(f"redis-server on port {self.port} {problem}; log:\n{log}")
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (the server flushes its AOF and exits), then SIGKILL after ``timeout_s``."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL, like a crash: nothing is flushed beyond what the server already wrote."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
        self._reap()

    def restart(self) -> Self:
        """Stop (if running) and start again on the same port and directory."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its directory if this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<RedisServer {self.url} {state} in {self.directory}>"

    # --- helpers --------------------------------------------------------------------------

    def _write_config(self) -> Path:
        lines = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.directory),
            "logfile": str(self.log_path),
            "daemonize": "no",
            "appendonly": "yes" if self.appendonly else "no",
            "appendfsync": self.appendfsync,
            "save": f'"{self.save}"',
        }
        if self.unix_socket:
            lines |= {"unixsocket": str(self.socket_path), "unixsocketperm": "700"}
        lines |= self.config
        conf = self.directory / "redis.conf"
        conf.write_text("".join(f"{name} {value}\n" for name, value in lines.items()))
        return conf

    def _wait_ready(self) -> str | None:
        """None once the server answers PING; else what went wrong."""
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return f"exited with status {self._proc.returncode} while starting"
            if _answers_ping(self.port):
                return None
            time.sleep(0.01)  # bounded polling for the server to come up
        return f"did not answer PING within {self.startup_timeout_s} s"

    def _reap(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
        self._proc = None

    def _log_tail(self, lines: int = 15) -> str:
        tail = []
        for path in (self.directory / "redis.stdout", self.log_path):
            with contextlib.suppress(OSError):
                tail += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(line for line in tail if line.strip()) or "(no output)"


def _answers_ping(port: int) -> bool:
    """True if the server takes commands: PONG, or an auth error (it is up, just locked)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    # "-LOADING ..." while the AOF is replayed: not ready yet.
    return reply.startswith((b"+PONG", b"-NOAUTH", b"-WRONGPASS"))
