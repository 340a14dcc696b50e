"""CNI result conversion between spec versions, and the merge of per-network results into one.

Delegates answer in their own cniVersion (0.1.0 ... 1.1.0); the runtime wants one result in
the version it asked for. Every result is first checked and normalized to the 1.x shape, then
rendered for the target version: 0.3.x/0.4.0 add `ips[].version`, 1.x have none, 0.x
interfaces carry only name/mac/sandbox. Only fields the spec defines are kept.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from genie.cni import errors, versions

_IFACE_FIELDS_0X = ("name", "mac", "sandbox")
_IFACE_FIELDS_1X = ("name", "mac", "mtu", "sandbox", "socketPath", "pciID")
_IFACE_STR_FIELDS = ("mac", "sandbox", "socketPath", "pciID")
_ROUTE_INT_FIELDS = ("mtu", "advmss", "priority", "table", "scope")


@dataclasses.dataclass(slots=True)
class _Parts:
    """A result checked and normalized to the 1.x shape (ips without `version`)."""

    interfaces: list[dict[str, Any]]
    ips: list[dict[str, Any]]
    routes: list[dict[str, Any]]
    dns: dict[str, Any]


def _fail(msg: str, details: str = "") -> errors.CniError:
    return errors.CniError(errors.DECODE_FAILURE, msg, details)


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(f"result field {where} must be an object, not {type(value).__name__}")
    return value


def _array(value: object, where: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise _fail(f"result field {where} must be an array, not {type(value).__name__}")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(f"result field {where} must be a string, not {type(value).__name__}")
    return value


def _integer(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"result field {where} must be an integer, not {value!r}")
    return value


def _cidr(value: object, where: str) -> str:
    text = _string(value, where)
    try:
        if "/" not in text:
            raise ValueError("no prefix length")
        ipaddress.ip_interface(text)
    except ValueError as exc:
        raise _fail(f"result field {where} is not an address in CIDR form: {text!r}") from exc
    return text


def _ip(value: object, where: str) -> str:
    text = _string(value, where)
    try:
        ipaddress.ip_address(text)
    except ValueError as exc:
        raise _fail(f"result field {where} is not an IP address: {text!r}") from exc
    return text


def _family(cidr: str) -> str:
    return str(ipaddress.ip_interface(cidr).version)


def result_version(result: Mapping[str, Any]) -> str:
    """The version a delegate result is written in; a missing cniVersion means legacy 0.1.0."""
    version = result.get("cniVersion")
    if version is None or version == "":
        if "ips" in result or "interfaces" in result:
            raise _fail("result has no cniVersion but uses the 0.3.0+ form (ips/interfaces)")
        return "0.1.0"
    if not isinstance(version, str) or version not in versions.KNOWN_RESULT_VERSIONS:
        raise errors.CniError(
            errors.INCOMPATIBLE_VERSION,
            f"result has unknown cniVersion {version!r}",
            f"known result versions: {', '.join(versions.KNOWN_RESULT_VERSIONS)}",
        )
    return version


def _route(value: object, where: str) -> dict[str, Any]:
    raw = _object(value, where)
    route: dict[str, Any] = {"dst": _cidr(raw.get("dst"), f"{where}.dst")}
    if raw.get("gw") not in (None, ""):
        route["gw"] = _ip(raw["gw"], f"{where}.gw")
    for key in _ROUTE_INT_FIELDS:
        if raw.get(key) is not None:
            route[key] = _integer(raw[key], f"{where}.{key}")
    return route


def _dns(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    raw = _object(value, "dns")
    dns: dict[str, Any] = {}
    for key in ("nameservers", "search", "options"):
        items = [_string(v, f"dns.{key}[]") for v in _array(raw.get(key), f"dns.{key}")]
        if items:
            dns[key] = items
    domain = raw.get("domain")
    if domain not in (None, ""):
        dns["domain"] = _string(domain, "dns.domain")
    return dns


def _legacy_parts(result: Mapping[str, Any]) -> _Parts:
    parts = _Parts(interfaces=[], ips=[], routes=[], dns=_dns(result.get("dns")))
    for block_name, family in (("ip4", "4"), ("ip6", "6")):
        if result.get(block_name) is None:
            continue
        block = _object(result[block_name], block_name)
        address = _cidr(block.get("ip"), f"{block_name}.ip")
        if _family(address) != family:
            raise _fail(f"result field {block_name}.ip holds an IPv{_family(address)} address")
        ip: dict[str, Any] = {"address": address}
        if block.get("gateway") not in (None, ""):
            ip["gateway"] = _ip(block["gateway"], f"{block_name}.gateway")
        parts.ips.append(ip)
        for i, route in enumerate(_array(block.get("routes"), f"{block_name}.routes")):
            parts.routes.append(_route(route, f"{block_name}.routes[{i}]"))
    return parts


def _interface(value: object, where: str) -> dict[str, Any]:
    raw = _object(value, where)
    iface: dict[str, Any] = {"name": _string(raw.get("name"), f"{where}.name")}
    for key in _IFACE_FIELDS_1X[1:]:
        if raw.get(key) in (None, ""):
            continue
        check = _integer if key == "mtu" else _string
        iface[key] = check(raw[key], f"{where}.{key}")
    return iface


def _current_parts(result: Mapping[str, Any], version: str) -> _Parts:
    interfaces = [
        _interface(v, f"interfaces[{i}]")
        for i, v in enumerate(_array(result.get("interfaces"), "interfaces"))
    ]
    ips: list[dict[str, Any]] = []
    for i, value in enumerate(_array(result.get("ips"), "ips")):
        where = f"ips[{i}]"
        raw = _object(value, where)
        ip: dict[str, Any] = {}
        if raw.get("interface") is not None:
            index = _integer(raw["interface"], f"{where}.interface")
            if not 0 <= index < len(interfaces):
                raise _fail(
                    f"result field {where}.interface = {index} points at no interface",
                    f"the result lists {len(interfaces)} interface(s)",
                )
            ip["interface"] = index
        ip["address"] = _cidr(raw.get("address"), f"{where}.address")
        if raw.get("gateway") not in (None, ""):
            ip["gateway"] = _ip(raw["gateway"], f"{where}.gateway")
        claimed = raw.get("version")
        if versions.has_ip_version_field(version) and claimed not in (None, ""):
            if claimed not in ("4", "6"):
                raise _fail(f'result field {where}.version must be "4" or "6", not {claimed!r}')
            if claimed != _family(ip["address"]):
                raise _fail(f"result field {where}.version is {claimed} for {ip['address']}")
        ips.append(ip)
    routes = [
        _route(v, f"routes[{i}]") for i, v in enumerate(_array(result.get("routes"), "routes"))
    ]
    return _Parts(interfaces=interfaces, ips=ips, routes=routes, dns=_dns(result.get("dns")))


def _parts(result: object) -> _Parts:
    mapping = _object(result, "(result)")
    version = result_version(mapping)
    if versions.is_legacy_result(version):
        return _legacy_parts(mapping)
    return _current_parts(mapping, version)


def _render(parts: _Parts, to_version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": to_version}
    with_family = versions.has_ip_version_field(to_version)
    fields = _IFACE_FIELDS_0X if with_family else _IFACE_FIELDS_1X
    if parts.interfaces:
        out["interfaces"] = [{k: i[k] for k in fields if k in i} for i in parts.interfaces]
    if parts.ips:
        rendered = []
        for ip in parts.ips:
            head = {"version": _family(ip["address"])} if with_family else {}
            rendered.append(head | ip)
        out["ips"] = rendered
    if parts.routes:
        out["routes"] = [dict(r) for r in parts.routes]
    if parts.dns:
        out["dns"] = {
            k: (list(v) if isinstance(v, list) else v)
            for k in ("nameservers", "domain", "search", "options")
            if (v := parts.dns.get(k))
        }
    return out


def convert(result: Mapping[str, Any], to_version: str) -> dict[str, Any]:
    """`result` (any version 0.1.0-1.1.0, read from its cniVersion) rendered in `to_version`."""
    versions.require_supported(to_version)
    return _render(_parts(result), to_version)


def _union(into: list[str], items: Sequence[str]) -> None:
    for item in items:
        if item not in into:
            into.append(item)


def merge(results: Sequence[Mapping[str, Any]], *, to_version: str) -> dict[str, Any]:
    """One result for several networks, in request order (the first network first).

    Interfaces are appended in order and each `ips[].interface` shifted by the number of
    interfaces before its result; routes are concatenated without exact duplicates; DNS lists
    are unions in first-seen order and `domain` is the first non-empty one.
    """
    versions.require_supported(to_version)
    merged = _Parts(interfaces=[], ips=[], routes=[], dns={})
    for position, result in enumerate(results):
        try:
            parts = _parts(result)
        except errors.CniError as exc:
            raise errors.CniError(
                exc.code, f"result {position + 1} of {len(results)}: {exc.msg}", exc.details
            ) from exc
        offset = len(merged.interfaces)
        merged.interfaces.extend(parts.interfaces)
        for ip in parts.ips:
            shifted = dict(ip)
            if "interface" in shifted:
                shifted["interface"] += offset
            merged.ips.append(shifted)
        for route in parts.routes:
            if route not in merged.routes:
                merged.routes.append(route)
        for key in ("nameservers", "search", "options"):
            if key in parts.dns:
                _union(merged.dns.setdefault(key, []), parts.dns[key])
        if "domain" in parts.dns and "domain" not in merged.dns:
            merged.dns["domain"] = parts.dns["domain"]
    return _render(merged, to_version)
