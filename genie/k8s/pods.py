"""The node's pods as the ADD path reads them: a watch-fed cache, a GET only on a miss.

`PodWatcher` implements genie.pods.source.PodSource for a cluster. It lists and watches the
pods bound to this node (field selector `spec.nodeName=<node>`) and keeps, per pod, only
what genie needs: namespace, name, uid, the annotations genie reads, whether it is being
deleted. `get()` answers from the cache when the pod is there with the asked UID (no API
call: the hot path); otherwise it waits briefly for the watch to deliver it (the watch lags
the scheduler by a few ms) and then makes one GET. Listeners are told when a pod is gone
(watch DELETED, a relist that no longer has it, or the same name with a new UID).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio

from genie.k8s import errors, watch
from genie.networks import selection
from genie.pods import source

if TYPE_CHECKING:
    from genie.k8s import client as k8s

log = logging.getLogger("genie.k8s.pods")

# annotations genie reads from a pod; the rest of a pod (up to 256 KiB of annotations
# alone) is never kept
DEFAULT_ANNOTATIONS: Final = frozenset({selection.GENIE_ANNOTATION, selection.MULTUS_ANNOTATION})
GET_WAIT: Final = 2.0  # Multus waits 2.5 s for its informer before a live GET
GET_TIMEOUT: Final = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class PodGone:
    """A pod that no longer exists (this UID of it): what the pod-gone sweep needs."""

    namespace: str
    name: str
    uid: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    pod: source.Pod
    deleting: bool  # metadata.deletionTimestamp is set


DeletionListener = Callable[[PodGone], None]


class PodWatcher:
    """PodSource over the Kubernetes API for one node. Run `run()` as a long-lived task."""

    def __init__(
        self,
        client: k8s.Client,
        *,
        node_name: str,
        annotation_keys: Collection[str] | None = DEFAULT_ANNOTATIONS,
        get_wait: float = GET_WAIT,
        watch_timeout: int = watch.WATCH_TIMEOUT,
        backoff: watch.Backoff | None = None,
    ) -> None:
        if not node_name:
            raise ValueError("a pod watcher needs the node name")
        self._client = client
        self._node = node_name
        self._keys = None if annotation_keys is None else frozenset(annotation_keys)
        self._get_wait = get_wait
        self._pods: dict[tuple[str, str], _Entry] = {}
        self._listeners: list[DeletionListener] = []
        self.gets = 0  # API GETs made by get(): the hot path should make none
        selector = f"spec.nodeName={node_name}"

        def list_call(**kwargs: Any) -> Any:
            return client.core.list_pod_for_all_namespaces(field_selector=selector, **kwargs)

        self._loop = watch.ListWatch(
            what=f"pods on {node_name}",
            list_call=list_call,
            handler=self,
            watch_timeout=watch_timeout,
            backoff=backoff,
        )

    @property
    def node_name(self) -> str:
        return self._node

    @property
    def stats(self) -> watch.Stats:
        return self._loop.stats

    # --- PodSource ------------------------------------------------------------------------

    def ready(self) -> bool:
        """True once the first list completed (and from then on)."""
        return self._loop.listed.is_set()

    async def get(self, *, namespace: str, name: str, uid: str = "") -> source.Pod:
        key = (namespace, name)
        pod = self._cached(key, uid)
        if pod is not None:
            return pod
        # not (yet) cached: give a connected watch a moment to deliver it
        with anyio.move_on_after(self._get_wait):
            while self._loop.synced or not self._loop.listed.is_set():
                await self._loop.wait_changed()
                pod = self._cached(key, uid)
                if pod is not None:
                    return pod
        pod = self._cached(key, uid)
        if pod is not None:
            return pod
        return await self._get(namespace=namespace, name=name, uid=uid)

    # --- what the rest of the agent may read ----------------------------------------------

    def cached(self, *, namespace: str, name: str) -> source.Pod | None:
        """The cached pod by that name (any UID), or None; never calls the API."""
        entry = self._pods.get((namespace, name))
        return None if entry is None else entry.pod

    def deleting(self, *, namespace: str, name: str) -> bool:
        entry = self._pods.get((namespace, name))
        return entry is not None and entry.deleting

    def pods(self) -> list[source.Pod]:
        """Every cached pod (a snapshot)."""
        return [e.pod for e in self._pods.values()]

    def on_deleted(self, listener: DeletionListener) -> Callable[[], None]:
        """Call `listener(PodGone)` (in the watch task: do not block) for every pod that goes
        away; returns a function that removes the listener."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    async def run(self) -> None:
        """List, then watch, forever (reconnecting); cancel the task to stop."""
        await self._loop.run()

    async def close(self) -> None:
        """Forget the listeners; the client belongs to the caller (close it there)."""
        self._listeners.clear()

    # --- watch.Handler --------------------------------------------------------------------

    def replace(self, objects: list[Mapping[str, Any]]) -> None:
        old = self._pods
        new: dict[tuple[str, str], _Entry] = {}
        for obj in objects:
            entry = self._entry(obj)
            if entry is not None:
                new[(entry.pod.namespace, entry.pod.name)] = entry
        self._pods = new
        for key, entry in old.items():
            now = new.get(key)
            if now is None or now.pod.uid != entry.pod.uid:
                self._gone(entry.pod)

    def apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        entry = self._entry(obj)
        if entry is None:
            return
        key = (entry.pod.namespace, entry.pod.name)
        old = self._pods.get(key)
        if kind == "DELETED":
            if old is not None and old.pod.uid == entry.pod.uid:
                del self._pods[key]
            self._gone(entry.pod)
            return
        self._pods[key] = entry
        if old is not None and old.pod.uid != entry.pod.uid:
            self._gone(old.pod)  # re-created under the same name: the old one is gone

    # --- internals ------------------------------------------------------------------------

    def _cached(self, key: tuple[str, str], uid: str) -> source.Pod | None:
        entry = self._pods.get(key)
        if entry is None or (uid and entry.pod.uid != uid):
            return None
        return entry.pod

    def _entry(self, obj: Mapping[str, Any]) -> _Entry | None:
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            return None
        namespace, name, uid = meta.get("namespace"), meta.get("name"), meta.get("uid")
        if not (isinstance(namespace, str) and isinstance(name, str) and isinstance(uid, str)):
            return None
        raw = meta.get("annotations")
        annotations: dict[str, str] = {}
        if isinstance(raw, dict):
            annotations = {
                str(k): str(v)
                for k, v in raw.items()
                if isinstance(v, str) and (self._keys is None or k in self._keys)
            }
        pod = source.Pod(namespace=namespace, name=name, uid=uid, annotations=annotations)
        return _Entry(pod=pod, deleting=meta.get("deletionTimestamp") is not None)

    def _gone(self, pod: source.Pod) -> None:
        gone = PodGone(namespace=pod.namespace, name=pod.name, uid=pod.uid)
        for listener in list(self._listeners):
            try:
                listener(gone)
            except Exception:
                log.exception("pod deletion listener failed for %s/%s", pod.namespace, pod.name)

    async def _get(self, *, namespace: str, name: str, uid: str) -> source.Pod:
        self.gets += 1
        try:
            with errors.translated(f"get pod {namespace}/{name}"):
                resp: Any = await self._client.core.read_namespaced_pod(
                    name,
                    namespace,
                    _preload_content=False,
                    _request_timeout=watch.aiohttp_timeout(total=GET_TIMEOUT),
                )
                async with resp:
                    body = await watch.read_limited(resp, watch.MAX_LINE)
                    watch.raise_for_status(resp.status, body)
            doc = watch.decode(body)
        except errors.NotFoundError as exc:
            raise source.PodNotFoundError(f"pod {namespace}/{name} not found") from exc
        except errors.KubernetesError as exc:
            raise source.PodSourceUnavailableError(
                f"pod {namespace}/{name} is not cached and the API server cannot tell: {exc}"
            ) from exc
        entry = self._entry(doc)
        if entry is None:
            raise source.PodSourceUnavailableError(f"pod {namespace}/{name}: unusable answer")
        if uid and entry.pod.uid != uid:
            raise source.PodNotFoundError(
                f"pod {namespace}/{name} with UID {uid} not found (it now has UID {entry.pod.uid})"
            )
        return entry.pod
