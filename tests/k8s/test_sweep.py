"""The whole write-back and pod-gone chain against the real apiserver, wired as the agent wires it.

Pod watcher (the agent's RBAC token) as the ADD path's pod source, the outbox, Events and the
pod-gone sweep fed by the watcher's deletions. The delegates are `held`, a stand-in plugin
that touches nothing but its own state dir (one file per held address), so the test thread
can stay in the host netns where the apiserver's loopback is.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from genie.cni import wire
from genie.domain import events as ev
from genie.k8s import annotations as ann
from genie.k8s import client as k8s_client
from genie.k8s import events as k8s_events
from genie.k8s import nads, pods, watch
from genie.k8s import outbox as outbox_mod
from genie.networks import registry as reg
from genie.services import attach, context, delegates, keyed_lock, sweep
from genie.store import recorder
from tests.k8s import kube as kube_mod
from tests.k8s import writeback_kit as kit
from tests.support import plugins

pytestmark = [pytest.mark.k8s, pytest.mark.anyio]
GRACE = 1.0

# ADD: take the next address of 10.77.<net>.0/24, hold it as a file; DEL: release it.
HELD = r"""
conf=$(cat)
net=$(printf '%s' "$conf" | sed -n 's/.*"subnet": *"\([0-9]*\)".*/\1/p')
state="@STATE@"
key="$state/$CNI_CONTAINERID-$CNI_IFNAME"
case "$CNI_COMMAND" in
ADD)
  n=$(ls "$state" | wc -l)
  ip="10.77.$net.$((n + 2))"
  printf '%s' "$ip" > "$key"
  fmt='{"cniVersion":"1.0.0","interfaces":[{"name":"%s","mac":"02:77:00:00:%02x:%02x",'
  fmt="$fmt"'"sandbox":"%s"}],"ips":[{"interface":0,"address":"%s/24"}],"dns":{}}'
  printf "$fmt" "$CNI_IFNAME" "$net" "$((n + 2))" "$CNI_NETNS" "$ip"
  ;;
DEL) rm -f "$key" ;;
esac
exit 0
"""


def held(state: Path) -> dict[str, str]:
    """{container-ifname: address} the `held` plugin holds (the ground truth for leaks)."""
    return {p.name: p.read_text() for p in sorted(state.iterdir())}


class Agent:
    """The write-back side of one agent, wired as genie.daemon.agent is asked to wire it."""

    def __init__(
        self,
        *,
        client: k8s_client.Client,
        store: recorder.EventStore,
        node: str,
        net_dir: Path,
        bin_dir: Path,
        attachment_definitions: context.AttachmentDefinitionSource | None = None,
    ) -> None:
        self.watcher = pods.PodWatcher(
            client, node_name=node, backoff=watch.Backoff(base=0.05, cap=0.5)
        )
        self.svc = context.Services(
            store=store,
            networks=reg.NetworkRegistry(net_dir),
            pods=self.watcher,
            runner=delegates.DelegateRunner(cni_path=[bin_dir], timeout=20),
            locks=keyed_lock.KeyedLock(),
            default_network="net-a",
            ready=self.watcher.ready,
            attachment_definitions=attachment_definitions,
        )
        self.outbox = outbox_mod.Outbox(
            store=store,
            locks=self.svc.locks,
            patcher=outbox_mod.ApiPodPatcher(client),
            backoff_initial=0.1,
            backoff_max=1.0,
        )
        self.events = k8s_events.PodEvents(sink=k8s_events.ApiEventSink(client), node_name=node)
        self.sweep = sweep.PodGoneSweep(self.svc, grace=GRACE, present=self._present)
        self.watcher.on_deleted(
            lambda g: self.sweep.pod_deleted(
                ev.PodRef(namespace=g.namespace, name=g.name, uid=g.uid)
            )
        )

    def _present(self, pod: ev.PodRef) -> bool:
        cached = self.watcher.cached(namespace=pod.namespace, name=pod.name)
        return cached is not None and (not pod.uid or cached.uid == pod.uid)

    def _listed(self) -> list[ev.PodRef]:
        return [
            ev.PodRef(namespace=p.namespace, name=p.name, uid=p.uid) for p in self.watcher.pods()
        ]

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.watcher.run)
            tg.start_soon(self.outbox.run)
            tg.start_soon(self.events.run)
            tg.start_soon(self.sweep.run)
            await self.sweep.reconcile_when_ready(ready=self.watcher.ready, pods=self._listed)

    async def add(self, req: wire.CniRequest) -> ev.JSONObject:
        """What dispatch does around attach.add: reply, then notify (never waited for)."""
        try:
            result = await attach.add(self.svc, req)
        except Exception as exc:
            self.events.add_failed(attach.pod_ref(req), str(exc))
            raise
        att = self.svc.store.state.attachments[req.container_id]
        self.outbox.notify()
        self.events.interfaces_added(att)
        return result


def request(pod: ev.PodRef, *, netns: str, cid: str) -> wire.CniRequest:
    config = {"cniVersion": "1.0.0", "name": "genie", "type": "genie"}
    return wire.CniRequest(
        command="ADD",
        container_id=cid,
        netns=netns,
        ifname="eth0",
        args=(
            ("K8S_POD_NAMESPACE", pod.namespace),
            ("K8S_POD_NAME", pod.name),
            ("K8S_POD_UID", pod.uid),
        ),
        path=(),
        config=config,
        cni_version="1.0.0",
        stdin=json.dumps(config).encode(),
    )


@pytest.fixture
def node_dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(net dir with net-a and net-b, bin dir with `held`, held state dir)."""
    net_dir, bin_dir, state = tmp_path / "net.d", tmp_path / "bin", tmp_path / "held"
    net_dir.mkdir()
    state.mkdir()
    plugins.write_script_plugin(bin_dir, "held", HELD.replace("@STATE@", str(state)))
    for index, name in enumerate(("net-a", "net-b"), start=1):
        conf = {"cniVersion": "1.0.0", "name": name, "type": "held", "subnet": str(index)}
        (net_dir / f"{name}.conf").write_text(json.dumps(conf))
    return net_dir, bin_dir, state


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[recorder.EventStore]:
    async with await recorder.EventStore.open(tmp_path / "events.db") as opened:
        yield opened


