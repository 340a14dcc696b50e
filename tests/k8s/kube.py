"""Async helpers the Kubernetes tests use to act on the test cluster as admin.

One `Kube` per test (its aiohttp session lives on the test's event loop): namespaces, pods
bound to a node (no scheduler, no kubelet: `spec.nodeName` set, deleted with grace 0), a
pod's annotations and Events, and NetworkAttachmentDefinitions.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client import exceptions as k8s_exceptions

from genie.k8s import client as genie_client

NAD_GROUP: Final = "k8s.cni.cncf.io"
NAD_VERSION: Final = "v1"
NAD_PLURAL: Final = "network-attachment-definitions"


def unique(prefix: str = "t") -> str:
    """A DNS-label-safe unique name such as `t-1a2b3c4d`."""
    return f"{prefix}-{secrets.token_hex(4)}"


class Kube:
    """Admin access to the test cluster from async tests."""

    def __init__(self, api: k8s_client.ApiClient) -> None:
        self.api = api
        self.core = k8s_client.CoreV1Api(api)
        self.custom = k8s_client.CustomObjectsApi(api)
        self._pods: set[tuple[str, str]] = set()

    async def create_namespace(self, name: str | None = None) -> str:
        """Create a namespace (a unique one when no name is given); its name. 409 is fine."""
        name = name or unique("ns")
        try:
            await self.core.create_namespace({"metadata": {"name": name}})  # type: ignore[arg-type]
        except k8s_exceptions.ApiException as exc:
            if exc.status != 409:
                raise
        return name

    async def create_pod(
        self,
        *,
        namespace: str,
        name: str,
        node: str,
        annotations: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """A pod bound to `node` (never runs: no kubelet); the created object as a dict."""
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": dict(annotations or {}),
                "labels": dict(labels or {}),
            },
            "spec": {
                "nodeName": node,
                "automountServiceAccountToken": False,
                "containers": [{"name": "c", "image": "registry.invalid/pause:1"}],
            },
        }
        pod = await self.core.create_namespaced_pod(namespace, body)  # type: ignore[arg-type]
        self._pods.add((namespace, name))
        return dict(self.api.sanitize_for_serialization(pod))

    async def delete_pod(self, *, namespace: str, name: str) -> bool:
        """Delete now (grace 0); False when it was already gone."""
        self._pods.discard((namespace, name))
        try:
            await self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except k8s_exceptions.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def annotate_pod(
        self, *, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> dict[str, Any]:
        """Patch annotations (None removes one); the patched pod as a dict."""
        pod = await self.core.patch_namespaced_pod(
            name,
            namespace,
            {"metadata": {"annotations": dict(annotations)}},  # strategic merge: a map merges
        )
        return dict(self.api.sanitize_for_serialization(pod))

    async def get_pod(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            pod = await self.core.read_namespaced_pod(name, namespace)
        except k8s_exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(self.api.sanitize_for_serialization(pod))

    async def pod_annotations(self, *, namespace: str, name: str) -> dict[str, str]:
        pod = await self.get_pod(namespace=namespace, name=name)
        if pod is None:
            raise LookupError(f"pod {namespace}/{name} not found")
        return dict(pod["metadata"].get("annotations") or {})

    async def pod_events(
        self, *, namespace: str, name: str, uid: str | None = None
    ) -> list[dict[str, Any]]:
        """core/v1 Events whose involvedObject is the pod (and uid, when given), oldest first."""
        selector = f"involvedObject.kind=Pod,involvedObject.name={name}"
        if uid:
            selector += f",involvedObject.uid={uid}"
        events = await self.core.list_namespaced_event(namespace, field_selector=selector)
        docs = [dict(self.api.sanitize_for_serialization(e)) for e in events.items]
        docs.sort(key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["name"]))
        return docs

    async def create_nad(
        self, *, namespace: str, name: str, config: Mapping[str, Any] | str | None
    ) -> dict[str, Any]:
        """A NetworkAttachmentDefinition; `config` a dict (JSON-encoded), a string, or None
        (no spec.config: the net-dir file of that name)."""
        spec: dict[str, Any] = {}
        if config is not None:
            spec["config"] = config if isinstance(config, str) else json.dumps(config)
        body = {
            "apiVersion": f"{NAD_GROUP}/{NAD_VERSION}",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
        doc = await self.custom.create_namespaced_custom_object(
            NAD_GROUP, NAD_VERSION, namespace, NAD_PLURAL, body
        )
        return dict(doc)

    async def update_nad(
        self, *, namespace: str, name: str, config: Mapping[str, Any] | str
    ) -> dict[str, Any]:
        value = config if isinstance(config, str) else json.dumps(config)
        # a dict body would go out as json-patch+json (the client's first choice for CRs);
        # the stubs do not declare _content_type
        doc = await self.custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
            NAD_GROUP,
            NAD_VERSION,
            namespace,
            NAD_PLURAL,
            name,
            {"spec": {"config": value}},
            _content_type="application/merge-patch+json",
        )
        return dict(doc)

    async def delete_nad(self, *, namespace: str, name: str) -> None:
        await self.custom.delete_namespaced_custom_object(
            NAD_GROUP, NAD_VERSION, namespace, NAD_PLURAL, name
        )

    async def cleanup(self) -> None:
        """Delete the pods this helper created and has not deleted (best effort)."""
        for namespace, name in sorted(self._pods):
            with contextlib.suppress(Exception):
                await self.delete_pod(namespace=namespace, name=name)


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], *, within: float = 10, what: str = ""
) -> None:
    """Poll `check` (sync or async) every 20 ms until true; AssertionError after `within` s."""
    with anyio.move_on_after(within):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await anyio.sleep(0.02)
    raise AssertionError(f"not true after {within} s: {what or check}")


@asynccontextmanager
async def background(run: Callable[[], Coroutine[Any, Any, Any]]) -> AsyncIterator[None]:
    """Run `run()` as a task for the block; cancelled at exit. Its failure fails the test."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def admin(kubeconfig: Path) -> AsyncIterator[Kube]:
    """A Kube logged in with the admin kubeconfig; closed (and its pods deleted) on exit."""
    configuration = k8s_client.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration
    )
    api = k8s_client.ApiClient(configuration)
    kube = Kube(api)
    try:
        yield kube
    finally:
        try:
            await kube.cleanup()
        finally:
            await genie_client.close_api(api)
