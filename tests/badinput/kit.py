"""What every bad-input test needs: raw shim and socket access, and the before/after ledger.

The shim is exec'd with any environment and any stdin bytes (runtime.invoke only sends a JSON
config); the raw socket reaches inputs the shim cannot produce. `Ledger` is the stored state
(`genie state --json` attachments) and the event count: a refused input must leave both alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import sqlite3
import subprocess
from collections.abc import Iterator, Mapping
from typing import Any

from genie.demo import runtime
from tests.e2e import node as e2e_node
from tests.e2e import truth

BASE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def cni_env(
    node: e2e_node.Node, sandbox: runtime.Sandbox, command: str = "ADD", /, **changes: str | None
) -> dict[str, str]:
    """The environment libcni gives the shim; `changes` override (None removes a variable)."""
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": sandbox.container_id,
        "CNI_NETNS": sandbox.netns,
        "CNI_IFNAME": sandbox.ifname,
        "CNI_ARGS": sandbox.cni_args(),
        "CNI_PATH": f"{node.bin_dir}:{e2e_node.DEBIAN_CNI}",
    }
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def good_stdin(node: e2e_node.Node, **changes: Any) -> bytes:
    conf = runtime.plugin_config(node.conflist)
    conf.update(changes)
    return json.dumps(conf).encode()


def shim(node: e2e_node.Node, *, env: Mapping[str, str], stdin: bytes) -> runtime.PluginReply:
    """Exec the installed shim once with exactly this environment and stdin."""
    proc = subprocess.run(
        [str(node.bin_dir / "genie")],
        input=stdin,
        env={**BASE_ENV, **env},
        capture_output=True,
        timeout=60,
        check=False,
    )
    return runtime.PluginReply(
        proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )


def error(reply: runtime.PluginReply) -> dict[str, Any]:
    """The CNI error object a failed invocation printed (asserting it is one)."""
    assert reply.exit_code == 1, (reply.exit_code, reply.stdout, reply.stderr)
    err = reply.json()
    assert isinstance(err, dict) and {"cniVersion", "code", "msg"} <= set(err), reply.stdout
    return err


def raw_exchange(node: e2e_node.Node, data: bytes, *, timeout: float = 15.0) -> bytes:
    """Send raw bytes on the agent's socket and read until it closes (or `timeout`)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(node.socket))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


@dataclasses.dataclass(frozen=True, slots=True)
class Ledger:
    attachments: list[dict[str, Any]]
    events: int

    @classmethod
    def read(cls, node: e2e_node.Node) -> Ledger:
        with contextlib.closing(sqlite3.connect(f"file:{node.db}?mode=ro", uri=True)) as db:
            (count,) = db.execute("SELECT count(*) FROM events").fetchone()
        return cls(node.state(), int(count))

    def new_events(self, node: e2e_node.Node) -> list[tuple[str, str]]:
        """(stream, kind) of every event appended since this ledger was read."""
        with contextlib.closing(sqlite3.connect(f"file:{node.db}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT stream, kind FROM events ORDER BY seq LIMIT -1 OFFSET ?", (self.events,)
            ).fetchall()
        return [(str(s), str(k)) for s, k in rows]


def still_serving(node: e2e_node.Node) -> None:
    """A good ADD then DEL through the shim work, and leave nothing behind."""
    sandbox = node.sandbox("good")
    reply = node.cni("ADD", sandbox)
    assert reply.exit_code == 0, reply.stdout
    assert sorted(truth.addresses(sandbox.netns)) == ["eth0", "eth1"]
    assert node.cni("DEL", sandbox).exit_code == 0
    assert node.allocations() == {}


@contextlib.contextmanager
def refused_without_trace(node: e2e_node.Node) -> Iterator[None]:
    """The body must be refused with no state change and no event; the agent serves after."""
    before = Ledger.read(node)
    yield
    after = Ledger.read(node)
    assert after == before, before.new_events(node)
    assert node.allocations() == {}
    still_serving(node)


@contextlib.contextmanager
def rolled_back(node: e2e_node.Node, container_id: str) -> Iterator[None]:
    """A delegate failure: the ADD is recorded and rolled back (only that container's events,
    ending AddRolledBack), state unchanged, addresses released; the agent serves after."""
    before = Ledger.read(node)
    yield
    after = Ledger.read(node)
    assert after.attachments == before.attachments
    added = before.new_events(node)
    assert {stream for stream, _ in added} == {container_id}, added
    assert added[0][1] == "AddRequested" and added[-1][1] == "AddRolledBack", added
    assert node.allocations() == {}
    still_serving(node)
