"""The pod watcher and cache (genie.k8s.pods) against a real apiserver, as the agent's role.

List then watch sees creates, updates and deletes of its node's pods only; get() answers
cached pods without an API call, finds pods not yet delivered, follows re-created pods;
the watch survives an apiserver restart and a compaction (410 Gone -> relist).
"""

from __future__ import annotations

import anyio
import pytest

from genie.k8s import client as k8s_client
from genie.k8s import pods, watch
from genie.pods import source
from tests.k8s import apiserver
from tests.k8s import kube as kube_mod

pytestmark = [pytest.mark.k8s, pytest.mark.anyio]

FAST = watch.Backoff(base=0.05, cap=0.5)


def watcher(client: k8s_client.Client, node: str, **kwargs: object) -> pods.PodWatcher:
    kwargs.setdefault("backoff", FAST)
    return pods.PodWatcher(client, node_name=node, **kwargs)  # type: ignore[arg-type]


async def test_list_then_watch_sees_only_its_node(
    kube: kube_mod.Kube, agent_client: k8s_client.Client, namespace: str, node_name: str
) -> None:
    other = kube_mod.unique("node")
    listed = await kube.create_pod(
        namespace=namespace, name="listed", node=node_name, annotations={"cni": "a,b", "x": "y"}
    )
    await kube.create_pod(namespace=namespace, name="elsewhere", node=other)
    w = watcher(agent_client, node_name, watch_timeout=1)
    gone: list[pods.PodGone] = []
    w.on_deleted(gone.append)
    assert not w.ready()
    async with kube_mod.background(w.run):
        await kube_mod.eventually(w.ready, what="first list")
        pod = await w.get(namespace=namespace, name="listed", uid=listed["metadata"]["uid"])
        # only the annotations genie reads are kept
        assert pod.annotations == {"cni": "a,b"}
        assert pod.uid == listed["metadata"]["uid"]

        watched = await kube.create_pod(namespace=namespace, name="watched", node=node_name)
        await kube.create_pod(namespace=namespace, name="elsewhere-2", node=other)
        await kube_mod.eventually(
            lambda: w.cached(namespace=namespace, name="watched") is not None, what="ADDED"
        )
        await kube.annotate_pod(
            namespace=namespace,
            name="watched",
            annotations={"k8s.v1.cni.cncf.io/networks": "net-a"},
        )
        await kube_mod.eventually(
            lambda: (
                w.cached(namespace=namespace, name="watched")
                == source.Pod(
                    namespace=namespace,
                    name="watched",
                    uid=watched["metadata"]["uid"],
                    annotations={"k8s.v1.cni.cncf.io/networks": "net-a"},
                )
            ),
            what="MODIFIED",
        )
        await kube.delete_pod(namespace=namespace, name="listed")
        await kube_mod.eventually(
            lambda: w.cached(namespace=namespace, name="listed") is None, what="DELETED"
        )
        assert gone == [pods.PodGone(namespace, "listed", listed["metadata"]["uid"])]
        # the watch is renewed every second (timeoutSeconds=1) and keeps delivering
        await anyio.sleep(2.5)
        await kube.create_pod(namespace=namespace, name="late", node=node_name)
        await kube_mod.eventually(lambda: w.cached(namespace=namespace, name="late") is not None)
        assert w.stats.watches >= 3
        assert w.stats.lists == 1
        assert {p.name for p in w.pods()} == {"watched", "late"}
        assert w.cached(namespace=namespace, name="elsewhere") is None
        assert w.cached(namespace=namespace, name="elsewhere-2") is None
        for name in ("watched", "late"):
            await w.get(namespace=namespace, name=name)
        assert w.gets == 0, "cached pods must not cost an API call"


async def test_two_nodes_each_see_their_own(
    kube: kube_mod.Kube, agent_client: k8s_client.Client, namespace: str
) -> None:
    node_a, node_b = kube_mod.unique("node"), kube_mod.unique("node")
    wa, wb = watcher(agent_client, node_a), watcher(agent_client, node_b)
    async with kube_mod.background(wa.run), kube_mod.background(wb.run):
        await kube_mod.eventually(lambda: wa.ready() and wb.ready())
        for i in range(3):
            await kube.create_pod(namespace=namespace, name=f"a{i}", node=node_a)
            await kube.create_pod(namespace=namespace, name=f"b{i}", node=node_b)
        await kube_mod.eventually(lambda: len(wa.pods()) == 3 and len(wb.pods()) == 3)
        assert {p.name for p in wa.pods()} == {"a0", "a1", "a2"}
        assert {p.name for p in wb.pods()} == {"b0", "b1", "b2"}
        # a pod on the other node is still a pod: found by the one GET, never cached
        pod = await wa.get(namespace=namespace, name="b0")
        assert pod.name == "b0"
        assert wa.cached(namespace=namespace, name="b0") is None


async def test_get_finds_pod_created_a_moment_before(
    kube: kube_mod.Kube, agent_client: k8s_client.Client, namespace: str, node_name: str
) -> None:
    w = watcher(agent_client, node_name)
    async with kube_mod.background(w.run):
        await kube_mod.eventually(w.ready)
        created = await kube.create_pod(namespace=namespace, name="fresh", node=node_name)
        pod = await w.get(namespace=namespace, name="fresh", uid=created["metadata"]["uid"])
        assert pod.uid == created["metadata"]["uid"]
        assert w.gets == 0, "the watch delivers within the wait: no GET"
        with anyio.fail_after(5):
            with pytest.raises(source.PodNotFoundError):
                await w.get(namespace=namespace, name="never-created")
        assert w.gets == 1


