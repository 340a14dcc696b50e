"""The test cluster itself: apiserver up in RBAC mode, and deploy/rbac.yaml is least privilege.

The agent's token must be able to do exactly what genie needs (pods get/list/watch/patch on
every namespace, core Events create, NADs get/list/watch) and nothing more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s import apiserver
from tests.k8s import kube as kube_mod

pytestmark = [pytest.mark.k8s, pytest.mark.anyio]


def _token(kubeconfig: Path) -> str:
    doc = yaml.safe_load(kubeconfig.read_text())
    return str(doc["users"][0]["user"]["token"])


def _can(cluster: apiserver.Cluster, token: str, attrs: dict[str, Any]) -> bool:
    """SelfSubjectAccessReview as the token's user."""
    doc = cluster.call(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs},
        },
        token=token,
    )
    return bool(doc["status"]["allowed"])


ALLOWED = [
    {"verb": v, "resource": "pods", "namespace": ns}
    for v in ("get", "list", "watch", "patch")
    for ns in ("default", "tenant-x", "")
] + [
    {"verb": "create", "resource": "events", "namespace": "default"},
    *(
        {
            "verb": v,
            "group": "k8s.cni.cncf.io",
            "resource": "network-attachment-definitions",
            "namespace": "default",
        }
        for v in ("get", "list", "watch")
    ),
]

DENIED = [
    {"verb": "delete", "resource": "pods", "namespace": "default"},
    {"verb": "create", "resource": "pods", "namespace": "default"},
    {"verb": "update", "resource": "pods", "namespace": "default"},
    {"verb": "list", "resource": "secrets", "namespace": "default"},
    {"verb": "get", "resource": "secrets", "namespace": "kube-system"},
    {"verb": "list", "resource": "configmaps", "namespace": "default"},
    {"verb": "list", "resource": "nodes"},
    {"verb": "patch", "resource": "pods", "subresource": "status", "namespace": "default"},
    {"verb": "create", "resource": "pods", "subresource": "exec", "namespace": "default"},
    {"verb": "list", "resource": "events", "namespace": "default"},
    {"verb": "patch", "resource": "events", "namespace": "default"},
    {"verb": "create", "group": "events.k8s.io", "resource": "events", "namespace": "default"},
    {
        "verb": "create",
        "group": "k8s.cni.cncf.io",
        "resource": "network-attachment-definitions",
        "namespace": "default",
    },
    {
        "verb": "create",
        "resource": "serviceaccounts",
        "subresource": "token",
        "namespace": "kube-system",
    },
]


def test_admin_is_ready(cluster: apiserver.Cluster) -> None:
    status, body = cluster.request("GET", "/readyz")
    assert status == 200, body
    version = cluster.call("GET", "/version")
    assert version["gitVersion"] == "v1.20.2"


def test_anonymous_and_bad_token_rejected(cluster: apiserver.Cluster) -> None:
    status, _ = cluster.request("GET", "/api/v1/pods", token="not-a-token")
    assert status == 401


@pytest.mark.parametrize(
    "attrs", ALLOWED, ids=lambda a: f"{a['verb']}-{a['resource']}-{a.get('namespace') or 'all'}"
)
def test_agent_role_allows(
    cluster: apiserver.Cluster, agent_kubeconfig: Path, attrs: dict[str, Any]
) -> None:
    assert _can(cluster, _token(agent_kubeconfig), attrs)


@pytest.mark.parametrize(
    "attrs",
    DENIED,
    ids=lambda a: (
        f"{a['verb']}-{a.get('group', 'core')}-{a['resource']}-{a.get('subresource', '')}"
    ),
)
def test_agent_role_denies(
    cluster: apiserver.Cluster, agent_kubeconfig: Path, attrs: dict[str, Any]
) -> None:
    assert not _can(cluster, _token(agent_kubeconfig), attrs)


async def test_agent_token_real_requests(
    cluster: apiserver.Cluster, agent_kubeconfig: Path, kube: kube_mod.Kube, namespace: str
) -> None:
    """Not just the review: real calls with the token get 403 or 2xx as the role says."""
    token = _token(agent_kubeconfig)
    await kube.create_pod(namespace=namespace, name="p", node="n1")
    ok = [
        ("GET", f"/api/v1/namespaces/{namespace}/pods/p", None),
        ("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", None),
        ("GET", "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions", None),
    ]
    for method, path, body in ok:
        status, doc = cluster.request(method, path, body, token=token)
        assert status == 200, (path, doc)
    status, doc = cluster.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/p",
        {"metadata": {"annotations": {"x": "y"}}},
        token=token,
        content_type="application/merge-patch+json",
    )
    assert status == 200, doc
    status, doc = cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/events",
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "p.1", "namespace": namespace},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": namespace},
            "reason": "Test",
            "message": "m",
            "type": "Normal",
        },
        token=token,
    )
    assert status == 201, doc
    denied = [
        ("DELETE", f"/api/v1/namespaces/{namespace}/pods/p"),
        ("GET", f"/api/v1/namespaces/{namespace}/secrets"),
        ("GET", "/api/v1/nodes"),
        ("GET", f"/api/v1/namespaces/{namespace}/events"),
    ]
    for method, path in denied:
        status, doc = cluster.request(method, path, token=token)
        assert status == 403, (method, path, doc)
    assert await kube.get_pod(namespace=namespace, name="p") is not None
    events = await kube.pod_events(namespace=namespace, name="p")
    assert [e["reason"] for e in events] == ["Test"]


def test_rbac_manifest_grants_nothing_else() -> None:
    """The ClusterRole's rules are exactly the three genie needs."""
    from tests.k8s.conftest import RBAC

    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    assert [d["kind"] for d in docs] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]
    rules = {
        (tuple(r["apiGroups"]), tuple(r["resources"])): sorted(r["verbs"]) for r in docs[1]["rules"]
    }
    assert rules == {
        (("",), ("pods",)): ["get", "list", "patch", "watch"],
        (("",), ("events",)): ["create"],
        (("k8s.cni.cncf.io",), ("network-attachment-definitions",)): ["get", "list", "watch"],
    }


async def test_apiserver_restart_keeps_data(
    cluster: apiserver.Cluster, kube: kube_mod.Kube, namespace: str
) -> None:
    await kube.create_pod(namespace=namespace, name="keep", node="n1")
    async with cluster.apiserver_stopped():
        with pytest.raises(apiserver.HarnessError):
            cluster.request("GET", "/readyz", timeout=2)
    assert await kube.get_pod(namespace=namespace, name="keep") is not None


def test_etcd_helpers(cluster: apiserver.Cluster) -> None:
    before = cluster.etcd_revision()
    after = cluster.etcd_put("/genie-test/bump", "x")
    assert after > before
    assert cluster.compact_etcd() == after
    assert cluster.etcd_delete("/genie-test/bump") == 1
