"""The write-back annotations, from attachments recorded in a real event store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from genie.domain import events as ev
from genie.k8s import annotations as ann
from genie.networks import registry as reg
from genie.networks import selection
from genie.services import delegates, plan
from genie.store import recorder
from tests.k8s import writeback_kit as kit
from tests.support import cniconf
from tests.support import netns as nskit

pytestmark = pytest.mark.anyio
POD = ev.PodRef(namespace="tenant", name="web-0", uid="0b6c3f0e-1111-4222-8333-944445555666")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[recorder.EventStore]:
    async with await recorder.EventStore.open(tmp_path / "events.db") as opened:
        yield opened


async def test_every_address_of_every_interface_in_request_order(
    store: recorder.EventStore,
) -> None:
    att = await kit.attach(
        store,
        pod=POD,
        networks=[
            (
                "tenant-a",
                "eth0",
                kit.bridge_result("eth0", "10.211.0.7/24", mac="aa:00:00:00:00:01"),
            ),
            ("tenant-b", "eth1", kit.BRIDGE_RESULT),
            ("tenant-c", "eth2", kit.PTP_RESULT),
        ],
    )

    built = ann.build(att)

    assert set(built) == {ann.MULTI_IP_KEY, ann.NETWORK_STATUS_KEY}
    assert all(isinstance(v, str) for v in built.values())
    assert json.loads(built[ann.MULTI_IP_KEY]) == {
        "multi_entry": 4,
        "ips": {
            "ip1": {"ip": "10.211.0.7", "interface": "eth0"},
            "ip2": {"ip": "10.212.0.2", "interface": "eth1"},
            "ip3": {"ip": "fd00:212::2", "interface": "eth1"},
            "ip4": {"ip": "10.213.0.2", "interface": "eth2"},
        },
    }
    assert list(json.loads(built[ann.MULTI_IP_KEY])["ips"]) == ["ip1", "ip2", "ip3", "ip4"]
    assert json.loads(built[ann.NETWORK_STATUS_KEY]) == [
        {
            "name": "tenant-a",
            "interface": "eth0",
            "ips": ["10.211.0.7"],
            "mac": "aa:00:00:00:00:01",
            "default": True,
        },
        {
            "name": "tenant-b",
            "interface": "eth1",
            "ips": ["10.212.0.2", "fd00:212::2"],
            "mac": "32:b3:2e:1e:33:47",
            "default": False,
            "dns": {"nameservers": ["10.212.0.10"], "search": ["svc.local"]},
        },
        {
            "name": "tenant-c",
            "interface": "eth2",
            "ips": ["10.213.0.2"],
            "mac": "c2:30:99:9e:c2:e3",
            "default": False,
        },
    ]


async def test_interfaces_keep_cidrs_for_event_messages(store: recorder.EventStore) -> None:
    att = await kit.attach(store, pod=POD, networks=[("tenant-b", "eth1", kit.BRIDGE_RESULT)])

    (status,) = ann.interfaces(att)

    assert status == ann.InterfaceStatus(
        network="tenant-b",
        ifname="eth1",
        addresses=("10.212.0.2/24", "fd00:212::2/64"),
        mac="32:b3:2e:1e:33:47",
        dns={"nameservers": ["10.212.0.10"], "search": ["svc.local"]},
    )
    assert status.ips == ("10.212.0.2", "fd00:212::2")


async def test_legacy_result_without_interfaces(store: recorder.EventStore) -> None:
    legacy = {"cniVersion": "0.2.0", "ip4": {"ip": "10.44.0.9/16", "gateway": "10.44.0.1"}}
    att = await kit.attach(
        store,
        pod=POD,
        networks=[("old", "eth0", legacy), ("tenant-c", "net1", kit.PTP_RESULT)],
    )

    status = json.loads(ann.build(att)[ann.NETWORK_STATUS_KEY])
    prefs = json.loads(ann.build(att)[ann.MULTI_IP_KEY])

    assert status[0] == {"name": "old", "interface": "eth0", "ips": ["10.44.0.9"], "default": True}
    # ptp's sandbox interface is eth2 in the captured result; MAC found through `sandbox`
    assert status[1]["mac"] == "c2:30:99:9e:c2:e3"
    assert prefs["ips"]["ip1"] == {"ip": "10.44.0.9", "interface": "eth0"}
    assert prefs["multi_entry"] == 2


def test_addresses_on_host_side_interfaces_are_not_the_pods() -> None:
    result: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "veth0", "mac": "02:00:00:00:00:01"},
            {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/p"},
        ],
        "ips": [
            {"interface": 0, "address": "169.254.1.1/32"},
            {"interface": 1, "address": "10.1.0.5/24"},
            {"address": "10.2.0.5/24"},  # no interface index: the pod's
        ],
    }

    status = ann.interface_status(kit.planned(index=0, network="n", ifname="eth0"), result)

    assert status.addresses == ("10.1.0.5/24", "10.2.0.5/24")
    assert status.mac == "02:00:00:00:00:02"


def test_no_interfaces_gives_empty_documents() -> None:
    assert ann.multi_ip_preferences(()) == {"multi_entry": 0, "ips": {}}
    assert ann.network_status(()) == []


def test_merge_patch_sets_only_genie_keys_and_pins_the_uid() -> None:
    values = {ann.MULTI_IP_KEY: "{}", ann.NETWORK_STATUS_KEY: "[]"}

    assert ann.merge_patch(values, uid="u-1") == {"metadata": {"annotations": values, "uid": "u-1"}}
    assert ann.merge_patch(values) == {"metadata": {"annotations": values}}


@pytest.mark.netns
async def test_real_plugins_results_match_the_pod_netns(
    in_node_netns: str,
    pod_netns: str,
    networks: cniconf.NetworkFactory,
    cni_bin_dir: Path,
    store: recorder.EventStore,
) -> None:
    networks.bridge("tenant-a")
    networks.ptp("tenant-b")
    requests = [
        selection.NetworkRequest(name="tenant-a", namespace=None, ifname="eth0"),
        selection.NetworkRequest(name="tenant-b", namespace=None, ifname="eth1"),
    ]
    plans = plan.plan_delegates(
        requests, registry=reg.NetworkRegistry(networks.net_dir), pod=str(POD)
    )
    runner = delegates.DelegateRunner(cni_path=[cni_bin_dir], timeout=20)
    cid = kit.container_id()
    ns_path = nskit.netns_path(pod_netns)
    produced = [await runner.add(p, container_id=cid, netns=ns_path) for p in plans]
    try:
        att = await kit.attach(
            store,
            pod=POD,
            cid=cid,
            networks=[(p.network, p.ifname, r) for p, r in zip(plans, produced, strict=True)],
        )
        status = json.loads(ann.build(att)[ann.NETWORK_STATUS_KEY])
        macs = {name: mac for name, _, mac in nskit.links(pod_netns)}
        for entry in status:
            ifname = entry["interface"]
            assert entry["mac"] == macs[ifname]
            assert [a.split("/")[0] for a in nskit.addresses(pod_netns, ifname)] == entry["ips"]
        assert [e["name"] for e in status] == ["tenant-a", "tenant-b"]
        assert [e["default"] for e in status] == [True, False]
    finally:
        for p, r in zip(reversed(plans), reversed(produced), strict=True):
            await runner.delete(p, prev_result=r, container_id=cid, netns=ns_path)
