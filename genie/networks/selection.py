"""Which networks a pod asks for, and on which interface, from its annotations.

The contract is DESIGN.md "Pod annotations": the CNI-Genie `cni` annotation first, then the
Multus `k8s.v1.cni.cncf.io/networks` annotation, else the default network alone. Anything
the pod wrote that cannot be honoured exactly is a CNI error 7 naming the pod and the value:
a pod never silently gets fewer or different networks than it asked for.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import types
from collections.abc import Callable, Mapping
from typing import Any, Final

from genie.cni import errors

GENIE_ANNOTATION: Final = "cni"
MULTUS_ANNOTATION: Final = "k8s.v1.cni.cncf.io/networks"
MAX_ANNOTATION_BYTES: Final = 64 * 1024
MAX_NETWORKS: Final = 32
IFNAMSIZ: Final = 16  # including the terminating NUL

# CNI spec: a network name starts with an alphanumeric, then alphanumerics, `_`, `.`, `-`.
_NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")
# Kubernetes namespaces are DNS-1123 labels.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_MAC = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}")
_TRAILING_DIGITS = re.compile(r"[0-9]*\Z")


@dataclasses.dataclass(frozen=True, slots=True)
class NetworkRequest:
    """One interface the pod wants: which network, its name in the pod, optional pinning."""

    name: str
    namespace: str | None
    ifname: str
    ips: tuple[str, ...] = ()
    mac: str | None = None
    default_route: tuple[str, ...] = ()
    cni_args: Mapping[str, Any] | None = None
    # Named in the Multus annotation: a NetworkAttachmentDefinition when Kubernetes is there.
    attachment_definition: bool = False


def select_networks(
    annotations: Mapping[str, str],
    *,
    default_network: str | None,
    primary_ifname: str,
    pod: str,
) -> tuple[NetworkRequest, ...]:
    """The pod's networks in request order; CniError(7) when its annotations are unusable."""

    def fail(msg: str) -> errors.CniError:
        return errors.CniError(errors.INVALID_NETWORK_CONFIG, f"pod {pod}: {msg}")

    if not valid_ifname(primary_ifname):
        raise errors.CniError(
            errors.INVALID_ENV, f"pod {pod}: invalid CNI_IFNAME {primary_ifname!r}"
        )
    for key in (GENIE_ANNOTATION, MULTUS_ANNOTATION):
        value = annotations.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise fail(f"annotation {key} is not a string")
        if len(value.encode("utf-8", "surrogatepass")) > MAX_ANNOTATION_BYTES:
            raise fail(f"annotation {key} is larger than {MAX_ANNOTATION_BYTES} bytes")
        if not value.strip():
            continue  # an empty annotation asks for nothing special
        if key == GENIE_ANNOTATION:
            requests = _genie(value, primary_ifname=primary_ifname, fail=fail)
        else:
            if default_network is None:
                raise fail(f"annotation {key} needs a default network and none is configured")
            requests = _multus(
                value, default_network=default_network, primary_ifname=primary_ifname, fail=fail
            )
        _check_unique_ifnames(requests, fail)
        return requests
    if default_network is None:
        raise fail("no networks requested and no default network")
    if not valid_network_name(default_network):
        raise fail(f"invalid default network name {default_network!r}")
    return (NetworkRequest(name=default_network, namespace=None, ifname=primary_ifname),)


# --- CNI-Genie: cni: "a,b@eth3" -------------------------------------------------------------


def _genie(
    value: str, *, primary_ifname: str, fail: Callable[[str], errors.CniError]
) -> tuple[NetworkRequest, ...]:
    entries = [e.strip() for e in value.split(",")]
    if len(entries) > MAX_NETWORKS:
        raise fail(f"annotation cni asks for more than {MAX_NETWORKS} networks")
    parsed: list[tuple[str, str | None]] = []
    for entry in entries:
        if not entry:
            raise fail(f"annotation cni {value!r} has an empty entry")
        name, sep, ifname = entry.partition("@")
        name = name.strip()
        if not valid_network_name(name):
            raise fail(f"annotation cni: invalid network name {name!r}")
        if sep:
            ifname = ifname.strip()
            if "@" in ifname or not valid_ifname(ifname):
                raise fail(f"annotation cni: invalid interface name {ifname!r} in {entry!r}")
            parsed.append((name, ifname))
        else:
            parsed.append((name, None))
    taken = {ifname for _, ifname in parsed if ifname is not None}
    prefix = _TRAILING_DIGITS.sub("", primary_ifname) or primary_ifname
    counter = 1
    requests: list[NetworkRequest] = []
    for position, (name, explicit) in enumerate(parsed):
        if explicit is not None:
            ifname = explicit
        elif position == 0:
            ifname = primary_ifname
            taken.add(ifname)
        else:
            while f"{prefix}{counter}" in taken:
                counter += 1
            ifname = f"{prefix}{counter}"
            if not valid_ifname(ifname):
                raise fail(f"annotation cni: derived interface name {ifname!r} is invalid")
            taken.add(ifname)
        requests.append(NetworkRequest(name=name, namespace=None, ifname=ifname))
    return tuple(requests)


# --- Multus: k8s.v1.cni.cncf.io/networks ------------------------------------------------------


