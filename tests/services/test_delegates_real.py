"""DelegateRunner with the real reference plugins in real namespaces, run from a node netns."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import anyio
import pytest

from genie.cni import errors
from genie.domain import events as ev
from genie.networks import registry as reg
from genie.networks import selection
from genie.services import delegates, plan
from tests.support import cniconf
from tests.support import netns as nskit

pytestmark = [pytest.mark.anyio, pytest.mark.netns]


def _plans(
    net_dir: Path, *names_ifnames: tuple[str, str], ips: tuple[str, ...] = ()
) -> tuple[ev.PlannedDelegate, ...]:
    requests = [
        selection.NetworkRequest(name=n, namespace=None, ifname=i, ips=ips)
        for n, i in names_ifnames
    ]
    return plan.plan_delegates(requests, registry=reg.NetworkRegistry(net_dir), pod="ns/pod")


def _cid() -> str:
    return secrets.token_hex(16)


def _runner(cni_bin_dir: Path) -> delegates.DelegateRunner:
    return delegates.DelegateRunner(cni_path=[cni_bin_dir], timeout=20)


async def test_bridge_add_check_del(
    in_node_netns: str,
    pod_netns: str,
    networks: cniconf.NetworkFactory,
    cni_bin_dir: Path,
) -> None:
    networks.bridge("tenant-a")
    (planned,) = _plans(networks.net_dir, ("tenant-a", "eth0"))
    runner = _runner(cni_bin_dir)
    cid = _cid()
    ns_path = nskit.netns_path(pod_netns)

    result = await runner.add(planned, container_id=cid, netns=ns_path)

    assert result["cniVersion"] == "1.0.0"
    address = result["ips"][0]["address"]
    assert address.startswith("10.213.1.")
    assert ("eth0", "veth") in {(n, k) for n, k, _ in nskit.links(pod_netns)}
    assert nskit.addresses(pod_netns, "eth0") == [address]
    # the bridge was made in the node netns, where the plugin ran
    bridge = planned.plugins[0]["bridge"]
    assert (bridge, "bridge") in {(n, k) for n, k, _ in nskit.links(in_node_netns)}
    assert cniconf.host_local_allocations(networks.data_dir) == {
        "tenant-a": [address.split("/")[0]]
    }

    await runner.check(planned, prev_result=result, container_id=cid, netns=ns_path)
    await runner.delete(planned, prev_result=result, container_id=cid, netns=ns_path)

    assert "eth0" not in nskit.link_names(pod_netns)
    assert cniconf.host_local_allocations(networks.data_dir) == {}
    # DEL is idempotent, and works without a netns
    await runner.delete(planned, prev_result=result, container_id=cid, netns="")


async def test_check_fails_when_interface_gone(
    in_node_netns: str, pod_netns: str, networks: cniconf.NetworkFactory, cni_bin_dir: Path
) -> None:
    networks.bridge("tenant-a")
    (planned,) = _plans(networks.net_dir, ("tenant-a", "eth0"))
    runner = _runner(cni_bin_dir)
    cid, ns_path = _cid(), nskit.netns_path(pod_netns)
    result = await runner.add(planned, container_id=cid, netns=ns_path)
    nskit.ip("link", "del", "eth0", netns=pod_netns)
    with pytest.raises(errors.CniError) as info:
        await runner.check(planned, prev_result=result, container_id=cid, netns=ns_path)
    assert info.value.msg.startswith("tenant-a: ")
    await runner.delete(planned, prev_result=result, container_id=cid, netns=ns_path)
    assert cniconf.host_local_allocations(networks.data_dir) == {}


async def test_tuning_chained_after_bridge_gets_prev_result(
    in_node_netns: str, pod_netns: str, networks: cniconf.NetworkFactory, cni_bin_dir: Path
) -> None:
    mac = "c2:00:00:12:34:56"
    networks.bridge("chained", chain=[{"type": "tuning", "mac": mac}])
    (planned,) = _plans(networks.net_dir, ("chained", "eth0"))
    assert [p["type"] for p in planned.plugins] == ["bridge", "tuning"]
    runner = _runner(cni_bin_dir)
    cid, ns_path = _cid(), nskit.netns_path(pod_netns)

    # tuning refuses to run without prevResult: success proves the chain passed it
    result = await runner.add(planned, container_id=cid, netns=ns_path)

    assert {(n, m) for n, _, m in nskit.links(pod_netns)} >= {("eth0", mac)}
    sandbox = [i for i in result["interfaces"] if i.get("sandbox")]
    assert sandbox[0]["mac"] == mac
    await runner.check(planned, prev_result=result, container_id=cid, netns=ns_path)
    await runner.delete(planned, prev_result=result, container_id=cid, netns=ns_path)
    assert "eth0" not in nskit.link_names(pod_netns)
    assert cniconf.host_local_allocations(networks.data_dir) == {}


async def test_macvlan_on_veth_master(
    in_node_netns: str, pod_netns: str, networks: cniconf.NetworkFactory, cni_bin_dir: Path
) -> None:
    master, _peer = nskit.veth_pair(in_node_netns)
    networks.macvlan("mv", master=master)
    (planned,) = _plans(networks.net_dir, ("mv", "eth0"))
    runner = _runner(cni_bin_dir)
    cid, ns_path = _cid(), nskit.netns_path(pod_netns)

    result = await runner.add(planned, container_id=cid, netns=ns_path)

    assert ("eth0", "macvlan") in {(n, k) for n, k, _ in nskit.links(pod_netns)}
    assert nskit.addresses(pod_netns, "eth0") == [result["ips"][0]["address"]]
    await runner.check(planned, prev_result=result, container_id=cid, netns=ns_path)
    await runner.delete(planned, prev_result=result, container_id=cid, netns=ns_path)
    assert "eth0" not in nskit.link_names(pod_netns)
    assert cniconf.host_local_allocations(networks.data_dir) == {}


async def test_ptp_reaches_its_gateway(
    in_node_netns: str, pod_netns: str, networks: cniconf.NetworkFactory, cni_bin_dir: Path
) -> None:
    networks.ptp("p2p")
    (planned,) = _plans(networks.net_dir, ("p2p", "eth0"))
    runner = _runner(cni_bin_dir)
    cid, ns_path = _cid(), nskit.netns_path(pod_netns)

    result = await runner.add(planned, container_id=cid, netns=ns_path)

    assert nskit.addresses(pod_netns, "eth0") == [result["ips"][0]["address"]]
    assert nskit.ping(pod_netns, result["ips"][0]["gateway"])
    await runner.delete(planned, prev_result=result, container_id=cid, netns=ns_path)
    assert "eth0" not in nskit.link_names(pod_netns)
    assert cniconf.host_local_allocations(networks.data_dir) == {}


async def test_pinned_ip_through_host_local(
    in_node_netns: str, pod_netns: str, networks: cniconf.NetworkFactory, cni_bin_dir: Path
) -> None:
    networks.bridge("pinned", capabilities={"ips": True})
    (planned,) = _plans(networks.net_dir, ("pinned", "eth0"), ips=("10.213.1.77/24",))
    runner = _runner(cni_bin_dir)
    cid, ns_path = _cid(), nskit.netns_path(pod_netns)
    result = await runner.add(planned, container_id=cid, netns=ns_path)
    assert result["ips"][0]["address"] == "10.213.1.77/24"
    assert nskit.addresses(pod_netns, "eth0") == ["10.213.1.77/24"]
    await runner.delete(planned, prev_result=result, container_id=cid, netns=ns_path)
    assert cniconf.host_local_allocations(networks.data_dir) == {}


@pytest.mark.parametrize("count", [2, 4])
async def test_several_networks_into_one_pod_concurrently(
    count: int,
    in_node_netns: str,
    pod_netns: str,
    networks: cniconf.NetworkFactory,
    cni_bin_dir: Path,
) -> None:
    names = [f"net-{i}" for i in range(count)]
    for name in names:
        networks.bridge(name)
    plans = _plans(networks.net_dir, *((n, f"eth{i}") for i, n in enumerate(names)))
    runner = _runner(cni_bin_dir)
    cid, ns_path = _cid(), nskit.netns_path(pod_netns)
    results: dict[int, dict[str, Any]] = {}

    async def add(p: ev.PlannedDelegate) -> None:
        results[p.index] = await runner.add(p, container_id=cid, netns=ns_path)

    async with anyio.create_task_group() as tg:
        for p in plans:
            tg.start_soon(add, p)

    for p in plans:
        assert nskit.addresses(pod_netns, p.ifname) == [results[p.index]["ips"][0]["address"]]
    assert sorted(cniconf.host_local_allocations(networks.data_dir)) == sorted(names)

    async def delete(p: ev.PlannedDelegate) -> None:
        await runner.delete(p, prev_result=results[p.index], container_id=cid, netns=ns_path)

    async with anyio.create_task_group() as tg:
        for p in plans:
            tg.start_soon(delete, p)

    assert not any(n.startswith("eth") for n in nskit.link_names(pod_netns))
    assert cniconf.host_local_allocations(networks.data_dir) == {}


async def test_two_pods_on_one_bridge_ping_each_other(
    in_node_netns: str,
    make_pod_netns: Any,
    networks: cniconf.NetworkFactory,
    cni_bin_dir: Path,
) -> None:
    networks.bridge("shared")
    (planned,) = _plans(networks.net_dir, ("shared", "eth0"))
    runner = _runner(cni_bin_dir)
    pods = [make_pod_netns(), make_pod_netns()]
    cids = [_cid(), _cid()]
    results = [
        await runner.add(planned, container_id=cid, netns=nskit.netns_path(ns))
        for cid, ns in zip(cids, pods, strict=True)
    ]
    a, b = (r["ips"][0]["address"] for r in results)
    assert a != b
    assert nskit.ping(pods[0], b)
    assert nskit.ping(pods[1], a)
    for cid, ns, result in zip(cids, pods, results, strict=True):
        await runner.delete(
            planned, prev_result=result, container_id=cid, netns=nskit.netns_path(ns)
        )
    assert not nskit.ping(pods[0], b, wait_s=1)
    assert cniconf.host_local_allocations(networks.data_dir) == {}
