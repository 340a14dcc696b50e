"""A pod source for machines without Kubernetes: pod manifests in a directory, like static pods.

`genie agent --pods-dir DIR` reads the annotations of pods from YAML or JSON manifests
(multi-document YAML allowed, `kind: Pod` only), re-reading a file only when its stat data
changes, so a demo or a test edits a file and the next ADD sees it.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from genie import watched_dir
from genie.pods import source

log = logging.getLogger("genie.pods")

MAX_MANIFEST_BYTES: Final = 1 << 20
EXTENSIONS: Final = (".yaml", ".yml", ".json")
DEFAULT_NAMESPACE: Final = "default"

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class InvalidManifestError(ValueError):
    """A manifest file that cannot be used (the message says why)."""


class StaticPodsDir:
    """PodSource over a directory of pod manifests; matched by namespace and name."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._files = watched_dir.WatchedDir(
            path, accept=_candidate, load=_load_logged, what="pods dir"
        )
        self._pods: dict[tuple[str, str], source.Pod] = {}

    @property
    def path(self) -> Path:
        return self._path

    async def get(self, *, namespace: str, name: str, uid: str = "") -> source.Pod:
        self.refresh()
        pod = self._pods.get((namespace, name))
        if pod is None:
            raise source.PodNotFoundError(f"pod {namespace}/{name} not found in {self._path}")
        if uid and pod.uid and uid != pod.uid:
            raise source.PodNotFoundError(
                f"pod {namespace}/{name} in {self._path} has uid {pod.uid}, not {uid}"
            )
        return pod

    def ready(self) -> bool:
        return True

    def pods(self) -> tuple[source.Pod, ...]:
        """Every pod known now, sorted by namespace and name."""
        self.refresh()
        return tuple(self._pods[k] for k in sorted(self._pods))

    def refresh(self) -> None:
        """Re-read the files whose stat data changed since the last call."""
        if not self._files.refresh():
            return
        index: dict[tuple[str, str], source.Pod] = {}
        for fname, pods in self._files.items():
            for pod in pods:
                key = (pod.namespace, pod.name)
                if key in index:
                    log.warning(
                        "pod %s/%s defined again in %s: the first definition wins",
                        pod.namespace,
                        pod.name,
                        self._path / fname,
                    )
                    continue
                index[key] = pod
        self._pods = index


def _candidate(fname: str) -> bool:
    return not fname.startswith((".", "~", "#")) and fname.endswith(EXTENSIONS)


def _load_logged(path: Path) -> tuple[source.Pod, ...]:
    try:
        return parse_file(path)
    except InvalidManifestError as exc:
        log.error("ignoring pod manifest %s: %s", path, exc)
        return ()


def parse_file(path: Path) -> tuple[source.Pod, ...]:
    """Every Pod in one manifest file; documents of other kinds are skipped."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise InvalidManifestError(f"cannot read: {exc}") from exc
    if len(raw) > MAX_MANIFEST_BYTES:
        raise InvalidManifestError(f"larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        docs = list(yaml.load_all(raw, Loader=_Loader))  # a safe loader (C if built)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise InvalidManifestError(f"not YAML/JSON: {exc}") from exc
    pods: list[source.Pod] = []
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise InvalidManifestError(f"document {i} is not a mapping")
        if doc.get("kind") != "Pod":
            continue
        pods.append(_pod(doc, where=f"document {i}"))
    return tuple(pods)


def _pod(doc: Mapping[str, Any], *, where: str) -> source.Pod:
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        raise InvalidManifestError(f"{where}: no metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidManifestError(f"{where}: no metadata.name")
    namespace = meta.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or not namespace:
        raise InvalidManifestError(f"{where}: metadata.namespace is not a string")
    uid = meta.get("uid", "")
    if not isinstance(uid, str):
        raise InvalidManifestError(f"{where}: metadata.uid is not a string")
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise InvalidManifestError(f"{where}: metadata.annotations must map strings to strings")
    return source.Pod(
        namespace=namespace,
        name=name,
        uid=uid,
        annotations=types.MappingProxyType(dict(annotations)),
    )
