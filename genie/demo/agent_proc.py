"""Run `genie agent` as a child process inside a node namespace and talk to its socket.

Shared by the demo, the end-to-end tests and the benchmarks, so all of them exercise the
real agent binary the way a node would run it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        super().__init__("genie", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def get(socket_path: Path, url: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(socket_path, timeout=timeout)
    try:
        conn.request("GET", url)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class AgentProcess:
    """A `genie agent` child; `netns` (a /run/netns path) puts it inside a node namespace."""

    def __init__(
        self,
        *,
        socket_path: Path,
        args: Sequence[str],
        netns: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.socket_path = socket_path
        self._args = list(args)
        self._netns = netns
        self._log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        base = [sys.executable, "-m", "genie.cli", "agent", "--socket", str(self.socket_path)]
        base += self._args
        if self._netns is not None:
            return ["nsenter", f"--net={self._netns}", "--", *base]
        return base

    def start(self) -> None:
        log = self._log_path.open("ab") if self._log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(  # fixed argv, no shell
                self.command(), stdout=log, stderr=log, start_new_session=True
            )
        finally:
            if self._log_path and not isinstance(log, int):
                log.close()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode} before ready")
            with contextlib.suppress(OSError):
                status, _ = get(self.socket_path, "/readyz", timeout=1.0)
                if status == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"agent not ready on {self.socket_path} after {timeout}s")

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the agent and wait; it is killed if it does not exit in time."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    @contextlib.contextmanager
    def running(self) -> Iterator[AgentProcess]:
        self.start()
        try:
            self.wait_ready()
            yield self
        finally:
            self.stop()
