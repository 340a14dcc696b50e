"""genie.k8s.client and genie.k8s.errors: where the client comes from, and error mapping.

The mapping tests use real failures: a real apiserver's 404/403/409/422 answers, a closed
port (connection refused), and the apiserver stopped.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import aiohttp
import pytest
import yaml
from kubernetes_asyncio.client import exceptions as k8s_exceptions

from genie.k8s import client as k8s_client
from genie.k8s import errors
from tests.k8s import apiserver
from tests.k8s import kube as kube_mod


def test_no_kubernetes_is_none_without_importing_the_client(tmp_path: Path) -> None:
    assert not k8s_client.configured(kubeconfig=None, environ={})
    assert not k8s_client.in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert k8s_client.configured(kubeconfig=tmp_path / "kc", environ={})


@pytest.mark.anyio
async def test_connect_none_and_config_errors(tmp_path: Path) -> None:
    assert await k8s_client.connect(kubeconfig=None, environ={}) is None
    with pytest.raises(k8s_client.ConfigError, match="token"):
        await k8s_client.connect(
            kubeconfig=None,
            environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1"},
            service_account_dir=tmp_path,
        )
    (tmp_path / "token").write_text("t")
    with pytest.raises(k8s_client.ConfigError, match="cannot load"):  # no ca.crt
        await k8s_client.connect(
            kubeconfig=None,
            environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1"},
            service_account_dir=tmp_path,
        )
    with pytest.raises(k8s_client.ConfigError):
        await k8s_client.connect(kubeconfig=tmp_path / "missing")
    (tmp_path / "garbage").write_text("::: not yaml [")
    with pytest.raises(k8s_client.ConfigError):
        await k8s_client.connect(kubeconfig=tmp_path / "garbage")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.anyio
async def test_connection_refused_is_unavailable(tmp_path: Path) -> None:
    kc = apiserver.write_kubeconfig(
        tmp_path / "kc", server=f"https://127.0.0.1:{_free_port()}", token="x", user="u"
    )
    c = await k8s_client.connect(kubeconfig=kc)
    assert c is not None
    try:
        with pytest.raises(errors.ApiUnavailableError) as info, errors.translated("list"):
            await c.core.list_namespace()
        assert info.value.retryable
        assert isinstance(info.value.__cause__, aiohttp.ClientError | OSError)
    finally:
        await c.close()


def test_status_mapping() -> None:
    cases = {
        404: errors.NotFoundError,
        403: errors.ForbiddenError,
        401: errors.UnauthorizedError,
        409: errors.ConflictError,
        410: errors.GoneError,
        422: errors.InvalidError,
        429: errors.ApiUnavailableError,
        500: errors.ApiUnavailableError,
        503: errors.ApiUnavailableError,
        418: errors.ApiClientError,
    }
    for status, cls in cases.items():
        exc = errors.for_status(status, "m")
        assert type(exc) is cls, status
        assert exc.status == status
    assert errors.translate(ValueError("x")) is None
    with pytest.raises(ValueError, match="not an API error"), errors.translated():
        raise ValueError("not an API error")
    raw = k8s_exceptions.ApiException(status=0, reason="Cannot prepare")
    mapped = errors.translate(raw)
    assert isinstance(mapped, errors.ApiUnavailableError)


@pytest.mark.k8s
@pytest.mark.anyio
async def test_real_answers_map(
    kube: kube_mod.Kube, agent_client: k8s_client.Client, namespace: str
) -> None:
    """The agent's token against the real apiserver: 404, 403 (RBAC), 409, 422."""
    with pytest.raises(errors.NotFoundError, match="not found") as nf, errors.translated("read"):
        await agent_client.core.read_namespaced_pod("nope", namespace)
    assert isinstance(nf.value.__cause__, k8s_exceptions.ApiException)
    assert nf.value.reason == "NotFound"
    with pytest.raises(errors.ForbiddenError, match="forbidden"), errors.translated():
        await agent_client.core.list_namespaced_secret(namespace)
    await kube.create_pod(namespace=namespace, name="p", node="n")
    body = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    with pytest.raises(errors.ConflictError), errors.translated():
        await kube.core.create_namespaced_pod(namespace, body)  # type: ignore[arg-type]
    bad = {"metadata": {"name": "Bad_Name"}}
    with pytest.raises(errors.InvalidError), errors.translated():
        await kube.core.create_namespaced_pod(namespace, bad)  # type: ignore[arg-type]


@pytest.fixture
def service_account_dir(cluster: apiserver.Cluster, agent_kubeconfig: Path, tmp_path: Path) -> Path:
    """What the kubelet mounts in a pod: the agent's token and the cluster CA."""
    token = yaml.safe_load(agent_kubeconfig.read_text())["users"][0]["user"]["token"]
    (tmp_path / "token").write_text(token)
    shutil.copy(cluster.root / "certs" / "apiserver.crt", tmp_path / "ca.crt")
    return tmp_path


@pytest.mark.k8s
@pytest.mark.anyio
async def test_in_cluster_config(cluster: apiserver.Cluster, service_account_dir: Path) -> None:
    """The service-account path: token and CA files, KUBERNETES_SERVICE_HOST/PORT; TLS is
    verified against the apiserver's own certificate."""
    tmp_path = service_account_dir
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(cluster.port)}
    c = await k8s_client.connect(kubeconfig=None, environ=env, service_account_dir=tmp_path)
    assert c is not None
    try:
        assert c.origin == "in-cluster"
        with errors.translated():
            pods = await c.core.list_pod_for_all_namespaces(limit=1)
        assert pods.items is not None
        with pytest.raises(errors.ForbiddenError), errors.translated():
            await c.core.list_node()
    finally:
        await c.close()
