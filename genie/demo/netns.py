"""Named network namespaces for the demo: create, inspect, ping, always remove.

Plain `ip` commands (iproute2), argument lists only; the demo's own namespaces are the only
ones it touches.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def create(name: str) -> Path:
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    return NETNS_DIR / name


def delete(name: str) -> None:
    """Remove a namespace (its links go with it); a missing one is fine."""
    subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def addresses(name: str) -> dict[str, list[str]]:
    """Interface -> IPv4 CIDRs inside the namespace (loopback left out)."""
    out = subprocess.run(
        ["ip", "-n", name, "-j", "-4", "addr", "show"], check=True, capture_output=True
    ).stdout
    found: dict[str, list[str]] = {}
    for link in json.loads(out or b"[]"):
        ifname = str(link.get("ifname", ""))
        if ifname == "lo":
            continue
        found[ifname] = [
            f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if "local" in a
        ]
    return found


def links(name: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["ip", "-n", name, "-j", "link", "show"], check=True, capture_output=True
    ).stdout
    result: list[dict[str, Any]] = json.loads(out or b"[]")
    return result


def ping(name: str, address: str, *, source_if: str | None = None) -> bool:
    cmd = ["ip", "netns", "exec", name, "ping", "-c", "1", "-W", "2"]
    if source_if:
        cmd += ["-I", source_if]
    return subprocess.run([*cmd, address], check=False, capture_output=True).returncode == 0


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def enter(name: str) -> Iterator[None]:
    """Move the *current thread* into netns `name`, and back on exit.

    Processes the thread starts (CNI plugins spawned by an async test on the event-loop
    thread) run in that namespace: the bridge plugin makes its bridge in the namespace it
    runs in, so tests run delegates "on a node" by entering the node netns first.
    """
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(str(NETNS_DIR / name), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(saved)
    finally:
        os.close(saved)
