"""Attachments for the write-back tests: real events in a real EventStore, real result shapes.

The results below were printed by Debian's reference plugins (bridge 1.0.0 dual-stack with
DNS, ptp 0.4.0) run into a test netns; `attach` records them exactly as genie's ADD does
(AddRequested, one DelegateAdded per network, AddCompleted with the merged result).
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio

from genie.cni import results
from genie.domain import events as ev
from genie.domain import state as st
from genie.services import cursor
from genie.store import recorder

BRIDGE_RESULT: Mapping[str, Any] = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "gbr-x1", "mac": "fa:ad:70:6a:51:df"},
        {"name": "veth131c7946", "mac": "b2:b6:10:1a:40:72"},
        {"name": "eth1", "mac": "32:b3:2e:1e:33:47", "sandbox": "/run/netns/genie-t-f30243c5"},
    ],
    "ips": [
        {"interface": 2, "address": "10.212.0.2/24", "gateway": "10.212.0.1"},
        {"interface": 2, "address": "fd00:212::2/64", "gateway": "fd00:212::1"},
    ],
    "routes": [{"dst": "10.212.0.0/16", "gw": "10.212.0.1"}],
    "dns": {"nameservers": ["10.212.0.10"], "search": ["svc.local"]},
}

PTP_RESULT: Mapping[str, Any] = {
    "cniVersion": "0.4.0",
    "interfaces": [
        {"name": "vethb69793c7", "mac": "6a:1a:3a:8d:62:a0"},
        {"name": "eth2", "mac": "c2:30:99:9e:c2:e3", "sandbox": "/run/netns/genie-t-f30243c5"},
    ],
    "ips": [{"version": "4", "interface": 1, "address": "10.213.0.2/24", "gateway": "10.213.0.1"}],
    "dns": {},
}


def bridge_result(ifname: str, *addresses: str, mac: str = "0a:58:0a:d4:00:02") -> dict[str, Any]:
    """BRIDGE_RESULT with another sandbox interface name, MAC and addresses."""
    out = copy.deepcopy(dict(BRIDGE_RESULT))
    out["interfaces"][2]["name"] = ifname
    out["interfaces"][2]["mac"] = mac
    out["ips"] = [
        {"interface": 2, "address": a, "gateway": a.split("/")[0].rsplit(".", 1)[0] + ".1"}
        for a in addresses
    ]
    out.pop("dns")
    return out


def planned(
    *, index: int, network: str, ifname: str, cni_version: str = "1.0.0"
) -> ev.PlannedDelegate:
    """A plan as plan.plan_delegates makes it (a bridge plugin config, no real file behind)."""
    plugin = {
        "cniVersion": cni_version,
        "name": network,
        "type": "bridge",
        "bridge": f"gbr-{index}",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": f"10.{index}.0.0/24"}]]},
    }
    return ev.PlannedDelegate(
        index=index, network=network, ifname=ifname, cni_version=cni_version, plugins=(plugin,)
    )


def container_id() -> str:
    return secrets.token_hex(16)


async def attach(
    store: recorder.EventStore,
    *,
    pod: ev.PodRef,
    networks: Sequence[tuple[str, str, Mapping[str, Any]]],
    cid: str | None = None,
    netns: str = "/run/netns/genie-t-00000000",
) -> st.Attachment:
    """Record a completed ADD of `networks` ((network, ifname, delegate result), request order)."""
    cid = cid or container_id()
    plans = tuple(
        planned(
            index=i,
            network=network,
            ifname=ifname,
            cni_version=str(result.get("cniVersion", "1.0.0")),
        )
        for i, (network, ifname, result) in enumerate(networks)
    )
    stream = cursor.StreamCursor(store, cid, await store.stream_head(cid))
    await stream.append(
        ev.AddRequested(
            pod=pod,
            netns=netns,
            runtime_cni_version="1.0.0",
            delegates=plans,
            ifname=plans[0].ifname if plans else "eth0",
        )
    )
    merged = results.merge([r for _, _, r in networks], to_version="1.0.0")
    await stream.append(
        *(
            ev.DelegateAdded(index=p.index, result=r)
            for p, (_, _, r) in zip(plans, networks, strict=True)
        ),
        ev.AddCompleted(result=merged),
    )
    return store.state.attachments[cid]


async def fail_add(
    store: recorder.EventStore,
    *,
    pod: ev.PodRef,
    networks: Sequence[tuple[str, str]],
    failed_msg: str = "failed to allocate for range 0: no IP addresses available",
) -> str:
    """Record an ADD whose last network failed and that was rolled back; return its container."""
    cid = container_id()
    plans = tuple(planned(index=i, network=n, ifname=f) for i, (n, f) in enumerate(networks))
    stream = cursor.StreamCursor(store, cid, 0)
    await stream.append(
        ev.AddRequested(pod=pod, netns="/run/netns/x", runtime_cni_version="1.0.0", delegates=plans)
    )
    last = plans[-1]
    await stream.append(
        *(
            ev.DelegateAdded(index=p.index, result=bridge_result(p.ifname, "10.9.0.2/24"))
            for p in plans[:-1]
        ),
        ev.DelegateFailed(index=last.index, code=999, msg=failed_msg),
        *(ev.DelegateDeleted(index=p.index) for p in plans),
        ev.AddRolledBack(reason=f"network {last.network} ({last.ifname}): {failed_msg}"),
    )
    return cid


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], *, within: float = 15, what: str = ""
) -> float:
    """Poll until `predicate` holds; the seconds it took (AssertionError after `within`)."""
    start = time.monotonic()
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        elapsed = time.monotonic() - start
        if value:
            return elapsed
        if elapsed > within:
            raise AssertionError(f"not within {within:g}s: {what or predicate}")
        await anyio.sleep(0.02)
