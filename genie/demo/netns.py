"""Named network namespaces for the demo: create, inspect, ping, always remove.

Plain `ip` commands (iproute2), argument lists only; the demo's own namespaces are the only
ones it touches.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

NETNS_DIR = Path("/run/netns")


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
