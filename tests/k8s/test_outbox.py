"""The write-back outbox against the real kube-apiserver, with the agent's least-privilege token.

The store side is a real EventStore holding real ADD events; the pods are real pod objects
bound to a node. What is checked is the pod object itself and the log.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import anyio
import pytest

from genie.domain import events as ev
from genie.k8s import annotations as ann
from genie.k8s import client as k8s_client
from genie.k8s import outbox as outbox_mod
from genie.services import keyed_lock
from genie.store import recorder
from tests.k8s import apiserver
from tests.k8s import kube as kube_mod
from tests.k8s import writeback_kit as kit

pytestmark = [pytest.mark.k8s, pytest.mark.anyio]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[recorder.EventStore]:
    async with await recorder.EventStore.open(tmp_path / "events.db") as opened:
        yield opened


def make_outbox(
    store: recorder.EventStore,
    agent_client: k8s_client.Client,
    *,
    concurrency: int = 8,
    max_in_flight: int = 512,
    patcher: outbox_mod.PodPatcher | None = None,
) -> outbox_mod.Outbox:
    """An outbox with test-sized backoff (0.1 s doubling up to 1 s) and rescan (5 s)."""
    return outbox_mod.Outbox(
        store=store,
        locks=keyed_lock.KeyedLock(),
        patcher=patcher or outbox_mod.ApiPodPatcher(agent_client),
        concurrency=concurrency,
        max_in_flight=max_in_flight,
        rescan_interval=5,
        backoff_initial=0.1,
        backoff_max=1.0,
    )


class CountingPatcher:
    """The real patcher, counting calls and the peak of concurrent ones."""

    def __init__(self, inner: outbox_mod.PodPatcher) -> None:
        self.inner = inner
        self.calls = self.running = self.peak = 0

    async def patch_annotations(
        self, *, namespace: str, name: str, uid: str, annotations: Mapping[str, str]
    ) -> outbox_mod.Outcome:
        self.calls += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            return await self.inner.patch_annotations(
                namespace=namespace, name=name, uid=uid, annotations=annotations
            )
        finally:
            self.running -= 1


def settled(store: recorder.EventStore, cid: str) -> bool:
    att = store.state.attachments.get(cid)
    return att is not None and not att.annotation_pending


async def stream_kinds(store: recorder.EventStore, cid: str) -> list[str]:
    return [rec.event.kind async for rec in store.read(stream=cid)]


async def last_event(store: recorder.EventStore, cid: str) -> ev.Event:
    events = [rec.event async for rec in store.read(stream=cid)]
    return events[-1]


async def make_pod(
    kube: kube_mod.Kube, *, namespace: str, node: str, annotations: dict[str, str] | None = None
) -> ev.PodRef:
    name = kube_mod.unique("pod")
    doc = await kube.create_pod(namespace=namespace, name=name, node=node, annotations=annotations)
    return ev.PodRef(namespace=namespace, name=name, uid=doc["metadata"]["uid"])


NETWORKS = [
    ("tenant-a", "eth0", kit.bridge_result("eth0", "10.211.0.7/24", mac="0a:58:0a:d3:00:07")),
    ("tenant-b", "eth1", kit.BRIDGE_RESULT),
    ("tenant-c", "eth2", kit.PTP_RESULT),
]


async def test_publishes_every_address_and_keeps_other_annotations(
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
    store: recorder.EventStore,
    agent_client: k8s_client.Client,
) -> None:
    pod = await make_pod(kube, namespace=namespace, node=node_name, annotations={"team": "blue"})
    att = await kit.attach(store, pod=pod, networks=NETWORKS)
    assert att.annotation_pending
    box = make_outbox(store, agent_client)

    async with anyio.create_task_group() as tg:
        tg.start_soon(box.run)
        # another writer changes its own annotation while genie's write-back is pending
        await kube.annotate_pod(namespace=namespace, name=pod.name, annotations={"other": "x"})
        box.notify()
        took = await kit.wait_until(lambda: settled(store, att.container_id))
        tg.cancel_scope.cancel()

    on_pod = await kube.pod_annotations(namespace=namespace, name=pod.name)
    assert on_pod["team"] == "blue"
    assert on_pod["other"] == "x"
    prefs = json.loads(on_pod[ann.MULTI_IP_KEY])
    assert prefs["multi_entry"] == 4
    assert [v["ip"] for v in prefs["ips"].values()] == [
        "10.211.0.7",
        "10.212.0.2",
        "fd00:212::2",
        "10.213.0.2",
    ]
    status = json.loads(on_pod[ann.NETWORK_STATUS_KEY])
    assert [(s["name"], s["interface"], s["default"]) for s in status] == [
        ("tenant-a", "eth0", True),
        ("tenant-b", "eth1", False),
        ("tenant-c", "eth2", False),
    ]
    published = await last_event(store, att.container_id)
    assert isinstance(published, ev.AnnotationPublished)
    assert dict(published.annotations) == {k: on_pod[k] for k in ann.KEYS}
    assert store.state.attachments[att.container_id].annotations == published.annotations
    assert box.published == 1
    assert took < 5, f"write-back took {took:.2f}s"
    print(f"\nnotify -> AnnotationPublished committed: {took * 1000:.0f} ms")


async def test_recreated_pod_is_abandoned_not_written(
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
    store: recorder.EventStore,
    agent_client: k8s_client.Client,
) -> None:
    old = await make_pod(kube, namespace=namespace, node=node_name)
    att = await kit.attach(store, pod=old, networks=NETWORKS[:1])
    await kube.delete_pod(namespace=namespace, name=old.name)
    new = await kube.create_pod(namespace=namespace, name=old.name, node=node_name)
    assert new["metadata"]["uid"] != old.uid
    box = make_outbox(store, agent_client)

    async with anyio.create_task_group() as tg:
        tg.start_soon(box.run)
        await kit.wait_until(lambda: settled(store, att.container_id))
        tg.cancel_scope.cancel()

    abandoned = await last_event(store, att.container_id)
    assert isinstance(abandoned, ev.AnnotationAbandoned)
    assert "replaced" in abandoned.reason
    on_pod = await kube.pod_annotations(namespace=namespace, name=old.name)
    assert not set(on_pod) & set(ann.KEYS)
    assert (box.published, box.abandoned) == (0, 1)


async def test_deleted_pod_is_abandoned(
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
    store: recorder.EventStore,
    agent_client: k8s_client.Client,
) -> None:
    pod = await make_pod(kube, namespace=namespace, node=node_name)
    att = await kit.attach(store, pod=pod, networks=NETWORKS[:1])
    await kube.delete_pod(namespace=namespace, name=pod.name)
    box = make_outbox(store, agent_client)

    async with anyio.create_task_group() as tg:
        tg.start_soon(box.run)
        await kit.wait_until(lambda: settled(store, att.container_id))
        tg.cancel_scope.cancel()

    abandoned = await last_event(store, att.container_id)
    assert isinstance(abandoned, ev.AnnotationAbandoned)
    assert "gone" in abandoned.reason
    assert await kube.get_pod(namespace=namespace, name=pod.name) is None


async def test_pending_while_apiserver_down_published_after_it_returns(
    cluster: apiserver.Cluster,
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
    store: recorder.EventStore,
    agent_client: k8s_client.Client,
) -> None:
    pod = await make_pod(kube, namespace=namespace, node=node_name, annotations={"keep": "me"})
    box = make_outbox(store, agent_client)

    async with anyio.create_task_group() as tg:
        tg.start_soon(box.run)
        async with cluster.apiserver_stopped():
            att = await kit.attach(store, pod=pod, networks=NETWORKS)  # an ADD while it is down
            box.notify()
            await kit.wait_until(lambda: box.retries >= 2, what="outbox retried")
            assert store.state.attachments[att.container_id].annotation_pending
            assert await stream_kinds(store, att.container_id) == [
                "AddRequested",
                "DelegateAdded",
                "DelegateAdded",
                "DelegateAdded",
                "AddCompleted",
            ]
        # the apiserver is back: the backoff (at most 1 s here) brings the write-back through
        took = await kit.wait_until(lambda: settled(store, att.container_id), within=20)
        tg.cancel_scope.cancel()

    on_pod = await kube.pod_annotations(namespace=namespace, name=pod.name)
    assert on_pod["keep"] == "me"
    assert json.loads(on_pod[ann.MULTI_IP_KEY])["multi_entry"] == 4
    assert isinstance(await last_event(store, att.container_id), ev.AnnotationPublished)
    assert took < 5


async def test_pending_write_back_survives_an_agent_restart(
    tmp_path: Path,
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
    agent_client: k8s_client.Client,
) -> None:
    pod = await make_pod(kube, namespace=namespace, node=node_name)
    db = tmp_path / "restart.db"
    async with await recorder.EventStore.open(db) as first:  # agent_client 1: ADD, then it stops
        att = await kit.attach(first, pod=pod, networks=NETWORKS[1:])

    async with await recorder.EventStore.open(db) as second:  # agent_client 2: replays the log
        assert second.state.attachments[att.container_id].annotation_pending
        box = make_outbox(second, agent_client)
        async with anyio.create_task_group() as tg:
            tg.start_soon(box.run)  # no notify(): the first scan finds it
            await kit.wait_until(lambda: settled(second, att.container_id))
            tg.cancel_scope.cancel()

    on_pod = await kube.pod_annotations(namespace=namespace, name=pod.name)
    assert json.loads(on_pod[ann.MULTI_IP_KEY])["multi_entry"] == 3
    async with await recorder.EventStore.open(db) as third:
        assert not third.state.attachments[att.container_id].annotation_pending


async def test_detaching_sandbox_is_abandoned_without_a_patch(
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
    store: recorder.EventStore,
    agent_client: k8s_client.Client,
) -> None:
    pod = await make_pod(kube, namespace=namespace, node=node_name)
    att = await kit.attach(store, pod=pod, networks=NETWORKS[:1])
    await store.append(
        att.container_id,
        [ev.DelRequested(), ev.DelegateDeleteFailed(index=0, code=11, msg="busy")],
        expected_version=att.version,
    )
    box = make_outbox(store, agent_client)

    async with anyio.create_task_group() as tg:
        tg.start_soon(box.run)
        await kit.wait_until(lambda: settled(store, att.container_id))
        tg.cancel_scope.cancel()

    abandoned = await last_event(store, att.container_id)
    assert isinstance(abandoned, ev.AnnotationAbandoned)
    assert "deleting" in abandoned.reason
    on_pod = await kube.pod_annotations(namespace=namespace, name=pod.name)
    assert not set(on_pod) & set(ann.KEYS)


async def test_many_pods_bounded_concurrency(
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
    store: recorder.EventStore,
    agent_client: k8s_client.Client,
) -> None:
    pods = [await make_pod(kube, namespace=namespace, node=node_name) for _ in range(40)]
    atts = [await kit.attach(store, pod=p, networks=NETWORKS[:2]) for p in pods]
    counting = CountingPatcher(outbox_mod.ApiPodPatcher(agent_client))
    box = make_outbox(store, agent_client, concurrency=4, max_in_flight=16, patcher=counting)

    async with anyio.create_task_group() as tg:
        tg.start_soon(box.run)
        took = await kit.wait_until(
            lambda: all(settled(store, a.container_id) for a in atts), within=30
        )
        tg.cancel_scope.cancel()

    assert box.published == 40
    assert counting.calls == 40
    assert counting.peak == 4  # bounded, and the bound was reached
    assert box.pending() == 0
    for p in pods[::13]:
        on_pod = await kube.pod_annotations(namespace=p.namespace, name=p.name)
        assert json.loads(on_pod[ann.MULTI_IP_KEY])["multi_entry"] == 3
    print(f"\n40 write-backs, concurrency 4: {took:.2f}s ({took / 40 * 1000:.1f} ms each)")


async def test_a_patch_the_api_server_refuses_is_abandoned_not_retried(
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
    store: recorder.EventStore,
    agent_client: k8s_client.Client,
) -> None:
    pod = await make_pod(kube, namespace=namespace, node=node_name)
    # 6000 addresses: both annotations together exceed the API's 256 KiB annotation limit
    addresses = [f"10.{i // 250 % 250}.{i % 250}.{i // 62500 + 2}/8" for i in range(6000)]
    att = await kit.attach(
        store, pod=pod, networks=[("huge", "eth0", kit.bridge_result("eth0", *addresses))]
    )
    counting = CountingPatcher(outbox_mod.ApiPodPatcher(agent_client))
    box = make_outbox(store, agent_client, patcher=counting)

    async with anyio.create_task_group() as tg:
        tg.start_soon(box.run)
        await kit.wait_until(lambda: settled(store, att.container_id))
        tg.cancel_scope.cancel()

    abandoned = await last_event(store, att.container_id)
    assert isinstance(abandoned, ev.AnnotationAbandoned)
    assert "refused" in abandoned.reason
    assert "Too long" in abandoned.reason
    assert counting.calls == 1
    on_pod = await kube.pod_annotations(namespace=namespace, name=pod.name)
    assert not set(on_pod) & set(ann.KEYS)
