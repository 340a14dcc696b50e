"""Fixtures for the Kubernetes tests: one real etcd + kube-apiserver per session.

    k8s_apiserver_binary  path of the cached kube-apiserver (built before the first test)
    cluster               session-scoped apiserver.Cluster: admin_kubeconfig, url,
                          stop_apiserver()/start_apiserver(), compact_etcd(), request()...
                          The NAD CRD (deploy/nad-crd.yaml) is installed and established.
    agent_kubeconfig      kubeconfig of ServiceAccount kube-system/genie bound to exactly
                          deploy/rbac.yaml (token from the TokenRequest API)
    kube                  per-test async admin helper (kube.Kube); deletes its pods at teardown
    agent_client          per-test genie.k8s.client.Client with the agent kubeconfig
    namespace             a fresh namespace for the test
    node_name             a fresh node name for the test (pods bound to it)

Mark tests `@pytest.mark.k8s`. The apiserver binary is built (first run only, ~6-10 min) when
collection finishes and any k8s test is selected, outside the per-test timeout. The tests
are skipped only when the build fails; a cluster that does not start is a failure.
A test that stops the apiserver must restart it (`async with cluster.apiserver_stopped():`),
since the cluster is shared by the session.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from genie.k8s import client as k8s_client
from tests.k8s import apiserver
from tests.k8s import kube as kube_mod

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "deploy" / "rbac.yaml"
NAD_CRD = REPO / "deploy" / "nad-crd.yaml"
NAD_CRD_NAME = "network-attachment-definitions.k8s.cni.cncf.io"

_build: dict[str, Path | str] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if not any(item.get_closest_marker("k8s") for item in session.items):
        return
    try:
        _build["binary"] = apiserver.build_apiserver()
    except (apiserver.HarnessError, OSError) as exc:
        _build["error"] = str(exc)


@pytest.fixture(scope="session")
def k8s_apiserver_binary() -> Path:
    if "binary" not in _build and "error" not in _build:
        try:  # collected without the marker hook (e.g. fixture used from elsewhere)
            _build["binary"] = apiserver.build_apiserver()
        except (apiserver.HarnessError, OSError) as exc:
            _build["error"] = str(exc)
    if "error" in _build:
        pytest.skip(f"kube-apiserver could not be built: {_build['error']}")
    return Path(_build["binary"])


@pytest.fixture(scope="session")
def cluster(k8s_apiserver_binary: Path) -> Iterator[apiserver.Cluster]:
    root = Path(
        tempfile.mkdtemp(prefix="genie-k8s-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    try:
        with apiserver.Cluster.running(binary=k8s_apiserver_binary, root=root) as c:
            c.apply_file(NAD_CRD)
            c.wait_crd(NAD_CRD_NAME)
            yield c
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def agent_kubeconfig(cluster: apiserver.Cluster) -> Path:
    return cluster.agent_kubeconfig(cluster.root / "genie.kubeconfig", rbac=RBAC)


@pytest.fixture
async def kube(cluster: apiserver.Cluster) -> AsyncIterator[kube_mod.Kube]:
    if not cluster.apiserver_running():  # a previous test failed while it was stopped
        cluster.start_apiserver()
    async with kube_mod.admin(cluster.admin_kubeconfig) as k:
        yield k


@pytest.fixture
async def namespace(kube: kube_mod.Kube) -> str:
    return await kube.create_namespace()


@pytest.fixture
def node_name() -> str:
    return kube_mod.unique("node")


@pytest.fixture
async def agent_client(agent_kubeconfig: Path) -> AsyncIterator[k8s_client.Client]:
    """genie's own client (genie.k8s.client) logged in as the agent's ServiceAccount."""
    c = await k8s_client.connect(kubeconfig=agent_kubeconfig)
    assert c is not None
    try:
        yield c
    finally:
        await c.close()
