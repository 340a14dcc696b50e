"""A typed CRI v1 client (RuntimeService, ImageService): the calls kubelet makes, for tests.

The messages come typed from `container-runtime-interface-api` (cri_api.v1.api_pb2 has a
.pyi), but grpcio ships no type stubs (types-grpcio is no project dependency) and the
generated service stubs (api_pb2_grpc) are untyped. This module is the one boundary: both
are imported dynamically, and every method hands back a typed api_pb2 message, so tests
stay `mypy --strict` clean without ignores or overrides.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from cri_api.v1 import api_pb2

_grpc: Final = importlib.import_module("grpc")
_services: Final = importlib.import_module("cri_api.v1.api_pb2_grpc")


class CriError(RuntimeError):
    """A CRI call failed; `code` is the gRPC status name (NOT_FOUND, UNKNOWN...)."""

    def __init__(self, method: str, code: str, details: str) -> None:
        super().__init__(f"{method}: {code}: {details}")
        self.code = code
        self.details = details


class Client:
    """Blocking CRI v1 calls over a unix socket (gRPC channels are thread-safe)."""

    def __init__(self, socket: Path, *, timeout: float = 60.0) -> None:
        self._channel: Any = _grpc.insecure_channel(f"unix://{socket}")
        self._runtime: Any = _services.RuntimeServiceStub(self._channel)
        self._images: Any = _services.ImageServiceStub(self._channel)
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def _call(self, stub: Any, method: str, request: Any, timeout: float | None) -> Any:
        try:
            return getattr(stub, method)(request, timeout=timeout or self.timeout)
        except _grpc.RpcError as exc:
            raise CriError(method, exc.code().name, exc.details() or "") from exc

    # -- RuntimeService -------------------------------------------------------------
    def version(self, *, timeout: float | None = None) -> api_pb2.VersionResponse:
        reply: api_pb2.VersionResponse = self._call(
            self._runtime, "Version", api_pb2.VersionRequest(version="v1"), timeout
        )
        return reply

    def run_pod_sandbox(self, config: api_pb2.PodSandboxConfig) -> str:
        """The new sandbox's id (containerd runs CNI ADD before it returns)."""
        reply: api_pb2.RunPodSandboxResponse = self._call(
            self._runtime, "RunPodSandbox", api_pb2.RunPodSandboxRequest(config=config), None
        )
        return reply.pod_sandbox_id

    def pod_sandbox_status(
        self, sandbox_id: str, *, verbose: bool = False
    ) -> api_pb2.PodSandboxStatusResponse:
        request = api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=verbose)
        reply: api_pb2.PodSandboxStatusResponse = self._call(
            self._runtime, "PodSandboxStatus", request, None
        )
        return reply

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        request = api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox_id)
        self._call(self._runtime, "StopPodSandbox", request, None)

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        request = api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id)
        self._call(self._runtime, "RemovePodSandbox", request, None)

    def list_pod_sandboxes(self) -> list[api_pb2.PodSandbox]:
        reply: api_pb2.ListPodSandboxResponse = self._call(
            self._runtime, "ListPodSandbox", api_pb2.ListPodSandboxRequest(), None
        )
        return list(reply.items)

    # -- ImageService ---------------------------------------------------------------
    def image_status(self, ref: str) -> api_pb2.ImageStatusResponse:
        """`.image.id` is empty when the runtime does not know `ref`."""
        request = api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=ref))
        reply: api_pb2.ImageStatusResponse = self._call(self._images, "ImageStatus", request, None)
        return reply


def sandbox_config(
    *,
    name: str,
    namespace: str,
    uid: str,
    log_directory: Path,
    cgroup_parent: str,
    labels: Mapping[str, str] | None = None,
) -> api_pb2.PodSandboxConfig:
    """What kubelet sends for a pod: metadata (-> K8S_POD_* CNI args), pod network namespace."""
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, namespace=namespace, uid=uid, attempt=0),
        hostname=name,
        log_directory=str(log_directory),
        labels={
            "io.kubernetes.pod.name": name,
            "io.kubernetes.pod.namespace": namespace,
            "io.kubernetes.pod.uid": uid,
            **(labels or {}),
        },
        linux=api_pb2.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=api_pb2.LinuxSandboxSecurityContext(
                namespace_options=api_pb2.NamespaceOption(
                    network=api_pb2.NamespaceMode.POD,
                    pid=api_pb2.NamespaceMode.CONTAINER,
                    ipc=api_pb2.NamespaceMode.POD,
                )
            ),
        ),
    )


def netns_path(status: api_pb2.PodSandboxStatusResponse) -> str:
    """The sandbox's network namespace path, from the verbose status' runtime spec."""
    info = json.loads(status.info.get("info", "{}"))
    for ns in info.get("runtimeSpec", {}).get("linux", {}).get("namespaces", []):
        if ns.get("type") == "network" and ns.get("path"):
            return str(ns["path"])
    raise LookupError(f"no network namespace path in the status of {status.status.id}")
