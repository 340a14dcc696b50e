"""The whole agent against a real kube-apiserver: shim -> agent (node netns) -> real plugins,
pod cache from the watch, write-back of both annotations, Events, restarts and outages.

The agent runs with the ServiceAccount token bound to deploy/rbac.yaml, reaching the
apiserver through a loopback relay (tests/k8s/relay.py).
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from genie.demo import runtime
from genie.k8s import annotations as k8s_annotations
from tests.e2e import node as e2e_node
from tests.e2e import truth
from tests.k8s import apiserver, relay
from tests.k8s import kube as kube_mod

pytestmark = [pytest.mark.k8s, pytest.mark.netns, pytest.mark.anyio]

MULTI_IP = k8s_annotations.MULTI_IP_KEY
STATUS = k8s_annotations.NETWORK_STATUS_KEY


@contextlib.contextmanager
def cluster_node(
    root: Path,
    cluster: apiserver.Cluster,
    node_name: str,
    token: str,
    *,
    octet: int,
    metrics_port: int | None = None,
) -> Iterator[e2e_node.Node]:
    node = e2e_node.Node(root)
    try:
        node.prepare()
        with relay.agent_kubeconfig(
            node.name, cluster.port, root / "agent.kubeconfig", token=token
        ) as kubeconfig:
            node.bridge("net-a", octet=octet, default_route=True)
            node.bridge("net-b", octet=octet + 1)
            flags = ["--kubeconfig", str(kubeconfig), "--node-name", node_name]
            flags += ["--pod-gone-grace", "1"]
            if metrics_port is not None:
                flags += ["--metrics-addr", f"127.0.0.1:{metrics_port}"]
            node.start_agent(extra_args=tuple(flags))
            yield node
    finally:
        node.close()


@pytest.fixture
def token(cluster: apiserver.Cluster, agent_kubeconfig: Path) -> str:
    """A token of kube-system/genie, bound to exactly deploy/rbac.yaml."""
    return cluster.service_account_token(namespace="kube-system", name="genie")


@pytest.fixture
async def node(
    tmp_path: Path, cluster: apiserver.Cluster, node_name: str, token: str
) -> AsyncIterator[e2e_node.Node]:
    with cluster_node(tmp_path, cluster, node_name, token, octet=201) as n:
        yield n


async def _cni(node: e2e_node.Node, command: str, sandbox: runtime.Sandbox) -> dict[str, Any]:
    reply = await anyio.to_thread.run_sync(lambda: node.cni(command, sandbox))
    return {"exit": reply.exit_code, "json": reply.json(), "text": reply.stdout}


async def _pod(
    kube: kube_mod.Kube, namespace: str, name: str, node_name: str, networks: str
) -> str:
    pod = await kube.create_pod(
        namespace=namespace, name=name, node=node_name, annotations={"cni": networks}
    )
    uid: str = pod["metadata"]["uid"]
    return uid


def _sandbox(node: e2e_node.Node, namespace: str, name: str, uid: str) -> runtime.Sandbox:
    base = node.sandbox(name, namespace=namespace)
    return runtime.Sandbox(
        container_id=base.container_id, netns=base.netns, namespace=namespace, name=name, uid=uid
    )


async def test_added_pod_gets_both_annotations_and_events(
    node: e2e_node.Node, kube: kube_mod.Kube, namespace: str, node_name: str
) -> None:
    # created a moment before the ADD: the watch may not have delivered it yet
    uid = await _pod(kube, namespace, "web", node_name, "net-a,net-b")
    sandbox = _sandbox(node, namespace, "web", uid)
    added = await _cni(node, "ADD", sandbox)
    assert added["exit"] == 0, added["text"]
    seen = truth.addresses(sandbox.netns)
    ips = sorted(c.split("/")[0] for cidrs in seen.values() for c in cidrs)
    assert len(ips) == 2

    async def published() -> bool:
        return MULTI_IP in await kube.pod_annotations(namespace=namespace, name="web")

    await kube_mod.eventually(published, within=10, what="annotations written back")
    notes = await kube.pod_annotations(namespace=namespace, name="web")
    multi = json.loads(notes[MULTI_IP])
    assert multi["multi_entry"] == 2
    assert sorted(e["ip"] for e in multi["ips"].values()) == ips
    status = json.loads(notes[STATUS])
    assert [(s["name"], s["interface"], s.get("default", False)) for s in status] == [
        ("net-a", "eth0", True),
        ("net-b", "eth1", False),
    ]
    assert notes["cni"] == "net-a,net-b"  # the user's own annotation is untouched
    events = await kube.pod_events(namespace=namespace, name="web", uid=uid)
    added_msgs = [e["message"] for e in events if e["reason"] == "AddedInterface"]
    assert len(added_msgs) == 2 and any("eth1" in m and "net-b" in m for m in added_msgs)

    assert (await _cni(node, "DEL", sandbox))["exit"] == 0
    assert node.allocations() == {}


async def test_pod_recreated_with_a_new_uid(
    node: e2e_node.Node, kube: kube_mod.Kube, namespace: str, node_name: str
) -> None:
    old_uid = await _pod(kube, namespace, "again", node_name, "net-a")
    await kube.delete_pod(namespace=namespace, name="again")
    new_uid = await _pod(kube, namespace, "again", node_name, "net-a,net-b")
    stale = await _cni(node, "ADD", _sandbox(node, namespace, "again", old_uid))
    assert stale["exit"] == 1 and stale["json"]["code"] == 4, stale
    assert "does not exist" in stale["json"]["msg"]
    fresh = _sandbox(node, namespace, "again", new_uid)
    added = await _cni(node, "ADD", fresh)
    assert added["exit"] == 0, added["text"]
    assert sorted(truth.addresses(fresh.netns)) == ["eth0", "eth1"]
    assert (await _cni(node, "DEL", fresh))["exit"] == 0


async def test_apiserver_down_cached_pods_still_attach_and_annotations_catch_up(
    node: e2e_node.Node,
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
    cluster: apiserver.Cluster,
) -> None:
    uid = await _pod(kube, namespace, "cached", node_name, "net-a,net-b")
    await anyio.sleep(1.0)  # the watch delivers it to the cache
    sandbox = _sandbox(node, namespace, "cached", uid)
    async with cluster.apiserver_stopped():
        added = await _cni(node, "ADD", sandbox)
        assert added["exit"] == 0, added["text"]
        assert sorted(truth.addresses(sandbox.netns)) == ["eth0", "eth1"]
        unknown = await _cni(node, "ADD", _sandbox(node, namespace, "never-seen", "u-1"))
        assert unknown["json"]["code"] == 11, unknown  # pod unknown and API away: try later
        assert [a["annotation_pending"] for a in node.state()] == [True]

    async def published() -> bool:
        return MULTI_IP in await kube.pod_annotations(namespace=namespace, name="cached")

    await kube_mod.eventually(published, within=30, what="write-back after the outage")
    assert (await _cni(node, "DEL", sandbox))["exit"] == 0
    assert node.allocations() == {}


async def test_pending_write_back_survives_an_agent_restart(
    node: e2e_node.Node,
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
    cluster: apiserver.Cluster,
) -> None:
    uid = await _pod(kube, namespace, "later", node_name, "net-a")
    await anyio.sleep(1.0)
    sandbox = _sandbox(node, namespace, "later", uid)
    async with cluster.apiserver_stopped():
        assert (await _cni(node, "ADD", sandbox))["exit"] == 0
        assert node.stop_agent() == 0
    node.restart_agent()

    async def published() -> bool:
        return MULTI_IP in await kube.pod_annotations(namespace=namespace, name="later")

    await kube_mod.eventually(published, within=30, what="write-back after agent restart")
    assert [a["annotation_pending"] for a in node.state()] == [False]
    assert (await _cni(node, "DEL", sandbox))["exit"] == 0


async def test_pod_deleted_without_del_is_released(
    node: e2e_node.Node, kube: kube_mod.Kube, namespace: str, node_name: str
) -> None:
    uid = await _pod(kube, namespace, "lost", node_name, "net-a,net-b")
    sandbox = _sandbox(node, namespace, "lost", uid)
    assert (await _cni(node, "ADD", sandbox))["exit"] == 0
    assert len(node.allocations()) == 2
    await kube.delete_pod(namespace=namespace, name="lost")  # and the runtime never DELs
    await kube_mod.eventually(lambda: node.allocations() == {}, within=15, what="pod-gone release")
    assert node.state() == []
    events = node.genie(
        "events", "--db", str(node.db), "--container", sandbox.container_id, "--json"
    ).stdout.splitlines()
    last = json.loads(events[-1])
    assert last["event"] == "Released" and "pod-gone" in json.dumps(last)


async def test_attachments_gauge_follows_the_pod_gone_sweep(
    tmp_path: Path,
    cluster: apiserver.Cluster,
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
    token: str,
) -> None:
    port = _free_port()
    with cluster_node(tmp_path, cluster, node_name, token, octet=225, metrics_port=port) as node:
        uid = await _pod(kube, namespace, "swept", node_name, "net-a")
        assert (await _cni(node, "ADD", _sandbox(node, namespace, "swept", uid)))["exit"] == 0
        assert "genie_attachments 1.0" in await anyio.to_thread.run_sync(node.metrics, port)
        await kube.delete_pod(namespace=namespace, name="swept")  # and the runtime never DELs
        await kube_mod.eventually(lambda: node.state() == [], within=15, what="pod-gone release")
        # no CNI request since: the sweep's release alone moves the gauge
        assert "genie_attachments 0.0" in await anyio.to_thread.run_sync(node.metrics, port)


async def test_two_nodes_each_see_only_their_own_pods(
    tmp_path: Path, kube: kube_mod.Kube, namespace: str, cluster: apiserver.Cluster, token: str
) -> None:
    names = [kube_mod.unique("node"), kube_mod.unique("node")]
    ports = [_free_port(), _free_port()]
    with contextlib.ExitStack() as stack:
        nodes = [
            stack.enter_context(
                cluster_node(
                    tmp_path / f"n{i}",
                    cluster,
                    names[i],
                    token,
                    octet=205 + 2 * i,
                    metrics_port=ports[i],
                )
            )
            for i in range(2)
        ]
        uids = [await _pod(kube, namespace, f"on-{i}", names[i], "net-a") for i in range(2)]
        await anyio.sleep(1.0)
        for i, node in enumerate(nodes):
            sandbox = _sandbox(node, namespace, f"on-{i}", uids[i])
            assert (await _cni(node, "ADD", sandbox))["exit"] == 0
            assert (await _cni(node, "DEL", sandbox))["exit"] == 0
        for i, node in enumerate(nodes):
            text = await anyio.to_thread.run_sync(node.metrics, ports[i])
            assert "genie_pod_cache_pods 1.0" in text  # its own pod, not the other node's
            assert "genie_pod_api_gets_total 0.0" in text  # the ADD was served from the cache


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _nad_bridge(node: e2e_node.Node, name: str, *, octet: int) -> dict[str, Any]:
    """A bridge network's config as a NAD's spec.config (not in the node's net dir)."""
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "bridge",
        "bridge": f"gb{octet}",
        "ipam": {
            "type": "host-local",
            "dataDir": str(node.ipam_dir),
            "ranges": [[{"subnet": f"10.{octet}.0.0/24"}]],
        },
    }


