"""The crash drill's handle on one worker process: spawn, talk (JSON lines), SIGKILL, reap."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

_ROOT = Path(__file__).resolve().parent.parent  # the directory that holds ``capflow/``


class WorkerDied(Exception):
    """The worker exited (or was never able to answer) while the drill waited for it."""


class WorkerProcess:
    """``python -m capflow.drill_worker ...``: one incarnation.

    Its stdout is read by a thread into a queue of events; its stderr goes to ``log_path``. It
    runs in its own session, so a Ctrl-C at the terminal reaches the drill only, which then
    kills it. Its stdin is a lifeline: when the drill goes away, the worker sees end of input
    and exits.
    """

    def __init__(self, args: list[str], log_path: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
        self.log_path = log_path
        self.spawned = time.monotonic()
        with open(log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "capflow.drill_worker", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=_ROOT,
                env=env,
                start_new_session=True,
            )
        self._events: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        assert self._proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True)
        self._reader.start()
        self.killed = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):
                event = json.loads(raw)
                if isinstance(event, dict):
                    self._events.put(event)
        self._events.put(None)  # end of output: the process is gone

    def send(self, command: str, **fields: Any) -> None:
        """One command line on the worker's stdin."""
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write((json.dumps({"cmd": command, **fields}) + "\n").encode("utf-8"))
            stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise WorkerDied(f"worker {self.pid} is gone: {exc}") from exc

    def wait_for(self, event: str, timeout: float) -> dict[str, Any]:
        """The next event named ``event`` (others before it are skipped).

        Raises:
            WorkerDied: the worker exited first, reported an error, or timed out.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerDied(f"worker {self.pid}: no {event!r} within {timeout} s")
            try:
                got = self._events.get(timeout=remaining)
            except queue.Empty:
                continue
            if got is None:
                self._events.put(None)  # stays at the end for any later wait
                code = self._proc.wait()
                raise WorkerDied(f"worker {self.pid} exited with status {code} before {event!r}")
            if got.get("event") == event:
                return got
            if got.get("event") in ("error", "fatal"):
                raise WorkerDied(f"worker {self.pid} reported {got}")

    def kill(self) -> None:
        """SIGKILL, at whatever instant this is; then reap."""
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        self._reap()

    def stop(self, timeout: float = 60.0) -> int:
        """Ask the worker to stop; SIGKILL after ``timeout``. Returns its exit status."""
        with contextlib.suppress(WorkerDied):
            self.send("stop")
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self._proc.wait()
        finally:
            self._reap()

    def _reap(self) -> None:
        self._proc.wait()
        self._reader.join(timeout=5)  # it ends at the end of the dead process's output
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