async def test_get_without_waiting_makes_one_get(
    kube: kube_mod.Kube, agent_client: k8s_client.Client, namespace: str, node_name: str
) -> None:
    w = watcher(agent_client, node_name, get_wait=0)
    async with kube_mod.background(w.run):
        await kube_mod.eventually(w.ready)
        created = await kube.create_pod(
            namespace=namespace, name="fresh", node=node_name, annotations={"cni": "x"}
        )
        pod = await w.get(namespace=namespace, name="fresh", uid=created["metadata"]["uid"])
        assert pod == source.Pod(namespace, "fresh", created["metadata"]["uid"], {"cni": "x"})
        assert w.gets in (0, 1)


async def test_get_before_first_list_waits_for_it(
    kube: kube_mod.Kube, agent_client: k8s_client.Client, namespace: str, node_name: str
) -> None:
    await kube.create_pod(namespace=namespace, name="early", node=node_name)
    w = watcher(agent_client, node_name)
    async with kube_mod.background(w.run):
        pod = await w.get(namespace=namespace, name="early")
        assert pod.name == "early"
        assert w.ready()


async def test_uid_mismatch_after_recreation(
    kube: kube_mod.Kube, agent_client: k8s_client.Client, namespace: str, node_name: str
) -> None:
    w = watcher(agent_client, node_name, get_wait=0.5)
    gone: list[pods.PodGone] = []
    w.on_deleted(gone.append)
    async with kube_mod.background(w.run):
        await kube_mod.eventually(w.ready)
        first = await kube.create_pod(namespace=namespace, name="p", node=node_name)
        old_uid = first["metadata"]["uid"]
        assert (await w.get(namespace=namespace, name="p", uid=old_uid)).uid == old_uid
        await kube.delete_pod(namespace=namespace, name="p")
        second = await kube.create_pod(
            namespace=namespace, name="p", node=node_name, annotations={"cni": "new"}
        )
        new_uid = second["metadata"]["uid"]
        pod = await w.get(namespace=namespace, name="p", uid=new_uid)
        assert pod.uid == new_uid
        assert pod.annotations == {"cni": "new"}
        with pytest.raises(source.PodNotFoundError, match="UID"):
            await w.get(namespace=namespace, name="p", uid=old_uid)
        await kube_mod.eventually(
            lambda: pods.PodGone(namespace, "p", old_uid) in gone, what="old uid reported gone"
        )


async def test_apiserver_restart(
    cluster: apiserver.Cluster,
    kube: kube_mod.Kube,
    agent_client: k8s_client.Client,
    namespace: str,
    node_name: str,
) -> None:
    """Down: cached pods are served, unknown pods are 'try later'; up: the watch catches up."""
    kept = await kube.create_pod(namespace=namespace, name="kept", node=node_name)
    w = watcher(agent_client, node_name)
    async with kube_mod.background(w.run):
        await kube_mod.eventually(lambda: w.cached(namespace=namespace, name="kept") is not None)
        async with cluster.apiserver_stopped():
            pod = await w.get(namespace=namespace, name="kept", uid=kept["metadata"]["uid"])
            assert pod.name == "kept"
            with anyio.fail_after(5):
                with pytest.raises(source.PodSourceUnavailableError):
                    await w.get(namespace=namespace, name="unknown")
            await kube_mod.eventually(lambda: w.stats.failures >= 2, what="reconnect attempts")
            assert w.ready(), "ready stays true: the cache is still served"
        await kube.create_pod(namespace=namespace, name="after", node=node_name)
        await kube_mod.eventually(
            lambda: w.cached(namespace=namespace, name="after") is not None,
            within=20,
            what="watch caught up after restart",
        )
        assert w.cached(namespace=namespace, name="kept") is not None


async def test_relist_after_compaction(
    cluster: apiserver.Cluster,
    kube: kube_mod.Kube,
    agent_client: k8s_client.Client,
    namespace: str,
    node_name: str,
) -> None:
    """The watch's resourceVersion is compacted away while the apiserver is down, and a pod
    vanishes behind its back (deleted straight from etcd): 410 Gone -> relist, and the
    relist reports the vanished pod as gone."""
    await kube.create_pod(namespace=namespace, name="stays", node=node_name)
    doomed = await kube.create_pod(namespace=namespace, name="doomed", node=node_name)
    w = watcher(agent_client, node_name)
    gone: list[pods.PodGone] = []
    w.on_deleted(gone.append)
    async with kube_mod.background(w.run):
        await kube_mod.eventually(lambda: len(w.pods()) == 2)
        async with cluster.apiserver_stopped():
            assert cluster.etcd_delete(apiserver.pod_key(namespace, "doomed")) == 1
            cluster.etcd_put("/genie-test/bump", kube_mod.unique())
            cluster.compact_etcd()
        await kube_mod.eventually(lambda: w.stats.gone >= 1, within=20, what="410 Gone seen")
        await kube_mod.eventually(lambda: w.stats.lists >= 2, what="relisted")
        assert gone == [pods.PodGone(namespace, "doomed", doomed["metadata"]["uid"])]
        assert {p.name for p in w.pods()} == {"stays"}
        await kube.create_pod(namespace=namespace, name="new", node=node_name)
        await kube_mod.eventually(lambda: w.cached(namespace=namespace, name="new") is not None)
