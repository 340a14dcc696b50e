"""Real network namespaces for tests: create, enter, inspect and always delete them.

Every namespace gets a unique `genie-t-<8 hex>` name so parallel test runs never collide,
and is deleted at teardown even when the test fails (deleting a netns removes its links).

Reading the truth uses pyroute2 in a short-lived thread that enters the namespace itself:
pyroute2's sync API runs its own event loop (it cannot be called from an async test's
thread), and a thread-local setns leaves the caller's namespace untouched.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute

from genie.demo import netns as demo_netns

NETNS_RUN_DIR = Path("/run/netns")
_T = TypeVar("_T")


def unique_name(prefix: str = "genie-t") -> str:
    """A fresh name such as `genie-t-1a2b3c4d` (netns) or, with a short prefix, a link name."""
    return f"{prefix}-{secrets.token_hex(4)}"


def netns_path(name: str) -> str:
    """The path plugins get as CNI_NETNS."""
    return str(NETNS_RUN_DIR / name)


def ip(*args: str, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `ip [-n netns] args...`, raising with its stderr when it fails."""
    cmd = ["ip", *(("-n", netns) if netns else ()), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc


def create_netns(name: str) -> None:
    """`ip netns add name` and bring its `lo` up."""
    ip("netns", "add", name)
    try:
        ip("link", "set", "lo", "up", netns=name)
    except BaseException:
        delete_netns(name)
        raise


def delete_netns(name: str) -> None:
    """Delete a namespace if it exists (its links go with it); never raises."""
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)


@contextlib.contextmanager
def temporary_netns(prefix: str = "genie-t") -> Iterator[str]:
    """A new namespace with a unique name, deleted on exit whatever happened."""
    name = unique_name(prefix)
    create_netns(name)
    try:
        yield name
    finally:
        delete_netns(name)


in_netns = demo_netns.enter  # one implementation, shared with the demo and bench


def run_in_netns(name: str, fn: Callable[..., _T], *args: Any) -> _T:
    """Call `fn(*args)` in a fresh thread that lives in netns `name`; return or re-raise."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with in_netns(name):
                box["result"] = fn(*args)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():
        raise TimeoutError(f"netns {name}: inspection did not finish in 30s")
    if "error" in box:
        raise box["error"]
    result: _T = box["result"]
    return result


def _links() -> list[tuple[str, str | None, str]]:
    with IPRoute() as ipr:
        return [
            (
                str(link.get("ifname")),
                link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
                str(link.get("address")),
            )
            for link in ipr.get_links()
        ]


def links(netns: str) -> list[tuple[str, str | None, str]]:
    """Every link in the namespace as (ifname, kind or None, mac)."""
    return run_in_netns(netns, _links)


def link_names(netns: str) -> set[str]:
    return {name for name, _, _ in links(netns)}


def _addresses(ifname: str, link_local: bool) -> list[str]:
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)
        if not index:
            return []
        found = [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=index[0])]
    return [a for a in found if link_local or not ipaddress.ip_interface(a).is_link_local]


def addresses(netns: str, ifname: str, *, link_local: bool = False) -> list[str]:
    """The addresses on `ifname` in the namespace as CIDR strings ([] if no such link).

    Link-local addresses (the kernel's automatic fe80::/64) are left out unless asked for.
    """
    return run_in_netns(netns, _addresses, ifname, link_local)


def _routes() -> list[tuple[str, str | None]]:
    with IPRoute() as ipr:
        out: list[tuple[str, str | None]] = []
        for r in ipr.get_routes(table=254):
            dst = r.get("RTA_DST")
            out.append((f"{dst}/{r['dst_len']}" if dst else "default", r.get("RTA_GATEWAY")))
        return out


def routes(netns: str) -> list[tuple[str, str | None]]:
    """Main-table routes as (destination CIDR or "default", gateway or None)."""
    return run_in_netns(netns, _routes)


def ping(netns: str, address: str, *, count: int = 1, wait_s: int = 1) -> bool:
    """True when `address` answers an ICMP echo sent from inside `netns`."""
    address = address.split("/", 1)[0]
    proc = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "ping",
            "-n",
            "-q",
            "-c",
            str(count),
            "-W",
            str(wait_s),
            address,
        ],
        capture_output=True,
        timeout=10 + count * wait_s,
        check=False,
    )
    return proc.returncode == 0


def veth_pair(netns: str, *, prefix: str = "gv") -> tuple[str, str]:
    """A veth pair inside `netns`, both ends up (one end makes a macvlan master)."""
    suffix = secrets.token_hex(3)
    a, b = f"{prefix}a{suffix}", f"{prefix}b{suffix}"
    ip("link", "add", a, "type", "veth", "peer", "name", b, netns=netns)
    ip("link", "set", a, "up", netns=netns)
    ip("link", "set", b, "up", netns=netns)
    return a, b
