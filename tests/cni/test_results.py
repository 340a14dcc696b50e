"""Result conversion between every version pair, and the merge of several networks' results."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from genie.cni import errors, results, versions

STATIC = Path("/usr/lib/cni/static")

# One network's result in the normalized 1.x shape; `express` writes it in any version.
RICH: dict[str, Any] = {
    "interfaces": [
        {"name": "gbr-a", "mac": "0a:58:0a:01:00:01"},
        {"name": "veth1234", "mac": "0a:58:0a:01:00:02"},
        {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/p1"},
    ],
    "ips": [
        {"interface": 2, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
        {"interface": 2, "address": "fd00:1::5/64"},
        {"address": "10.1.9.9/32"},
    ],
    "routes": [
        {"dst": "10.1.0.0/16", "gw": "10.1.0.1"},
        {"dst": "fd00::/16"},
    ],
    "dns": {"nameservers": ["10.1.0.1"], "domain": "a.local", "search": ["a.local"]},
}
# What the legacy 0.1.0/0.2.0 form can carry: one v4, one v6, no interfaces.
SIMPLE: dict[str, Any] = {
    "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}, {"address": "fd00:1::5/64"}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "fd00::/16"}],
    "dns": {"nameservers": ["10.1.0.1"], "options": ["ndots:2"]},
}


def family(address: str) -> str:
    return "6" if ":" in address else "4"


def express(content: dict[str, Any], version: str) -> dict[str, Any]:
    """`content` written the way a plugin of `version` prints it (hand-made, independent)."""
    if version in ("0.1.0", "0.2.0"):
        out: dict[str, Any] = {"cniVersion": version}
        for ip in content["ips"]:
            key = "ip" + family(ip["address"])
            block = {"ip": ip["address"]}
            if "gateway" in ip:
                block["gateway"] = ip["gateway"]
            routes = [r for r in content["routes"] if family(r["dst"]) == family(ip["address"])]
            if routes:
                block["routes"] = routes
            out[key] = block
        out["dns"] = content["dns"]
        return copy.deepcopy(out)
    out = {"cniVersion": version}
    if content.get("interfaces"):
        out["interfaces"] = content["interfaces"]
    if version.startswith("0."):
        out["ips"] = [{"version": family(ip["address"])} | ip for ip in content["ips"]]
    else:
        out["ips"] = content["ips"]
    out["routes"] = content["routes"]
    out["dns"] = content["dns"]
    return copy.deepcopy(out)


@pytest.mark.parametrize("to_version", versions.SUPPORTED)
@pytest.mark.parametrize("from_version", versions.KNOWN_RESULT_VERSIONS)
def test_convert_simple_every_pair(from_version: str, to_version: str) -> None:
    got = results.convert(express(SIMPLE, from_version), to_version)
    assert got == express(SIMPLE, to_version)
    assert json.loads(json.dumps(got)) == got


@pytest.mark.parametrize("to_version", versions.SUPPORTED)
@pytest.mark.parametrize("from_version", versions.SUPPORTED)
def test_convert_rich_every_pair(from_version: str, to_version: str) -> None:
    assert results.convert(express(RICH, from_version), to_version) == express(RICH, to_version)


def test_convert_does_not_mutate_input() -> None:
    source = express(RICH, "0.4.0")
    before = copy.deepcopy(source)
    results.convert(source, "1.1.0")
    assert source == before


def test_1x_interface_fields_kept_between_1x_dropped_for_0x() -> None:
    source: dict[str, Any] = {
        "cniVersion": "1.1.0",
        "interfaces": [
            {
                "name": "eth0",
                "mac": "aa:bb:cc:dd:ee:ff",
                "mtu": 1400,
                "sandbox": "/x",
                "socketPath": "/run/vhost.sock",
                "pciID": "0000:00:1f.6",
                "metadata": {"k": "v"},
            },
        ],
        "ips": [{"interface": 0, "address": "10.0.0.2/24"}],
        "routes": [
            {
                "dst": "0.0.0.0/0",
                "gw": "10.0.0.1",
                "mtu": 1400,
                "advmss": 1360,
                "priority": 10,
                "table": 100,
                "scope": 0,
            }
        ],
    }
    one = results.convert(source, "1.0.0")
    assert one["interfaces"][0] == {
        k: v for k, v in source["interfaces"][0].items() if k != "metadata"
    }
    assert one["routes"] == source["routes"]
    old = results.convert(source, "0.4.0")
    assert old["interfaces"] == [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": "/x"}]
    assert old["ips"] == [{"version": "4", "interface": 0, "address": "10.0.0.2/24"}]
    assert old["routes"] == source["routes"]  # libcni keeps the route extras in 0.4.0 too


def test_empty_parts_are_omitted() -> None:
    assert results.convert({"cniVersion": "1.0.0"}, "0.3.1") == {"cniVersion": "0.3.1"}
    got = results.convert({"cniVersion": "1.0.0", "ips": [], "dns": {}, "routes": []}, "1.1.0")
    assert got == {"cniVersion": "1.1.0"}


def test_legacy_without_cni_version_is_0_1_0() -> None:
    got = results.convert({"ip4": {"ip": "10.2.0.3/16"}}, "1.0.0")
    assert got == {"cniVersion": "1.0.0", "ips": [{"address": "10.2.0.3/16"}]}


def _run_static(version: str) -> dict[str, Any]:
    conf = {
        "cniVersion": version,
        "name": "t",
        "type": "static",
        "ipam": {
            "type": "static",
            "addresses": [
                {"address": "10.9.0.5/24", "gateway": "10.9.0.1"},
                {"address": "fd00::5/64"},
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.9.0.1"}, {"dst": "fd00:1::/64"}],
            "dns": {"nameservers": ["10.9.0.1"], "domain": "x.local", "search": ["x.local"]},
        },
    }
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/proc/self/ns/net",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/usr/lib/cni",
    }
    done = subprocess.run(
        [str(STATIC)],
        input=json.dumps(conf).encode(),
        env=env,
        capture_output=True,
        timeout=30,
        check=True,
    )
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


@pytest.mark.skipif(not STATIC.exists(), reason="Debian containernetworking-plugins missing")
def test_real_plugin_outputs_convert_like_libcni() -> None:
    """The real static IPAM plugin printing each version is the reference for every pair."""
    real = {v: _run_static(v) for v in ("0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0")}
    assert "ip4" in real["0.2.0"]
    real["1.1.0"] = real["1.0.0"] | {"cniVersion": "1.1.0"}
    for source in real.values():
        for target in versions.SUPPORTED:
            assert results.convert(source, target) == real[target], (source, target)


@pytest.mark.parametrize(
    ("result", "code", "words"),
    [
        ({"cniVersion": "0.5.0"}, errors.INCOMPATIBLE_VERSION, "0.5.0"),
        ({"cniVersion": 1}, errors.INCOMPATIBLE_VERSION, "cniVersion"),
        ({"ips": [{"address": "10.0.0.1/8"}]}, errors.DECODE_FAILURE, "no cniVersion"),
        ({"cniVersion": "1.0.0", "ips": {"a": 1}}, errors.DECODE_FAILURE, "ips"),
        (
            {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]},
            errors.DECODE_FAILURE,
            "ips[0].address",
        ),
        (
            {"cniVersion": "1.0.0", "ips": [{"address": "300.0.0.1/8"}]},
            errors.DECODE_FAILURE,
            "CIDR",
        ),
        (
            {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "gateway": "x"}]},
            errors.DECODE_FAILURE,
            "gateway",
        ),
        (
            {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "interface": 0}]},
            errors.DECODE_FAILURE,
            "points at no interface",
        ),
        (
            {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "a"}],
                "ips": [{"address": "10.0.0.1/8", "interface": True}],
            },
            errors.DECODE_FAILURE,
            "integer",
        ),
        (
            {"cniVersion": "0.4.0", "ips": [{"version": "6", "address": "10.0.0.1/8"}]},
            errors.DECODE_FAILURE,
            "version",
        ),
        (
            {"cniVersion": "1.0.0", "interfaces": [{"mac": "x"}]},
            errors.DECODE_FAILURE,
            "interfaces[0].name",
        ),
        (
            {"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]},
            errors.DECODE_FAILURE,
            "routes[0].dst",
        ),
        (
            {"cniVersion": "1.0.0", "dns": {"nameservers": "10.0.0.1"}},
            errors.DECODE_FAILURE,
            "dns.nameservers",
        ),
        ({"cniVersion": "0.2.0", "ip4": {"ip": "fd00::1/64"}}, errors.DECODE_FAILURE, "IPv6"),
        ([1, 2], errors.DECODE_FAILURE, "object"),
    ],
)
def test_convert_errors(result: Any, code: int, words: str) -> None:
    with pytest.raises(errors.CniError) as info:
        results.convert(result, "1.0.0")
    assert info.value.code == code
    assert words in info.value.msg


def test_convert_to_unsupported_version() -> None:
    with pytest.raises(errors.CniError) as info:
        results.convert(express(SIMPLE, "1.0.0"), "0.2.0")
    assert info.value.code == errors.INCOMPATIBLE_VERSION


def network(n: int, *, version: str = "1.0.0", dns: dict[str, Any] | None = None) -> dict[str, Any]:
    """The result of network number n: host bridge + veth + pod interface, one address."""
    content = {
        "interfaces": [
            {"name": f"gbr-{n}", "mac": f"0a:00:00:00:{n:02x}:01"},
            {"name": f"veth{n}", "mac": f"0a:00:00:00:{n:02x}:02"},
            {"name": f"eth{n}", "mac": f"0a:00:00:00:{n:02x}:03", "sandbox": "/run/netns/p"},
        ],
        "ips": [{"interface": 2, "address": f"10.{n}.0.5/24", "gateway": f"10.{n}.0.1"}],
        "routes": [{"dst": f"10.{n}.0.0/16", "gw": f"10.{n}.0.1"}, {"dst": "192.0.2.0/24"}],
        "dns": dns if dns is not None else {},
    }
    return express(content, version)


@pytest.mark.parametrize("count", [1, 2, 3, 4])
@pytest.mark.parametrize("to_version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_merge_shifts_interface_indexes(count: int, to_version: str) -> None:
    mixed = ["1.0.0", "0.4.0", "0.3.1", "1.1.0"]
    parts = [network(n, version=mixed[n]) for n in range(count)]
    merged = results.merge(parts, to_version=to_version)
    assert merged["cniVersion"] == to_version
    assert [i["name"] for i in merged["interfaces"]] == [
        name for n in range(count) for name in (f"gbr-{n}", f"veth{n}", f"eth{n}")
    ]
    assert [ip["address"] for ip in merged["ips"]] == [f"10.{n}.0.5/24" for n in range(count)]
    for n, ip in enumerate(merged["ips"]):
        assert ip["interface"] == 3 * n + 2
        assert merged["interfaces"][ip["interface"]]["name"] == f"eth{n}"
        assert ("version" in ip) is to_version.startswith("0.")
    # the shared 192.0.2.0/24 route appears once, after the first network's own route
    assert merged["routes"] == [
        {"dst": "10.0.0.0/16", "gw": "10.0.0.1"},
        {"dst": "192.0.2.0/24"},
    ] + [{"dst": f"10.{n}.0.0/16", "gw": f"10.{n}.0.1"} for n in range(1, count)]
    assert "dns" not in merged


def test_merge_of_one_equals_convert() -> None:
    single = network(0, version="0.4.0", dns={"nameservers": ["10.0.0.1"]})
    assert results.merge([single], to_version="1.1.0") == results.convert(single, "1.1.0")


def test_merge_ips_without_interface_stay_without() -> None:
    ipam_only = express(SIMPLE, "0.2.0")
    merged = results.merge([network(0), ipam_only, network(1)], to_version="1.0.0")
    assert [ip.get("interface") for ip in merged["ips"]] == [2, None, None, 5]


def test_merge_dns() -> None:
    parts = [
        network(0, dns={"nameservers": ["10.0.0.1"], "search": ["a.local"]}),
        network(
            1,
            dns={
                "nameservers": ["10.1.0.1", "10.0.0.1"],
                "domain": "b.local",
                "search": ["b.local", "a.local"],
                "options": ["ndots:5"],
            },
        ),
        network(2, dns={"domain": "c.local", "options": ["ndots:5", "edns0"]}),
        network(3, dns={}),
    ]
    merged = results.merge(parts, to_version="1.1.0")
    assert merged["dns"] == {
        "nameservers": ["10.0.0.1", "10.1.0.1"],
        "domain": "b.local",
        "search": ["a.local", "b.local"],
        "options": ["ndots:5", "edns0"],
    }


def test_merge_nothing() -> None:
    assert results.merge([], to_version="1.0.0") == {"cniVersion": "1.0.0"}


def test_merge_names_the_bad_result() -> None:
    with pytest.raises(errors.CniError) as info:
        results.merge([network(0), {"cniVersion": "7.0.0"}], to_version="1.0.0")
    assert info.value.code == errors.INCOMPATIBLE_VERSION
    assert info.value.msg.startswith("result 2 of 2:")
