"""plan_delegates: the exact stdin configs built from net-dir networks and pod requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from genie.cni import errors
from genie.domain import events as ev
from genie.networks import registry as reg
from genie.networks.selection import NetworkRequest as Req
from genie.services import plan

IPAM = {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}]]}


@pytest.fixture
def registry(tmp_path: Path) -> reg.NetworkRegistry:
    docs: dict[str, Any] = {
        "a.conf": {"cniVersion": "1.0.0", "name": "net-a", "type": "bridge", "ipam": IPAM},
        "b.conflist": {
            "cniVersion": "0.4.0",
            "name": "net-b",
            "parallel": False,
            "plugins": [
                {
                    "type": "macvlan",
                    "master": "eth0",
                    "capabilities": {"ips": True, "mac": True},
                    "ipam": {"type": "static"},
                    "args": {"cni": {"keep": 1}, "other": True},
                },
                {"type": "tuning", "capabilities": {"mac": True}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        "c.conf": {"cniVersion": "1.0.0", "name": "net-c", "type": "ptp", "runtimeConfig": 5},
    }
    for fname, doc in docs.items():
        (tmp_path / fname).write_text(json.dumps(doc))
    return reg.NetworkRegistry(tmp_path)


def test_plain_conf_gets_name_and_version(registry: reg.NetworkRegistry) -> None:
    (planned,) = plan.plan_delegates(
        [Req(name="net-a", namespace=None, ifname="eth0")], registry=registry, pod="ns/p"
    )
    assert planned == ev.PlannedDelegate(
        index=0,
        network="net-a",
        ifname="eth0",
        cni_version="1.0.0",
        plugins=({"cniVersion": "1.0.0", "name": "net-a", "type": "bridge", "ipam": IPAM},),
        cni_args=(),
        parallel=True,
    )


def test_chain_gets_network_name_version_and_parallel(registry: reg.NetworkRegistry) -> None:
    requests = [
        Req(name="net-a", namespace=None, ifname="eth0"),
        Req(name="net-b", namespace=None, ifname="eth1"),
    ]
    a, b = plan.plan_delegates(requests, registry=registry, pod="ns/p")
    assert (a.index, b.index) == (0, 1)
    assert b.parallel is False
    assert b.cni_version == "0.4.0"
    assert [p["type"] for p in b.plugins] == ["macvlan", "tuning", "portmap"]
    assert all(p["name"] == "net-b" and p["cniVersion"] == "0.4.0" for p in b.plugins)
    assert b.cni_args == ()
    assert "runtimeConfig" not in b.plugins[0]


def test_ips_and_mac_are_injected(registry: reg.NetworkRegistry) -> None:
    request = Req(
        name="net-b",
        namespace=None,
        ifname="net1",
        ips=("10.1.0.5/24", "fd00::5/64"),
        mac="c2:00:00:00:00:01",
        cni_args={"extra": "x"},
    )
    (planned,) = plan.plan_delegates([request], registry=registry, pod="ns/p")
    macvlan, tuning, portmap = planned.plugins
    assert macvlan["runtimeConfig"] == {"ips": ["10.1.0.5/24", "fd00::5/64"], "mac": request.mac}
    assert macvlan["args"] == {
        "cni": {"keep": 1, "extra": "x", "ips": ["10.1.0.5/24", "fd00::5/64"], "mac": request.mac},
        "other": True,
    }
    assert tuning["runtimeConfig"] == {"mac": request.mac}
    assert "runtimeConfig" not in portmap
    assert portmap["args"]["cni"]["ips"] == ["10.1.0.5/24", "fd00::5/64"]
    # several addresses: host-local cannot parse a list in CNI_ARGS IP, so only MAC goes there
    assert planned.cni_args == (("IgnoreUnknown", "true"), ("MAC", "c2:00:00:00:00:01"))


def test_single_ip_goes_to_cni_args(registry: reg.NetworkRegistry) -> None:
    request = Req(name="net-a", namespace=None, ifname="eth0", ips=("10.1.0.5",))
    (planned,) = plan.plan_delegates([request], registry=registry, pod="ns/p")
    assert planned.cni_args == (("IgnoreUnknown", "true"), ("IP", "10.1.0.5"))
    # bridge declares no capabilities: only the args convention carries the address
    assert "runtimeConfig" not in planned.plugins[0]
    assert planned.plugins[0]["args"] == {"cni": {"ips": ["10.1.0.5"]}}


def test_the_registry_config_is_not_mutated(registry: reg.NetworkRegistry) -> None:
    before = json.dumps(registry.get("net-b").plugins, sort_keys=True)
    request = Req(name="net-b", namespace=None, ifname="x", ips=("10.1.0.5/24",), mac=None)
    plan.plan_delegates([request], registry=registry, pod="ns/p")
    assert json.dumps(registry.get("net-b").plugins, sort_keys=True) == before


def test_unknown_network_is_error_7(registry: reg.NetworkRegistry) -> None:
    requests = [
        Req(name="net-a", namespace=None, ifname="eth0"),
        Req(name="nope", namespace=None, ifname="eth1"),
    ]
    with pytest.raises(errors.CniError) as info:
        plan.plan_delegates(requests, registry=registry, pod="ns/p")
    assert info.value.code == errors.INVALID_NETWORK_CONFIG
    assert "pod ns/p" in info.value.msg
    assert "'nope'" in info.value.msg


def test_non_object_runtime_config_with_pinning_is_error_7(
    registry: reg.NetworkRegistry, tmp_path: Path
) -> None:
    (tmp_path / "c.conf").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "net-c",
                "type": "ptp",
                "capabilities": {"mac": True},
                "runtimeConfig": 5,
            }
        )
    )
    request = Req(name="net-c", namespace=None, ifname="eth0", mac="c2:00:00:00:00:01")
    with pytest.raises(errors.CniError) as info:
        plan.plan_delegates([request], registry=registry, pod="ns/p")
    assert info.value.code == errors.INVALID_NETWORK_CONFIG
    assert "runtimeConfig is not an object" in info.value.msg


def test_prev_result_in_a_file_is_dropped(tmp_path: Path) -> None:
    doc = {"cniVersion": "1.0.0", "name": "n", "type": "bridge", "prevResult": {"x": 1}}
    (tmp_path / "n.conf").write_text(json.dumps(doc))
    (planned,) = plan.plan_delegates(
        [Req(name="n", namespace=None, ifname="eth0")],
        registry=reg.NetworkRegistry(tmp_path),
        pod="ns/p",
    )
    assert "prevResult" not in planned.plugins[0]
