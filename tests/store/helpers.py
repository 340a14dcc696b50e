"""Small event builders and raw-SQLite helpers shared by the store and audit tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from genie.domain import events as ev


def add_requested(pod: str, networks: int = 2, *, namespace: str = "ns") -> ev.AddRequested:
    return ev.AddRequested(
        pod=ev.PodRef(namespace, pod, uid=f"uid-{pod}"),
        netns=f"/run/netns/{pod}",
        runtime_cni_version="1.0.0",
        delegates=tuple(
            ev.PlannedDelegate(
                index=i,
                network=f"tenant-{chr(97 + i)}",
                ifname=f"eth{i}",
                cni_version="1.0.0",
                plugins=(
                    {"cniVersion": "1.0.0", "name": f"tenant-{chr(97 + i)}", "type": "bridge"},
                ),
            )
            for i in range(networks)
        ),
    )


def cni_result(ip: str, ifname: str = "eth0") -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": ifname, "sandbox": "/run/netns/x"}],
        "ips": [{"address": ip, "gateway": ip.rsplit(".", 1)[0] + ".1", "interface": 0}],
    }


def delegate_added(index: int, ip: str) -> ev.DelegateAdded:
    return ev.DelegateAdded(index=index, result=cni_result(ip, f"eth{index}"))


def attach_events(pod: str, octet: int, networks: int = 2) -> list[ev.Event]:
    """A whole successful ADD of `networks` networks (the last one merges the results)."""
    out: list[ev.Event] = [add_requested(pod, networks)]
    out += [delegate_added(i, f"10.21{i}.0.{octet}/24") for i in range(networks)]
    out.append(ev.AddCompleted(result=cni_result(f"10.210.0.{octet}/24")))
    return out


def detach_events(networks: int = 2) -> list[ev.Event]:
    out: list[ev.Event] = [ev.DelRequested()]
    out += [ev.DelegateDeleted(index=i) for i in range(networks)]
    out.append(ev.DelCompleted())
    return out


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


def execute(db: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(sql, params)
    finally:
        conn.close()
