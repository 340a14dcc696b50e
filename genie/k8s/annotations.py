"""The pod annotations genie writes back after an ADD, built from the recorded attachment alone.

Two formats, both JSON strings (annotation values are strings):
- `multi-ip-preferences` (CNI-Genie): `{"multi_entry": N, "ips": {"ip1": {"ip", "interface"}}}`
  with every address of every interface (CNI-Genie itself wrote only the first per network);
- `k8s.v1.cni.cncf.io/network-status` (Multus): a list of `{name, interface, ips, mac,
  default, dns}` per network, `default: true` on the first.
Both come from each delegate's own recorded result, in request order. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from genie.domain import events as ev
from genie.domain import state as st

MULTI_IP_KEY: Final = "multi-ip-preferences"
NETWORK_STATUS_KEY: Final = "k8s.v1.cni.cncf.io/network-status"
KEYS: Final = (MULTI_IP_KEY, NETWORK_STATUS_KEY)
_DNS_KEYS: Final = ("nameservers", "domain", "search", "options")


@dataclasses.dataclass(frozen=True, slots=True)
class InterfaceStatus:
    """One network of the pod as attached: its interface in the sandbox and what it got."""

    network: str
    ifname: str
    addresses: tuple[str, ...]  # CIDR form, result order
    mac: str = ""
    dns: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ips(self) -> tuple[str, ...]:
        """The addresses without their prefix length."""
        return tuple(address.partition("/")[0] for address in self.addresses)


def interfaces(att: st.Attachment) -> tuple[InterfaceStatus, ...]:
    """Every delegate of `att` that has a recorded result, in request order."""
    out: list[InterfaceStatus] = []
    for delegate in sorted(att.delegates, key=lambda d: d.plan.index):
        result = delegate.result
        if result is None:
            continue
        out.append(interface_status(delegate.plan, result))
    return tuple(out)


def interface_status(planned: ev.PlannedDelegate, result: ev.JSONObject) -> InterfaceStatus:
    """What one delegate's result says about its interface in the pod (any result version)."""
    ifaces = [i for i in _list(result.get("interfaces")) if isinstance(i, Mapping)]
    return InterfaceStatus(
        network=planned.network,
        ifname=planned.ifname,
        addresses=_pod_addresses(result, ifaces, planned.ifname),
        mac=_mac(ifaces, planned.ifname),
        dns=_dns(result.get("dns")),
    )


def multi_ip_preferences(statuses: Sequence[InterfaceStatus]) -> dict[str, Any]:
    """CNI-Genie's `multi-ip-preferences` object: one `ipN` entry per address, in order."""
    ips: dict[str, dict[str, str]] = {}
    for status in statuses:
        for ip in status.ips:
            ips[f"ip{len(ips) + 1}"] = {"ip": ip, "interface": status.ifname}
    return {"multi_entry": len(ips), "ips": ips}


def network_status(statuses: Sequence[InterfaceStatus]) -> list[dict[str, Any]]:
    """Multus's `network-status` list: one entry per network, the first one the default."""
    out: list[dict[str, Any]] = []
    for position, status in enumerate(statuses):
        entry: dict[str, Any] = {
            "name": status.network,
            "interface": status.ifname,
            "ips": list(status.ips),
        }
        if status.mac:
            entry["mac"] = status.mac
        entry["default"] = position == 0
        if status.dns:
            entry["dns"] = dict(status.dns)
        out.append(entry)
    return out


def build(att: st.Attachment) -> dict[str, str]:
    """Both annotations for `att`, JSON-encoded, ready for a merge patch of the pod."""
    statuses = interfaces(att)
    return {
        MULTI_IP_KEY: _encode(multi_ip_preferences(statuses)),
        NETWORK_STATUS_KEY: _encode(network_status(statuses)),
    }


def merge_patch(annotations: Mapping[str, str], *, uid: str = "") -> dict[str, Any]:
    """A JSON merge patch that sets only these annotations (and, with `uid`, pins the pod).

    A merge patch touches only the keys it names, so other writers' annotations stay. A
    `metadata.uid` in the patch is a precondition: the API server rejects the patch with 409
    when the pod is a different object of the same name (deleted and re-created).
    """
    metadata: dict[str, Any] = {"annotations": dict(annotations)}
    if uid:
        metadata["uid"] = uid
    return {"metadata": metadata}


def _encode(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _pod_addresses(
    result: ev.JSONObject, ifaces: Sequence[Mapping[str, Any]], ifname: str
) -> tuple[str, ...]:
    """The result's addresses, minus any it puts on a host-side interface (outside the pod)."""
    found: list[str] = []
    for ip in _list(result.get("ips")):
        if not isinstance(ip, Mapping) or not isinstance(ip.get("address"), str):
            continue
        index = ip.get("interface")
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(ifaces):
            iface = ifaces[index]
            if not iface.get("sandbox") and iface.get("name") != ifname:
                continue
        found.append(ip["address"])
    for legacy in ("ip4", "ip6"):  # cniVersion 0.1.0 / 0.2.0
        block = result.get(legacy)
        if isinstance(block, Mapping) and isinstance(block.get("ip"), str):
            found.append(block["ip"])
    return tuple(found)


def _mac(ifaces: Sequence[Mapping[str, Any]], ifname: str) -> str:
    """The MAC of the delegate's interface in the sandbox (by name, else the sandboxed one)."""
    ranked = sorted(
        ifaces,
        key=lambda i: (i.get("name") != ifname, not i.get("sandbox")),
    )
    for iface in ranked:
        if (iface.get("name") == ifname or iface.get("sandbox")) and isinstance(
            iface.get("mac"), str
        ):
            return str(iface["mac"])
    return ""


def _dns(value: object) -> dict[str, Any]:
    """The result's DNS block with only the spec's keys, empty ones left out."""
    if not isinstance(value, Mapping):
        return {}
    return {key: value[key] for key in _DNS_KEYS if value.get(key)}
