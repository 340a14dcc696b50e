"""Pod-gone sweep with the real ADD path, real plugins and netns, and a real event store.

A pod is attached through genie.services.attach exactly as a CNI ADD would; the sweep is told
the pod was deleted (or, at start-up, is not in the first pod list) and must release it from
the log after the grace period, unless a runtime DEL came first. The truth checked is the
log, the pod netns links and host-local's allocation files.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from genie.cni import wire
from genie.domain import events as ev
from genie.networks import registry as reg
from genie.pods import source as pods
from genie.services import attach, context, delegates, keyed_lock, release, sweep
from genie.store import recorder
from tests.k8s import writeback_kit as kit
from tests.support import cniconf, plugins
from tests.support import netns as nskit

pytestmark = [pytest.mark.anyio, pytest.mark.netns]
GRACE = 1.0


class DictPods:
    """A PodSource over a dict: the pods and `cni` annotations the test declares."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], pods.Pod] = {}

    def add(self, *, networks: str) -> ev.PodRef:
        ref = ev.PodRef(namespace="tenant", name=f"web-{secrets.token_hex(3)}", uid=_uid())
        self.pods[(ref.namespace, ref.name)] = pods.Pod(
            namespace=ref.namespace, name=ref.name, uid=ref.uid, annotations={"cni": networks}
        )
        return ref

    async def get(self, *, namespace: str, name: str, uid: str = "") -> pods.Pod:
        pod = self.pods.get((namespace, name))
        if pod is None or (uid and pod.uid != uid):
            raise pods.PodNotFoundError(f"{namespace}/{name}")
        return pod

    def ready(self) -> bool:
        return True


def _uid() -> str:
    raw = secrets.token_hex(16)
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


@pytest.fixture
async def svc(
    in_node_netns: str, tmp_path: Path, networks: cniconf.NetworkFactory, cni_bin_dir: Path
) -> AsyncIterator[context.Services]:
    networks.bridge("tenant-a")
    networks.bridge("tenant-b")
    async with await recorder.EventStore.open(tmp_path / "events.db") as store:
        yield context.Services(
            store=store,
            networks=reg.NetworkRegistry(networks.net_dir),
            pods=DictPods(),
            runner=delegates.DelegateRunner(cni_path=[tmp_path / "bin", cni_bin_dir], timeout=20),
            locks=keyed_lock.KeyedLock(),
            default_network="tenant-a",
            ready=lambda: True,
        )


def _pods(svc: context.Services) -> DictPods:
    assert isinstance(svc.pods, DictPods)
    return svc.pods