async def test_add_write_back_events_then_pod_gone_release(
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
    agent_client: k8s_client.Client,
    store: recorder.EventStore,
    node_dirs: tuple[Path, Path, Path],
    pod_netns: str,
) -> None:
    net_dir, bin_dir, state = node_dirs
    agent = Agent(
        client=agent_client, store=store, node=node_name, net_dir=net_dir, bin_dir=bin_dir
    )
    name = kube_mod.unique("pod")
    doc = await kube.create_pod(
        namespace=namespace, name=name, node=node_name, annotations={"cni": "net-a,net-b"}
    )
    pod = ev.PodRef(namespace=namespace, name=name, uid=doc["metadata"]["uid"])
    cid = kit.container_id()

    async with kube_mod.background(agent.run):
        await kube_mod.eventually(agent.watcher.ready, what="first list")
        result = await agent.add(request(pod, netns=f"/run/netns/{pod_netns}", cid=cid))
        addresses = [ip["address"].split("/")[0] for ip in result["ips"]]
        assert held(state) == {f"{cid}-eth0": addresses[0], f"{cid}-eth1": addresses[1]}
        assert agent.watcher.gets == 0  # the pod came from the cache: no GET on the ADD path

        async def published() -> bool:
            on_pod = await kube.pod_annotations(namespace=namespace, name=name)
            return ann.MULTI_IP_KEY in on_pod

        await kube_mod.eventually(published, what="annotations on the pod")
        on_pod = await kube.pod_annotations(namespace=namespace, name=name)
        prefs = json.loads(on_pod[ann.MULTI_IP_KEY])
        assert [(v["ip"], v["interface"]) for v in prefs["ips"].values()] == [
            (addresses[0], "eth0"),
            (addresses[1], "eth1"),
        ]
        status = json.loads(on_pod[ann.NETWORK_STATUS_KEY])
        assert [(s["name"], s["ips"], s["default"]) for s in status] == [
            ("net-a", [addresses[0]], True),
            ("net-b", [addresses[1]], False),
        ]
        await kit.wait_until(lambda: agent.events.sent == 2)
        messages = [e["message"] for e in await kube.pod_events(namespace=namespace, name=name)]
        assert sorted(messages) == [
            f"Add eth0 [{addresses[0]}/24] from net-a",
            f"Add eth1 [{addresses[1]}/24] from net-b",
        ]

        # the pod is deleted and no CNI DEL comes: the sweep releases it after the grace
        await kube.delete_pod(namespace=namespace, name=name)
        await kube_mod.eventually(lambda: bool(agent.sweep.scheduled()), what="deletion seen")
        assert cid in store.state.attachments
        took = await kit.wait_until(lambda: cid not in store.state.attachments, within=10)

    assert took > GRACE / 2
    assert held(state) == {}
    released = [rec.event async for rec in store.read(stream=cid)][-1]
    assert isinstance(released, ev.Released)
    assert released.initiator == ev.INITIATOR_POD_GONE