async def test_multus_request_for_a_nad_applied_together_with_its_pod(
    node: e2e_node.Node, kube: kube_mod.Kube, namespace: str, node_name: str
) -> None:
    """`kubectl apply` of a NAD and its pod at once: the NAD may not be in the agent's
    watch cache when the ADD comes; the ADD waits briefly for it (then GETs it)."""
    config = _nad_bridge(node, "tenant-x", octet=207)
    await kube.create_nad(namespace=namespace, name="tenant-x", config=config)
    pod = await kube.create_pod(
        namespace=namespace,
        name="multus",
        node=node_name,
        annotations={"k8s.v1.cni.cncf.io/networks": "tenant-x"},
    )
    sandbox = _sandbox(node, namespace, "multus", pod["metadata"]["uid"])
    added = await _cni(node, "ADD", sandbox)
    assert added["exit"] == 0, added["text"]
    seen = truth.addresses(sandbox.netns)
    assert sorted(seen) == ["eth0", "net1"], seen  # the default network, then the NAD's
    assert seen["net1"][0].startswith("10.207.0."), seen
    assert seen["eth0"][0].startswith("10.201.0."), seen

    async def published() -> bool:
        return STATUS in await kube.pod_annotations(namespace=namespace, name="multus")

    await kube_mod.eventually(published, within=10, what="network-status written back")
    status = json.loads((await kube.pod_annotations(namespace=namespace, name="multus"))[STATUS])
    assert [(s["interface"], s["ips"]) for s in status] == [
        ("eth0", [seen["eth0"][0].split("/")[0]]),
        ("net1", [seen["net1"][0].split("/")[0]]),
    ]
    assert "tenant-x" in status[1]["name"]
    assert (await _cni(node, "DEL", sandbox))["exit"] == 0
    assert node.allocations() == {}


async def test_multus_request_for_a_missing_nad_is_a_config_error(
    node: e2e_node.Node, kube: kube_mod.Kube, namespace: str, node_name: str
) -> None:
    pod = await kube.create_pod(
        namespace=namespace,
        name="orphan",
        node=node_name,
        annotations={"k8s.v1.cni.cncf.io/networks": "no-such-nad"},
    )
    sandbox = _sandbox(node, namespace, "orphan", pod["metadata"]["uid"])
    state_before = await anyio.to_thread.run_sync(node.state)
    refused = await _cni(node, "ADD", sandbox)
    assert refused["exit"] == 1 and refused["json"]["code"] == 7, refused
    msg = refused["json"]["msg"]
    assert f"{namespace}/orphan" in msg and "no-such-nad" in msg, msg
    assert truth.links(sandbox.netns) == ["lo"]
    assert await anyio.to_thread.run_sync(node.state) == state_before
    assert node.allocations() == {}