def _request(pod: ev.PodRef, *, netns: str, cid: str, command: str = "ADD") -> wire.CniRequest:
    config = {"cniVersion": "1.0.0", "name": "genie", "type": "genie"}
    return wire.CniRequest(
        command=command,
        container_id=cid,
        netns=nskit.netns_path(netns),
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


async def _add(
    svc: context.Services, make_pod_netns: Callable[[], str], *, networks: str
) -> tuple[ev.PodRef, str, str]:
    """ADD a new pod through the real ADD path; (pod, container id, pod netns name)."""
    pod = _pods(svc).add(networks=networks)
    netns = make_pod_netns()
    cid = kit.container_id()
    await attach.add(svc, _request(pod, netns=netns, cid=cid))
    return pod, cid, netns


async def _kinds(svc: context.Services, cid: str) -> list[str]:
    return [rec.event.kind async for rec in svc.store.read(stream=cid)]


async def _last(svc: context.Services, cid: str) -> ev.Event:
    return [rec.event async for rec in svc.store.read(stream=cid)][-1]


@pytest.fixture
async def running() -> AsyncIterator[Callable[[sweep.PodGoneSweep], None]]:
    """Start sweeps in a task group that is cancelled at teardown."""
    async with anyio.create_task_group() as tg:

        def start(s: sweep.PodGoneSweep) -> None:
            tg.start_soon(s.run)

        yield start
        tg.cancel_scope.cancel()


async def test_deleted_pod_is_released_after_the_grace_period(
    svc: context.Services,
    make_pod_netns: Callable[[], str],
    networks: cniconf.NetworkFactory,
    running: Callable[[sweep.PodGoneSweep], None],
) -> None:
    pod, cid, netns = await _add(svc, make_pod_netns, networks="tenant-a,tenant-b")
    other, other_cid, _ = await _add(svc, make_pod_netns, networks="tenant-a")
    assert {"eth0", "eth1"} <= nskit.link_names(netns)
    assert len(cniconf.host_local_allocations(networks.data_dir)["tenant-a"]) == 2
    sweeper = sweep.PodGoneSweep(svc, grace=GRACE)
    running(sweeper)

    sweeper.pod_deleted(ev.PodRef(namespace=pod.namespace, name=pod.name, uid=pod.uid))
    await anyio.sleep(GRACE / 2)
    assert cid in svc.store.state.attachments  # the runtime still has time to DEL
    took = await kit.wait_until(lambda: cid not in svc.store.state.attachments, within=10)

    assert GRACE / 2 < took < GRACE + 2
    assert (await _kinds(svc, cid))[-4:] == [
        "DelRequested",
        "DelegateDeleted",
        "DelegateDeleted",
        "Released",
    ]
    released = await _last(svc, cid)
    assert isinstance(released, ev.Released)
    assert released.initiator == ev.INITIATOR_POD_GONE
    assert pod.uid in released.reason
    assert not {"eth0", "eth1"} & nskit.link_names(netns)
    # the other pod keeps its attachment and its one address
    assert other_cid in svc.store.state.attachments
    assert other.uid != pod.uid
    other_result = svc.store.state.attachments[other_cid].result
    assert other_result is not None
    other_ip = other_result["ips"][0]["address"].split("/")[0]
    assert cniconf.host_local_allocations(networks.data_dir) == {"tenant-a": [other_ip]}
    assert sweeper.released == 1
    assert sweeper.scheduled() == []


async def test_runtime_del_within_the_grace_period_wins(
    svc: context.Services,
    make_pod_netns: Callable[[], str],
    networks: cniconf.NetworkFactory,
    running: Callable[[sweep.PodGoneSweep], None],
) -> None:
    pod, cid, netns = await _add(svc, make_pod_netns, networks="tenant-a,tenant-b")
    sweeper = sweep.PodGoneSweep(svc, grace=GRACE)
    running(sweeper)

    sweeper.pod_deleted(pod)
    await release.delete(svc, container_id=cid, ifname="eth0", netns=nskit.netns_path(netns))
    await kit.wait_until(lambda: not sweeper.scheduled(), within=GRACE + 5)

    assert (await _kinds(svc, cid))[-1] == "DelCompleted"
    assert "Released" not in await _kinds(svc, cid)
    assert sweeper.released == 0
    assert cniconf.host_local_allocations(networks.data_dir) == {}


async def test_startup_reconcile_sweeps_pods_missing_from_the_first_list(
    svc: context.Services,
    make_pod_netns: Callable[[], str],
    networks: cniconf.NetworkFactory,
    running: Callable[[sweep.PodGoneSweep], None],
) -> None:
    kept, kept_cid, _ = await _add(svc, make_pod_netns, networks="tenant-a")
    gone, gone_cid, _ = await _add(svc, make_pod_netns, networks="tenant-a,tenant-b")
    # an attachment with no pod name (podman, static) is never compared with a pod list
    anonymous = kit.container_id()
    anon_netns = make_pod_netns()
    await attach.add(svc, _request(ev.PodRef("", "", ""), netns=anon_netns, cid=anonymous))
    listed = False
    sweeper = sweep.PodGoneSweep(svc, grace=GRACE)
    running(sweeper)

    async with anyio.create_task_group() as tg:

        async def reconcile() -> None:
            count = await sweeper.reconcile_when_ready(
                ready=lambda: listed, pods=lambda: [kept], poll=0.02
            )
            assert count == 1

        tg.start_soon(reconcile)
        await anyio.sleep(0.1)
        assert sweeper.scheduled() == []  # waits for the first list
        listed = True

    assert sweeper.scheduled() == [gone]
    await kit.wait_until(lambda: gone_cid not in svc.store.state.attachments, within=GRACE + 5)
    assert kept_cid in svc.store.state.attachments
    assert anonymous in svc.store.state.attachments
    released = await _last(svc, gone_cid)
    assert isinstance(released, ev.Released)
    assert "absent from the first pod list" in released.reason


async def test_pod_back_in_the_cache_is_not_swept(
    svc: context.Services,
    make_pod_netns: Callable[[], str],
    running: Callable[[sweep.PodGoneSweep], None],
) -> None:
    pod, cid, _ = await _add(svc, make_pod_netns, networks="tenant-a")
    sweeper = sweep.PodGoneSweep(svc, grace=0.2, present=lambda p: p.uid == pod.uid)
    running(sweeper)

    sweeper.pod_deleted(pod)
    await kit.wait_until(lambda: not sweeper.scheduled(), within=5)

    assert cid in svc.store.state.attachments
    assert sweeper.released == 0


async def test_a_failed_delegate_del_is_retried_until_it_works(
    svc: context.Services,
    tmp_path: Path,
    make_pod_netns: Callable[[], str],
    networks: cniconf.NetworkFactory,
    running: Callable[[sweep.PodGoneSweep], None],
) -> None:
    failing = tmp_path / "del-fails"
    failing.touch()
    result = json.dumps(plugins.RESULT)
    plugins.write_script_plugin(
        tmp_path / "bin",
        "flaky",
        f"""
cat > /dev/null
if [ "$CNI_COMMAND" = DEL ] && [ -e {failing} ]; then
  printf '{{"cniVersion":"1.0.0","code":11,"msg":"device busy"}}'
  exit 1
fi
[ "$CNI_COMMAND" = ADD ] && printf '%s' '{result}'
exit 0
""",
    )
    networks.write("flaky", [{"type": "flaky"}])
    pod, cid, _ = await _add(svc, make_pod_netns, networks="tenant-a,flaky")
    sweeper = sweep.PodGoneSweep(svc, grace=0.2, retry=0.3)
    running(sweeper)

    sweeper.pod_deleted(pod)
    await kit.wait_until(lambda: sweeper.failures >= 2, within=10)
    att = svc.store.state.attachments[cid]
    assert att.initiator == ev.INITIATOR_POD_GONE
    assert "DelegateDeleteFailed" in await _kinds(svc, cid)
    failing.unlink()
    await kit.wait_until(lambda: cid not in svc.store.state.attachments, within=10)

    released = await _last(svc, cid)
    assert isinstance(released, ev.Released)
    assert cniconf.host_local_allocations(networks.data_dir) == {}
    assert sweeper.released == 1
