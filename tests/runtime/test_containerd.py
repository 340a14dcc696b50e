"""genie as the CNI of a real containerd 1.6, driven through CRI the way kubelet drives it.

Pods live in a real kube-apiserver; containerd runs in a node netns with genie's shim as its
only CNI config; the agent (in the same netns, RBAC token through a loopback relay) reads the
pods' `cni` annotations from its watch. RunPodSandbox must give each sandbox one interface per
requested network (checked inside the sandbox's own netns), PodSandboxStatus the first
network's address, the pod object both write-back annotations; StopPodSandbox and
RemovePodSandbox (two CNI DELs) must leave no address, link or attachment behind.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio.to_thread
import pytest
from cri_api.v1 import api_pb2

from genie.demo import netns as demo_netns
from genie.k8s import annotations as k8s_annotations
from tests.e2e import node as e2e_node
from tests.k8s import apiserver, relay
from tests.k8s import kube as kube_mod
from tests.runtime import containerd, cri, image
from tests.support import netns as nskit

pytestmark = [pytest.mark.k8s, pytest.mark.netns, pytest.mark.anyio]

MULTI_IP: Final = k8s_annotations.MULTI_IP_KEY
STATUS: Final = k8s_annotations.NETWORK_STATUS_KEY
OCTETS: Final = {"net-a": 221, "net-b": 222, "net-c": 223}  # 10.<octet>.0.0/24 each
BRIDGES: Final = {f"gb{octet}" for octet in OCTETS.values()}  # e2e_node.Node.bridge names
ONE: Final = ("net-a",)
THREE: Final = ("net-a", "net-b", "net-c")
METRICS_PORT: Final = 9310  # on the node netns' own loopback
REQUESTS: Final = re.compile(
    r'^genie_cni_requests_total\{command="(\w+)",outcome="([^"]+)"\} (\S+)$', re.MULTILINE
)
TOOLS: Final = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "gcc", "nsenter")

_T = TypeVar("_T")


@dataclasses.dataclass
class Pod:
    """One pod as the test follows it: in the API, in containerd, and in its netns."""

    name: str
    networks: tuple[str, ...]
    uid: str = ""
    sandbox_id: str = ""
    netns: str = ""
    run_seconds: float = 0.0
    stop_seconds: float = 0.0
    addresses: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def ips(self) -> list[str]:
        return [
            cidr.split("/")[0]
            for ifname in sorted(self.addresses)
            for cidr in self.addresses[ifname]
        ]


# -- fixtures -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pause_image() -> Iterator[image.Image]:
    """The pause image tarball, built once per session in a temp dir removed afterwards."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (Makefile APT_PACKAGES)")
    workdir = Path(tempfile.mkdtemp(prefix="genie-pause-"))
    try:
        yield image.build(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def root() -> Iterator[Path]:
    """The test's own temp root (short path: unix sockets live in it), removed at the end."""
    path = Path(tempfile.mkdtemp(prefix="genie-rt-"))
    try:
        yield path
    finally:
        containerd.detach_mounts_under(path)  # normally none left by now
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def token(cluster: apiserver.Cluster, agent_kubeconfig: Path) -> str:
    """A token of kube-system/genie, bound to exactly deploy/rbac.yaml."""
    return cluster.service_account_token(namespace="kube-system", name="genie")


@pytest.fixture
def node(
    root: Path, cluster: apiserver.Cluster, node_name: str, token: str
) -> Iterator[e2e_node.Node]:
    """Node netns with three bridge networks, the shim installed and the agent on the API."""
    node = e2e_node.Node(root / "node")
    try:
        node.prepare()
        for plugin in sorted(e2e_node.DEBIAN_CNI.iterdir()):  # containerd execs loopback too
            if not (node.bin_dir / plugin.name).exists():
                (node.bin_dir / plugin.name).symlink_to(plugin)
        for network, octet in OCTETS.items():
            node.bridge(network, octet=octet, default_route=network == "net-a")
        with relay.agent_kubeconfig(
            node.name, cluster.port, root / "agent.kubeconfig", token=token
        ) as kubeconfig:
            flags = ("--kubeconfig", str(kubeconfig), "--node-name", node_name)
            node.start_agent(extra_args=(*flags, "--metrics-addr", f"127.0.0.1:{METRICS_PORT}"))
            yield node
    finally:
        node.close()


@pytest.fixture
def runtime(
    root: Path, node: e2e_node.Node, pause_image: image.Image
) -> Iterator[containerd.Containerd]:
    """containerd in the node netns with genie as its CNI and the pause image imported.

    Torn down before the node: sandboxes left by a failed test are stopped and removed
    while the agent still answers their DELs.
    """
    with containerd.running(
        root / "containerd",
        netns=demo_netns.NETNS_DIR / node.name,
        cni_bin_dir=node.bin_dir,
        cni_conf_dir=node.conf_dir,
        sandbox_image=pause_image.name,
    ) as daemon:
        try:
            daemon.import_image(pause_image.tarball, pause_image.name)
            yield daemon
        finally:
            for error in daemon.remove_all_sandboxes():  # shown when the test failed
                print(f"teardown: {error}")


# -- what a sandbox netns holds ---------------------------------------------------------
def _in_netns(netns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command in a netns given by path (containerd's live outside /run/netns)."""
    return subprocess.run(
        ["nsenter", f"--net={netns}", *argv],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )


def netns_addresses(netns: str) -> dict[str, list[str]]:
    """Interface -> IPv4 CIDRs inside the netns, loopback left out."""
    out = _in_netns(netns, "ip", "-j", "-4", "addr", "show")
    assert out.returncode == 0, out.stderr
    return {
        link["ifname"]: [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])]
        for link in json.loads(out.stdout or "[]")
        if link["ifname"] != "lo"
    }


def netns_routes(netns: str) -> list[dict[str, Any]]:
    out = _in_netns(netns, "ip", "-j", "-4", "route", "show")
    assert out.returncode == 0, out.stderr
    routes: list[dict[str, Any]] = json.loads(out.stdout or "[]")
    return routes


def route_device(netns: str, address: str) -> str:
    out = _in_netns(netns, "ip", "-j", "route", "get", address)
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)[0]["dev"])