async def test_restarted_agent_sweeps_pods_deleted_while_it_was_down(
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
    agent_client: k8s_client.Client,
    tmp_path: Path,
    node_dirs: tuple[Path, Path, Path],
    make_pod_netns: Callable[[], str],
) -> None:
    net_dir, bin_dir, state = node_dirs
    db = tmp_path / "restart.db"
    refs: list[tuple[ev.PodRef, str]] = []
    async with await recorder.EventStore.open(db) as first:
        agent = Agent(
            client=agent_client, store=first, node=node_name, net_dir=net_dir, bin_dir=bin_dir
        )
        async with kube_mod.background(agent.run):
            await kube_mod.eventually(agent.watcher.ready, what="first list")
            for _ in range(2):
                name = kube_mod.unique("pod")
                doc = await kube.create_pod(namespace=namespace, name=name, node=node_name)
                pod = ev.PodRef(namespace=namespace, name=name, uid=doc["metadata"]["uid"])
                cid = kit.container_id()
                await agent.add(request(pod, netns=f"/run/netns/{make_pod_netns()}", cid=cid))
                refs.append((pod, cid))
    (_, kept_cid), (gone, gone_cid) = refs
    await kube.delete_pod(namespace=gone.namespace, name=gone.name)  # while no agent runs

    async with await recorder.EventStore.open(db) as second:
        agent = Agent(
            client=agent_client, store=second, node=node_name, net_dir=net_dir, bin_dir=bin_dir
        )
        async with kube_mod.background(agent.run):
            await kit.wait_until(lambda: gone_cid not in second.state.attachments, within=15)
            assert kept_cid in second.state.attachments
        assert list(held(state)) == [f"{kept_cid}-eth0"]


async def test_add_resolves_a_nad_its_watch_has_not_delivered_yet(
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
    agent_client: k8s_client.Client,
    store: recorder.EventStore,
    node_dirs: tuple[Path, Path, Path],
    pod_netns: str,
) -> None:
    """A NAD applied together with its pod can reach the apiserver after the agent's NAD
    cache was last fed. Here the real AttachmentDefinitions' watch is never started, so its
    cache is empty for certain: the ADD must wait briefly, then GET the NAD, not fail."""
    net_dir, bin_dir, state = node_dirs
    definitions = nads.AttachmentDefinitions(
        agent_client, registry=reg.NetworkRegistry(net_dir), get_wait=0.2
    )
    agent = Agent(
        client=agent_client,
        store=store,
        node=node_name,
        net_dir=net_dir,
        bin_dir=bin_dir,
        attachment_definitions=definitions,
    )
    nad = {"cniVersion": "1.0.0", "name": "tenant-h", "type": "held", "subnet": "7"}
    await kube.create_nad(namespace=namespace, name="tenant-h", config=nad)
    name = kube_mod.unique("pod")
    doc = await kube.create_pod(
        namespace=namespace,
        name=name,
        node=node_name,
        annotations={"k8s.v1.cni.cncf.io/networks": "tenant-h"},
    )
    pod = ev.PodRef(namespace=namespace, name=name, uid=doc["metadata"]["uid"])
    cid = kit.container_id()
    async with kube_mod.background(agent.run):
        await kube_mod.eventually(agent.watcher.ready, what="first list")
        result = await agent.add(request(pod, netns=f"/run/netns/{pod_netns}", cid=cid))
    addresses = [ip["address"].split("/")[0] for ip in result["ips"]]
    assert [i["name"] for i in result["interfaces"]] == ["eth0", "net1"]
    assert addresses[1].startswith("10.77.7."), addresses  # from the NAD's config
    assert held(state) == {f"{cid}-eth0": addresses[0], f"{cid}-net1": addresses[1]}
    assert definitions.gets == 1 and len(definitions) == 0  # one GET; the cache untouched
    planned = store.state.attachments[cid].delegates[1].plan
    assert planned.network == "tenant-h"
