"""Fixtures for the CNI tests: an installed shim in temp dirs, and a tiny HTTP-on-unix server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pathlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

from genie.cni import install


@dataclasses.dataclass(frozen=True)
class Installed:
    """A shim installed by install-cni, with the socket path it was given."""

    root: pathlib.Path
    bin_dir: pathlib.Path
    conf_dir: pathlib.Path
    shim: pathlib.Path
    socket: pathlib.Path


@pytest.fixture
def short_dir() -> Iterator[pathlib.Path]:
    """A short temp dir (unix socket paths must stay under 108 bytes)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="genie-t-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def installed(short_dir: pathlib.Path) -> Installed:
    bin_dir = short_dir / "bin"
    bin_dir.mkdir()
    conf_dir = short_dir / "net.d"
    socket = short_dir / "genie.sock"
    shim, _ = install.install(
        bin_dir=bin_dir, conf_dir=conf_dir, socket=str(socket), python=install.default_python()
    )
    return Installed(short_dir, bin_dir, conf_dir, shim, socket)


@dataclasses.dataclass
class Seen:
    """One request as the test server received it."""

    request_line: str
    headers: dict[str, str]
    body: bytes


@dataclasses.dataclass
class Server:
    """Records requests; answers each with `reply` (raw bytes) or closes if `reply` is None."""

    seen: list[Seen] = dataclasses.field(default_factory=list)
    reply: bytes | None = None
    read_request: bool = True

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.read_request:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append(Seen(lines[0], headers, body))
            if self.reply is not None:
                writer.write(self.reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
async def server(installed: Installed) -> AsyncIterator[Server]:
    state = Server()
    srv = await asyncio.start_unix_server(state.handle, path=str(installed.socket))
    try:
        yield state
    finally:
        srv.close()
        await srv.wait_closed()
