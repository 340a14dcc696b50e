"""Kubernetes Events on the pod: wording and shape, the bounded queue, and the real apiserver."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import yaml

from genie.domain import events as ev
from genie.k8s import client as k8s_client
from genie.k8s import events as k8s_events
from genie.store import recorder
from tests.k8s import apiserver
from tests.k8s import kube as kube_mod
from tests.k8s import writeback_kit as kit

pytestmark = pytest.mark.anyio
POD = ev.PodRef(namespace="tenant", name="web-0", uid="8f0c0a52-0000-4000-8000-000000000001")
NETWORKS = [
    ("tenant-a", "eth0", kit.bridge_result("eth0", "10.211.0.7/24")),
    ("tenant-b", "eth1", kit.BRIDGE_RESULT),
]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[recorder.EventStore]:
    async with await recorder.EventStore.open(tmp_path / "events.db") as opened:
        yield opened


class NoSink:
    """A sink for tests that never drain the queue (create_event is never reached)."""

    async def create_event(self, *, namespace: str, body: object) -> None:
        raise AssertionError("not drained in this test")


async def test_added_interface_messages_as_multus_words_them(store: recorder.EventStore) -> None:
    att = await kit.attach(store, pod=POD, networks=NETWORKS)

    assert k8s_events.added_interface_messages(att) == [
        "Add eth0 [10.211.0.7/24] from tenant-a",
        "Add eth1 [10.212.0.2/24,fd00:212::2/64] from tenant-b",
    ]


def test_event_body() -> None:
    at = 1_700_000_000.25
    event = k8s_events.PodEvent(
        pod=POD, type="Normal", reason="AddedInterface", message="Add eth0 [..] from x", at=at
    )

    doc = k8s_events.body(event, node_name="node-1")
    other = k8s_events.body(event, node_name="node-1")

    assert doc["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "tenant",
        "name": "web-0",
        "uid": POD.uid,
    }
    assert doc["metadata"]["namespace"] == "tenant"
    assert doc["metadata"]["name"].startswith("web-0.")
    assert doc["metadata"]["name"] != other["metadata"]["name"]
    assert (doc["type"], doc["reason"], doc["count"]) == ("Normal", "AddedInterface", 1)
    assert doc["source"] == {"component": "genie", "host": "node-1"}
    assert doc["firstTimestamp"] == doc["lastTimestamp"] == "2023-11-14T22:13:20Z"
    assert (doc["reportingComponent"], doc["reportingInstance"]) == ("genie", "node-1")


def test_long_names_and_messages_are_cut_to_the_api_limits() -> None:
    pod = ev.PodRef(namespace="ns", name="p" * 253, uid="")
    event = k8s_events.PodEvent(
        pod=pod, type="Warning", reason="AddFailed", message="é" * 2000, at=0
    )

    doc = k8s_events.body(event, node_name="")

    assert len(doc["metadata"]["name"]) <= 253
    assert len(doc["message"].encode()) <= 1024
    assert doc["message"].endswith("...")
    assert "uid" not in doc["involvedObject"]
    assert doc["source"] == {"component": "genie"}


def test_full_queue_drops_without_blocking() -> None:
    events = k8s_events.PodEvents(sink=NoSink(), node_name="n", max_queue=3)

    try:
        sent = [events.emit(POD, type_="Normal", reason="R", message=str(i)) for i in range(5)]
        unnamed = ev.PodRef(namespace="default", name="")
        no_pod = events.emit(unnamed, type_="Normal", reason="R", message="m")
    finally:
        events.close()

    assert sent == [True, True, True, False, False]
    assert (events.queued(), events.dropped) == (3, 2)
    assert not no_pod  # no pod name: nothing to attach the Event to
    assert not events.emit(POD, type_="Normal", reason="R", message="after close")


@pytest.mark.k8s
async def test_events_on_the_pod(
    kube: kube_mod.Kube,
    namespace: str,
    node_name: str,
    store: recorder.EventStore,
    agent_client: k8s_client.Client,
) -> None:
    name = kube_mod.unique("pod")
    doc = await kube.create_pod(namespace=namespace, name=name, node=node_name)
    pod = ev.PodRef(namespace=namespace, name=name, uid=doc["metadata"]["uid"])
    att = await kit.attach(store, pod=pod, networks=NETWORKS)
    events = k8s_events.PodEvents(sink=k8s_events.ApiEventSink(agent_client), node_name=node_name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(events.run)
        start = time.monotonic()
        events.interfaces_added(att)
        events.add_failed(
            pod, "ADD for pod x failed on network tenant-c (eth2): no IP; rolled back"
        )
        emit_took = time.monotonic() - start
        await kit.wait_until(lambda: events.sent == 3)
        tg.cancel_scope.cancel()

    found = await kube.pod_events(namespace=namespace, name=name, uid=pod.uid)
    assert sorted((e["type"], e["reason"], e["message"]) for e in found) == [
        ("Normal", "AddedInterface", "Add eth0 [10.211.0.7/24] from tenant-a"),
        ("Normal", "AddedInterface", "Add eth1 [10.212.0.2/24,fd00:212::2/64] from tenant-b"),
        (
            "Warning",
            "AddFailed",
            "ADD for pod x failed on network tenant-c (eth2): no IP; rolled back",
        ),
    ]
    assert {e["source"]["component"] for e in found} == {"genie"}
    assert {e["source"]["host"] for e in found} == {node_name}
    assert {e["involvedObject"]["uid"] for e in found} == {pod.uid}
    assert (events.failed, events.dropped) == (0, 0)
    assert emit_took < 0.01  # the CNI path only queues


@pytest.mark.k8s
async def test_unreachable_api_drops_after_a_few_attempts(
    cluster: apiserver.Cluster, tmp_path: Path, agent_kubeconfig: Path
) -> None:
    doc = yaml.safe_load(await anyio.Path(agent_kubeconfig).read_text())
    doc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{apiserver.free_port()}"
    dead = tmp_path / "dead.kubeconfig"
    await anyio.Path(dead).write_text(yaml.safe_dump(doc))
    client = await k8s_client.connect(kubeconfig=dead)
    assert client is not None
    attempts: list[float] = []

    class Counting(k8s_events.ApiEventSink):
        async def create_event(self, *, namespace: str, body: object) -> None:
            attempts.append(time.monotonic())
            await super().create_event(namespace=namespace, body=body)  # type: ignore[arg-type]

    events = k8s_events.PodEvents(
        sink=Counting(client, timeout=2), node_name="n", attempts=3, retry_max=0.2
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(events.run)
            assert events.emit(POD, type_="Normal", reason="AddedInterface", message="m")
            await kit.wait_until(lambda: events.failed == 1, within=20)
            tg.cancel_scope.cancel()
    finally:
        await client.close()

    assert len(attempts) == 3
    assert events.sent == 0


@pytest.mark.k8s
async def test_event_for_a_missing_namespace_is_not_retried(
    kube: kube_mod.Kube, agent_client: k8s_client.Client
) -> None:
    attempts: list[str] = []

    class Counting(k8s_events.ApiEventSink):
        async def create_event(self, *, namespace: str, body: object) -> None:
            attempts.append(namespace)
            await super().create_event(namespace=namespace, body=body)  # type: ignore[arg-type]

    events = k8s_events.PodEvents(sink=Counting(agent_client), node_name="n")
    gone = ev.PodRef(namespace=kube_mod.unique("nons"), name="p", uid="u")

    async with anyio.create_task_group() as tg:
        tg.start_soon(events.run)
        events.add_failed(gone, "boom")
        await kit.wait_until(lambda: events.failed == 1)
        tg.cancel_scope.cancel()

    assert len(attempts) == 1