def _multus(
    value: str,
    *,
    default_network: str,
    primary_ifname: str,
    fail: Callable[[str], errors.CniError],
) -> tuple[NetworkRequest, ...]:
    if not valid_network_name(default_network):
        raise fail(f"invalid default network name {default_network!r}")
    stripped = value.strip()
    if stripped.startswith(("[", "{")):
        selected = _multus_json(stripped, fail=fail)
    else:
        selected = _multus_text(stripped, fail=fail)
    if len(selected) + 1 > MAX_NETWORKS:
        raise fail(f"annotation {MULTUS_ANNOTATION} asks for more than {MAX_NETWORKS} networks")
    default = NetworkRequest(name=default_network, namespace=None, ifname=primary_ifname)
    requests = [default]
    for position, request in enumerate(selected, start=1):
        request = dataclasses.replace(
            request, ifname=request.ifname or f"net{position}", attachment_definition=True
        )
        requests.append(request)
    return tuple(requests)


def _multus_text(value: str, *, fail: Callable[[str], errors.CniError]) -> list[NetworkRequest]:
    entries = [e.strip() for e in value.split(",")]
    if len(entries) >= MAX_NETWORKS:
        raise fail(f"annotation {MULTUS_ANNOTATION} asks for more than {MAX_NETWORKS} networks")
    requests: list[NetworkRequest] = []
    for entry in entries:
        if not entry:
            raise fail(f"annotation {MULTUS_ANNOTATION} {value!r} has an empty entry")
        rest, sep, ifname = entry.partition("@")
        if sep and ("@" in ifname or not valid_ifname(ifname)):
            raise fail(f"annotation {MULTUS_ANNOTATION}: invalid interface name {ifname!r}")
        namespace: str | None = None
        if "/" in rest:
            namespace, _, rest = rest.partition("/")
            if not valid_namespace(namespace):
                raise fail(f"annotation {MULTUS_ANNOTATION}: invalid namespace {namespace!r}")
        if not valid_network_name(rest):
            raise fail(f"annotation {MULTUS_ANNOTATION}: invalid network name {rest!r}")
        requests.append(NetworkRequest(name=rest, namespace=namespace, ifname=ifname))
    return requests


def _multus_json(value: str, *, fail: Callable[[str], errors.CniError]) -> list[NetworkRequest]:
    key = MULTUS_ANNOTATION
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise fail(f"annotation {key} is not valid JSON: {exc}") from None
    if not isinstance(doc, list):
        raise fail(f"annotation {key} must be a JSON list of objects")
    if len(doc) >= MAX_NETWORKS:
        raise fail(f"annotation {key} asks for more than {MAX_NETWORKS} networks")
    requests: list[NetworkRequest] = []
    for i, item in enumerate(doc):
        where = f"annotation {key} entry {i}"
        if not isinstance(item, dict):
            raise fail(f"{where} is not an object")
        name = item.get("name")
        if not isinstance(name, str) or not valid_network_name(name):
            raise fail(f"{where}: invalid network name {name!r}")
        namespace = item.get("namespace")
        if namespace is not None and (
            not isinstance(namespace, str) or not valid_namespace(namespace)
        ):
            raise fail(f"{where}: invalid namespace {namespace!r}")
        ifname = item.get("interface", "")
        if not isinstance(ifname, str) or (ifname and not valid_ifname(ifname)):
            raise fail(f"{where}: invalid interface name {ifname!r}")
        ips = _string_list(item, "ips", where=where, fail=fail)
        for ip in ips:
            if not valid_ip(ip):
                raise fail(f"{where}: invalid IP address {ip!r}")
        gateways = _string_list(item, "default-route", where=where, fail=fail)
        for gw in gateways:
            if not valid_ip(gw, cidr=False):
                raise fail(f"{where}: invalid default-route gateway {gw!r}")
        mac = item.get("mac")
        if mac is not None and (not isinstance(mac, str) or not valid_mac(mac)):
            raise fail(f"{where}: invalid MAC address {mac!r}")
        cni_args = item.get("cni-args")
        if cni_args is not None and not isinstance(cni_args, dict):
            raise fail(f"{where}: cni-args must be an object, not {cni_args!r}")
        requests.append(
            NetworkRequest(
                name=name,
                namespace=namespace or None,
                ifname=ifname,
                ips=ips,
                mac=mac,
                default_route=gateways,
                cni_args=types.MappingProxyType(dict(cni_args)) if cni_args is not None else None,
            )
        )
    return requests


def _string_list(
    item: Mapping[str, Any], key: str, *, where: str, fail: Callable[[str], errors.CniError]
) -> tuple[str, ...]:
    value = item.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"{where}: {key} must be a list of strings, not {value!r}")
    return tuple(value)


def _check_unique_ifnames(
    requests: tuple[NetworkRequest, ...], fail: Callable[[str], errors.CniError]
) -> None:
    seen: set[str] = set()
    for request in requests:
        if request.ifname in seen:
            raise fail(f"interface name {request.ifname!r} requested twice")
        seen.add(request.ifname)


# --- validators (public: the planner and tests check requests with the same rules) ------------


def valid_network_name(name: str) -> bool:
    return _NETWORK_NAME.fullmatch(name) is not None


def valid_namespace(namespace: str) -> bool:
    return _NAMESPACE.fullmatch(namespace) is not None


def valid_ifname(ifname: str) -> bool:
    """Linux accepts 1-15 bytes without `/`, `:`, whitespace; `.` and `..` are refused."""
    if not ifname or ifname in {".", ".."} or len(ifname.encode("utf-8", "replace")) >= IFNAMSIZ:
        return False
    return all(c.isprintable() and not c.isspace() and c not in "/:" for c in ifname)


def valid_ip(text: str, *, cidr: bool = True) -> bool:
    """A plain IPv4/IPv6 address, or (when `cidr`) an address with a prefix length."""
    try:
        if cidr and "/" in text:
            ipaddress.ip_interface(text)
        else:
            ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def valid_mac(mac: str) -> bool:
    return _MAC.fullmatch(mac) is not None