def ping(netns: str, address: str) -> bool:
    return _in_netns(netns, "ping", "-n", "-q", "-c", "1", "-W", "2", address).returncode == 0


def poll(check: Callable[[], _T], *, ok: Callable[[_T], bool], within: float, what: str) -> _T:
    """Call `check` until `ok(result)`; the last result in the AssertionError otherwise."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if ok(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {within} s: {what}; last seen: {result!r}")
        time.sleep(0.05)


# -- the runtime's side, in a worker thread -------------------------------------------
def run_sandboxes(daemon: containerd.Containerd, pods: list[Pod], *, namespace: str) -> None:
    """RunPodSandbox for each pod in turn (timed), then what containerd reports of it."""
    for pod in pods:
        config = cri.sandbox_config(
            name=pod.name,
            namespace=namespace,
            uid=pod.uid,
            log_directory=daemon.root / "pods" / pod.uid,
            cgroup_parent=daemon.cgroup_parent,
        )
        started = time.perf_counter()
        pod.sandbox_id = daemon.cri.run_pod_sandbox(config)
        pod.run_seconds = time.perf_counter() - started
        pod.netns = cri.netns_path(daemon.cri.pod_sandbox_status(pod.sandbox_id, verbose=True))
        pod.addresses = netns_addresses(pod.netns)


def check_sandbox(daemon: containerd.Containerd, pod: Pod, attachment: dict[str, Any]) -> None:
    """The sandbox netns, the CRI status and genie's state all tell the same story."""
    ifnames = [f"eth{i}" for i in range(len(pod.networks))]
    assert sorted(pod.addresses) == ifnames, (pod.name, pod.addresses)
    for ifname, network in zip(ifnames, pod.networks, strict=True):
        (cidr,) = pod.addresses[ifname]
        subnet = ipaddress.ip_network(f"10.{OCTETS[network]}.0.0/24")
        assert ipaddress.ip_interface(cidr).network == subnet, (pod.name, ifname, cidr)
    defaults = [r for r in netns_routes(pod.netns) if r["dst"] == "default"]
    assert [(r["dev"], r["gateway"]) for r in defaults] == [("eth0", "10.221.0.1")], defaults

    status = daemon.cri.pod_sandbox_status(pod.sandbox_id).status
    assert status.state == api_pb2.PodSandboxState.SANDBOX_READY
    assert (status.metadata.name, status.metadata.uid) == (pod.name, pod.uid)
    assert status.network.ip == pod.addresses["eth0"][0].split("/")[0]  # the first network's
    # containerd 1.6 reports eth0's other addresses only (none here): eth1.. are genie's
    assert [a.ip for a in status.network.additional_ips] == []

    assert attachment["phase"] == "attached"
    assert (attachment["pod_uid"], attachment["netns"]) == (pod.uid, pod.netns)
    assert [(i["network"], i["interface"], i["ips"]) for i in attachment["interfaces"]] == [
        (network, ifname, pod.addresses[ifname])
        for network, ifname in zip(pod.networks, ifnames, strict=True)
    ]


def remove_sandboxes(daemon: containerd.Containerd, node: e2e_node.Node, pods: list[Pod]) -> None:
    """Stop (CNI DEL) and remove (DEL again) each sandbox, as kubelet does."""
    for pod in pods:
        started = time.perf_counter()
        daemon.cri.stop_pod_sandbox(pod.sandbox_id)
        pod.stop_seconds = time.perf_counter() - started
        assert not Path(pod.netns).exists(), f"{pod.name}: netns kept after StopPodSandbox"
        assert pod.sandbox_id not in {a["container"] for a in node.state()}
        daemon.cri.remove_pod_sandbox(pod.sandbox_id)


def node_links(node: e2e_node.Node) -> set[str]:
    return nskit.link_names(node.name)


