"""The CNI path end to end: installed shim -> real agent in a node netns -> real plugins.

Every assertion about networking reads the pod namespace itself (pyroute2) or pings across
it; every leak check reads host-local's own files.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genie.demo import runtime
from tests.e2e import node as e2e_node
from tests.e2e import truth

pytestmark = pytest.mark.netns


@pytest.fixture
def node(tmp_path: Path) -> Iterator[e2e_node.Node]:
    with e2e_node.running_node(tmp_path) as n:
        n.bridge("net-a", octet=231, default_route=True)
        n.bridge("net-b", octet=232)
        n.bridge("net-c", octet=233)
        n.bridge("net-d", octet=234)
        yield n


def _ok(reply: runtime.PluginReply) -> dict[str, Any]:
    assert reply.exit_code == 0, f"{reply.stdout} {reply.stderr}"
    result = reply.json()
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize(
    "networks", [["net-a"], ["net-a", "net-b"], ["net-a", "net-b", "net-c", "net-d"]]
)
def test_one_interface_and_address_per_network(node: e2e_node.Node, networks: list[str]) -> None:
    node.pod("multi", {"cni": ",".join(networks)})
    node.pod("peer", {"cni": ",".join(networks)})
    pod, peer = node.sandbox("multi"), node.sandbox("peer")
    result = _ok(node.cni("ADD", pod))
    _ok(node.cni("ADD", peer))

    expected_ifs = [f"eth{i}" for i in range(len(networks))]
    seen = truth.addresses(pod.netns)
    assert sorted(seen) == expected_ifs
    # the runtime got every address, in request order, with correct interface indices
    got = [(result["interfaces"][ip["interface"]]["name"], ip["address"]) for ip in result["ips"]]
    assert [ifname for ifname, _ in got] == expected_ifs
    for ifname, cidr in got:
        assert seen[ifname] == [cidr]
    for i, net in enumerate(networks):
        assert seen[f"eth{i}"][0].startswith(f"10.{231 + i}.0."), (net, seen)
    # reachable on every network
    for cidrs in truth.addresses(peer.netns).values():
        assert truth.ping(pod.netns, cidrs[0].split("/")[0])
    assert len(node.allocations()) == len(networks)

    for sandbox in (pod, peer):
        _ok_empty(node.cni("DEL", sandbox))
    assert truth.addresses(pod.netns) == {}
    assert node.allocations() == {}
    assert node.state() == []


def _ok_empty(reply: runtime.PluginReply) -> None:
    assert reply.exit_code == 0, f"{reply.stdout} {reply.stderr}"


def test_multus_syntax_default_network_first(node: e2e_node.Node) -> None:
    node.pod("m", {"k8s.v1.cni.cncf.io/networks": "net-b,net-c@data"})
    sandbox = node.sandbox("m")
    result = _ok(node.cni("ADD", sandbox))
    seen = truth.addresses(sandbox.netns)
    assert sorted(seen) == ["data", "eth0", "net1"]
    assert seen["eth0"][0].startswith("10.231.")  # the configured default network
    assert seen["net1"][0].startswith("10.232.")
    assert seen["data"][0].startswith("10.233.")
    assert [i["name"] for i in result["interfaces"] if i.get("sandbox")] == [
        "eth0",
        "net1",
        "data",
    ]
    _ok_empty(node.cni("DEL", sandbox))
    assert node.allocations() == {}


def test_no_annotation_gets_the_default_network(node: e2e_node.Node) -> None:
    node.pod("plain")
    sandbox = node.sandbox("plain")
    _ok(node.cni("ADD", sandbox))
    assert list(truth.addresses(sandbox.netns)) == ["eth0"]
    _ok_empty(node.cni("DEL", sandbox))


def test_failed_delegate_rolls_back_everything(node: e2e_node.Node) -> None:
    # a /30 range has exactly one usable address besides the gateway: the 2nd pod cannot get one
    conf = node.bridge("tiny", octet=235)
    conf["ipam"]["ranges"] = [[{"subnet": "10.235.0.0/30", "gateway": "10.235.0.1"}]]
    node.write_network("20-tiny.conf", conf)
    node.pod("first", {"cni": "net-a,tiny"})
    node.pod("second", {"cni": "net-a,net-b,tiny"})
    first, second = node.sandbox("first"), node.sandbox("second")
    _ok(node.cni("ADD", first))
    before = node.allocations()

    reply = node.cni("ADD", second)
    assert reply.exit_code != 0
    err = reply.json()
    assert "default/second" in err["msg"] and "tiny" in err["msg"], err
    assert "rolled back" in err["msg"]
    # the namespace holds nothing, host-local holds nothing for it, the log says rolled back
    assert truth.links(second.netns) == ["lo"]
    assert node.allocations() == before
    assert [a["container"] for a in node.state()] == [first.container_id]
    events = node.genie(
        "events", "--db", str(node.db), "--container", second.container_id, "--json"
    ).stdout
    kinds = [json.loads(line)["event"] for line in events.splitlines()]
    assert kinds[0] == "AddRequested" and kinds[-1] == "AddRolledBack", kinds
    assert "DelegateFailed" in kinds
    # kubelet DELs after a failed ADD: that must succeed too
    _ok_empty(node.cni("DEL", second))
    _ok_empty(node.cni("DEL", first))
    assert node.allocations() == {}


def test_del_twice_and_del_of_unknown_container(node: e2e_node.Node) -> None:
    node.pod("twice", {"cni": "net-a,net-b"})
    sandbox = node.sandbox("twice")
    _ok(node.cni("ADD", sandbox))
    _ok_empty(node.cni("DEL", sandbox))
    _ok_empty(node.cni("DEL", sandbox))
    stranger = node.sandbox("nobody")
    _ok_empty(node.cni("DEL", stranger))
    assert node.allocations() == {}


def test_del_works_after_the_network_file_is_gone(node: e2e_node.Node) -> None:
    node.pod("orphan", {"cni": "net-a,net-b"})
    sandbox = node.sandbox("orphan")
    _ok(node.cni("ADD", sandbox))
    for conf in node.net_dir.iterdir():
        conf.unlink()
    (node.pods_dir / "default-orphan.yaml").unlink()
    _ok_empty(node.cni("DEL", sandbox))
    assert truth.addresses(sandbox.netns) == {}
    assert node.allocations() == {}


def test_check_passes_then_fails_when_an_address_disappears(node: e2e_node.Node) -> None:
    node.pod("checked", {"cni": "net-a,net-b"})
    sandbox = node.sandbox("checked")
    result = _ok(node.cni("ADD", sandbox))
    conf = runtime.plugin_config(node.conflist)
    conf["prevResult"] = result
    _ok_empty(node.cni("CHECK", sandbox, config=conf))
    cidr = truth.addresses(sandbox.netns)["eth1"][0]
    subprocess.run(
        ["ip", "-n", truth.ns_name(sandbox.netns), "addr", "del", cidr, "dev", "eth1"], check=True
    )
    reply = node.cni("CHECK", sandbox, config=conf)
    assert reply.exit_code != 0
    assert "net-b" in reply.json()["msg"]
    _ok_empty(node.cni("DEL", sandbox))
    assert node.allocations() == {}


def test_gc_releases_attachments_not_listed_as_valid(node: e2e_node.Node) -> None:
    node.pod("keep", {"cni": "net-a,net-b"})
    node.pod("drop", {"cni": "net-a,net-b"})
    keep, drop = node.sandbox("keep"), node.sandbox("drop")
    _ok(node.cni("ADD", keep))
    _ok(node.cni("ADD", drop))
    conf = runtime.plugin_config(node.conflist, cni_version="1.1.0")
    conf["cni.dev/valid-attachments"] = [{"containerID": keep.container_id, "ifname": "eth0"}]
    _ok_empty(node.cni("GC", None, config=conf))
    assert [a["container"] for a in node.state()] == [keep.container_id]
    assert truth.addresses(drop.netns) == {}
    assert sum(len(ips) for ips in node.allocations().values()) == 2
    events = node.genie(
        "events", "--db", str(node.db), "--container", drop.container_id, "--json"
    ).stdout
    assert json.loads(events.splitlines()[-1])["event"] == "Released"
    _ok_empty(node.cni("DEL", keep))
    assert node.allocations() == {}


def test_status_reports_ready(node: e2e_node.Node) -> None:
    conf = runtime.plugin_config(node.conflist, cni_version="1.1.0")
    _ok_empty(node.cni("STATUS", None, config=conf))


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_result_in_the_version_the_runtime_asked_for(node: e2e_node.Node, version: str) -> None:
    node.pod("v", {"cni": "net-a,net-b"})
    sandbox = node.sandbox("v")
    result = _ok(node.cni("ADD", sandbox, cni_version=version))
    assert result["cniVersion"] == version
    ips = result["ips"]
    assert isinstance(ips, list) and len(ips) == 2
    if version.startswith("0."):
        assert all(ip["version"] == "4" for ip in ips)
    else:
        assert all("version" not in ip for ip in ips)
    _ok_empty(node.cni("DEL", sandbox, cni_version=version))


@pytest.mark.parametrize(
    ("annotations", "code", "needle"),
    [
        ({"cni": "net-a,nope"}, 7, "nope"),
        ({"cni": "net-a,,net-b"}, 7, "default/bad"),
        ({"cni": "net-a@eth0,net-b@eth0"}, 7, "eth0"),
        ({"k8s.v1.cni.cncf.io/networks": '[{"name": 5}]'}, 7, "default/bad"),
    ],
)
def test_bad_annotations_are_config_errors_and_change_nothing(
    node: e2e_node.Node, annotations: dict[str, str], code: int, needle: str
) -> None:
    node.pod("bad", annotations)
    sandbox = node.sandbox("bad")
    reply = node.cni("ADD", sandbox)
    assert reply.exit_code == 1
    err = reply.json()
    assert err["code"] == code and needle in err["msg"], err
    assert truth.links(sandbox.netns) == ["lo"]
    assert node.state() == []
    assert node.allocations() == {}
    assert "default/bad" in node.agent_log()


def test_runtime_errors_have_spec_codes(node: e2e_node.Node) -> None:
    node.pod("p", {"cni": "net-a"})
    sandbox = node.sandbox("p")
    gone = runtime.Sandbox(
        container_id=sandbox.container_id, netns="/run/netns/does-not-exist", name="p"
    )
    assert node.cni("ADD", gone).json()["code"] == 4
    conf = runtime.plugin_config(node.conflist)
    conf["cniVersion"] = "9.9.9"
    assert node.cni("ADD", sandbox, config=conf).json()["code"] == 1
    assert (
        node.cni("ADD", runtime.Sandbox(container_id="../etc", netns=sandbox.netns)).json()["code"]
        == 4
    )
    assert node.state() == []


def test_agent_down_is_try_again_later_for_add_and_del(node: e2e_node.Node) -> None:
    node.pod("p", {"cni": "net-a"})
    sandbox = node.sandbox("p")
    node.stop_agent()
    for command in ("ADD", "DEL"):
        reply = node.cni(command, sandbox)
        assert reply.exit_code == 1
        err = reply.json()
        assert err["code"] == 11 and str(node.socket) in err["msg"], err