def cni_requests(node: e2e_node.Node) -> dict[tuple[str, str], float]:
    """The agent's request counter by (command, outcome), scraped inside the node netns."""
    text = node.metrics(METRICS_PORT)
    return {(cmd, outcome): float(n) for cmd, outcome, n in REQUESTS.findall(text)}


def timings(pods: list[Pod]) -> str:
    """Median RunPodSandbox / StopPodSandbox times, 1 network vs 3 (for the log)."""
    line = []
    for count in (1, 3):
        run = [p.run_seconds * 1000 for p in pods if len(p.networks) == count]
        stop = [p.stop_seconds * 1000 for p in pods if len(p.networks) == count]
        line.append(
            f"{count} network(s): RunPodSandbox median {statistics.median(run):.0f} ms "
            f"{sorted(round(t) for t in run)}, "
            f"StopPodSandbox median {statistics.median(stop):.0f} ms"
        )
    return "\n" + "\n".join(line)


# -- the test ----------------------------------------------------------------------------
async def test_cri_sandboxes_get_one_interface_per_annotated_network(
    runtime: containerd.Containerd,
    node: e2e_node.Node,
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
) -> None:
    pods = [Pod(name=f"p{i}", networks=THREE if i % 2 else ONE) for i in range(10)]
    for pod in pods:
        created = await kube.create_pod(
            namespace=namespace,
            name=pod.name,
            node=node_name,
            annotations={"cni": ",".join(pod.networks)},
        )
        pod.uid = created["metadata"]["uid"]

    await anyio.to_thread.run_sync(
        functools.partial(run_sandboxes, runtime, pods, namespace=namespace)
    )
    attachments = {a["container"]: a for a in await anyio.to_thread.run_sync(node.state)}
    assert sorted(attachments) == sorted(p.sandbox_id for p in pods)
    for pod in pods:
        assert attachments[pod.sandbox_id]["pod"] == f"{namespace}/{pod.name}"
        await anyio.to_thread.run_sync(check_sandbox, runtime, pod, attachments[pod.sandbox_id])
    assert len({ip for pod in pods for ip in pod.ips()}) == 5 * 1 + 5 * 3  # no address twice
    veths = await anyio.to_thread.run_sync(node_links, node) - BRIDGES - {"lo"}
    assert len(veths) == 5 * 1 + 5 * 3, veths  # the host ends, one per pod interface

    for pod in pods:

        async def published(pod: Pod = pod) -> bool:
            notes = await kube.pod_annotations(namespace=namespace, name=pod.name)
            return MULTI_IP in notes and STATUS in notes

        await kube_mod.eventually(published, within=15, what=f"{pod.name} annotations")
        notes = await kube.pod_annotations(namespace=namespace, name=pod.name)
        multi = json.loads(notes[MULTI_IP])
        assert multi["multi_entry"] == len(pod.networks)
        assert sorted(e["ip"] for e in multi["ips"].values()) == sorted(pod.ips())
        assert sorted((e["interface"], e["ip"]) for e in multi["ips"].values()) == sorted(
            (ifname, cidr.split("/")[0])
            for ifname, cidrs in pod.addresses.items()
            for cidr in cidrs
        )
        status = json.loads(notes[STATUS])
        assert [(s["name"], s["interface"], s["ips"]) for s in status] == [
            (network, f"eth{i}", [pod.addresses[f"eth{i}"][0].split("/")[0]])
            for i, network in enumerate(pod.networks)
        ]
        assert notes["cni"] == ",".join(pod.networks)

    # pod to pod on a secondary network: p1 -> p3 over net-b (eth1 on both)
    source, target = pods[1], pods[3]
    target_ip = target.addresses["eth1"][0].split("/")[0]
    assert await anyio.to_thread.run_sync(route_device, source.netns, target_ip) == "eth1"
    assert await anyio.to_thread.run_sync(ping, source.netns, target_ip), f"ping {target_ip}"

    assert await anyio.to_thread.run_sync(cni_requests, node) == {("ADD", "ok"): 10.0}
    await anyio.to_thread.run_sync(remove_sandboxes, runtime, node, pods)
    # containerd DELs on StopPodSandbox and again on RemovePodSandbox; both succeed
    assert await anyio.to_thread.run_sync(cni_requests, node) == {
        ("ADD", "ok"): 10.0,
        ("DEL", "ok"): 20.0,
    }
    print(timings(pods))
    assert await anyio.to_thread.run_sync(runtime.cri.list_pod_sandboxes) == []
    assert node.allocations() == {}
    assert await anyio.to_thread.run_sync(node.state) == []
    await anyio.to_thread.run_sync(
        functools.partial(
            poll,
            functools.partial(node_links, node),
            ok=lambda links: links <= BRIDGES | {"lo"},
            within=5,
            what="only the bridges and lo left in the node netns",
        )
    )
    await anyio.to_thread.run_sync(
        functools.partial(
            poll, runtime.shim_pids, ok=lambda pids: pids == [], within=5, what="shims exited"
        )
    )
    assert containerd.mounts_under(runtime.root) == []  # netns, shm, rootfs all unmounted
