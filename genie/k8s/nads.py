"""NetworkAttachmentDefinitions: the networks Multus-syntax pod annotations name, watched.

A watch of `k8s.cni.cncf.io/v1` network-attachment-definitions in all namespaces keeps, per
NAD, only its parsed network (or why it is unusable). Resolution follows Multus: the NAD
`name` in the pod's namespace unless the request says `ns/name`; an empty or absent
`spec.config` stands for the net-dir network of that name; otherwise `spec.config` is a
CNI conf or conflist as a JSON string. `resolve()` reads the cache only (the planner is
synchronous); `get()` also waits briefly for the watch and then makes one GET, for a NAD
created a moment before the pod.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio

from genie.k8s import errors, watch
from genie.networks import registry as reg

if TYPE_CHECKING:
    from genie.k8s import client as k8s

log = logging.getLogger("genie.k8s.nads")

GROUP: Final = "k8s.cni.cncf.io"
VERSION: Final = "v1"
PLURAL: Final = "network-attachment-definitions"
MAX_CONFIG_BYTES: Final = 256 * 1024  # spec.config: a CNI config, never this big
GET_WAIT: Final = 1.0
SELF_TYPE: Final = "genie"


class UnknownAttachmentError(reg.UnknownNetworkError):
    """No usable NetworkAttachmentDefinition namespace/name (missing, or its config is bad)."""

    def __init__(self, *, namespace: str, name: str, why: str = "not found") -> None:
        LookupError.__init__(self, f"NetworkAttachmentDefinition {namespace}/{name}: {why}")
        self.name = name
        self.namespace = namespace
        self.net_dir = Path()


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    config: reg.NetworkConfig | None  # None: use the net-dir network of the NAD's name
    error: str = ""  # set: the NAD exists but is unusable


def split_name(name: str, *, namespace: str) -> tuple[str, str]:
    """(namespace, name) for a request `name` or `ns/name` made by a pod in `namespace`."""
    if "/" in name:
        ns, _, rest = name.partition("/")
        return ns, rest
    return namespace, name


def parse_nad(obj: Mapping[str, Any]) -> tuple[str, str, _Entry] | None:
    """(namespace, name, entry) of a NAD object; None when it has no usable metadata."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return None
    namespace, name = meta.get("namespace"), meta.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str):
        return None
    spec = obj.get("spec")
    raw = spec.get("config") if isinstance(spec, dict) else None
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return namespace, name, _Entry(config=None)
    if not isinstance(raw, str):
        return namespace, name, _Entry(config=None, error="spec.config is not a string")
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        return namespace, name, _Entry(None, f"spec.config is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return namespace, name, _Entry(None, f"spec.config is not JSON: {exc}")
    if isinstance(doc, dict) and not doc.get("name"):
        doc["name"] = name  # Multus: a config without a name takes the NAD's
    try:
        config = reg.parse_config(doc, source=Path(f"{PLURAL}/{namespace}/{name}"))
    except reg.InvalidConfigError as exc:
        return namespace, name, _Entry(None, f"spec.config: {exc}")
    if any(p.get("type") == SELF_TYPE for p in config.plugins):
        return namespace, name, _Entry(None, "spec.config delegates to genie itself")
    return namespace, name, _Entry(config=config)


class AttachmentDefinitions:
    """Watch-fed cache of every NAD; run `run()` as a long-lived task."""

    def __init__(
        self,
        client: k8s.Client,
        *,
        registry: reg.NetworkRegistry,
        get_wait: float = GET_WAIT,
        watch_timeout: int = watch.WATCH_TIMEOUT,
        backoff: watch.Backoff | None = None,
    ) -> None:
        self._client = client
        self._registry = registry
        self._get_wait = get_wait
        self._nads: dict[tuple[str, str], _Entry] = {}
        self.gets = 0

        def list_call(**kwargs: Any) -> Any:
            return client.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)

        self._loop = watch.ListWatch(
            what="network-attachment-definitions",
            list_call=list_call,
            handler=self,
            watch_timeout=watch_timeout,
            backoff=backoff,
        )

    @property
    def stats(self) -> watch.Stats:
        return self._loop.stats

    def ready(self) -> bool:
        return self._loop.listed.is_set()

    async def run(self) -> None:
        await self._loop.run()

    def __len__(self) -> int:
        return len(self._nads)

    # --- resolution -----------------------------------------------------------------------

    def resolve(self, *, namespace: str, name: str) -> reg.NetworkConfig:
        """The network for a request `name` (or `ns/name`) of a pod in `namespace`, from the
        cache; UnknownAttachmentError (an UnknownNetworkError) when none is usable."""
        ns, nad = split_name(name, namespace=namespace)
        entry = self._nads.get((ns, nad))
        if entry is None:
            raise UnknownAttachmentError(namespace=ns, name=nad)
        return self._network(ns, nad, entry)

    def __call__(self, namespace: str, name: str) -> reg.NetworkConfig:
        """resolve() with the signature of genie.services.plan.AttachmentDefinitions."""
        return self.resolve(namespace=namespace, name=name)

    async def get(self, *, namespace: str, name: str) -> reg.NetworkConfig:
        """resolve(), but a NAD not cached yet gets a brief wait for the watch, then one GET."""
        ns, nad = split_name(name, namespace=namespace)
        key = (ns, nad)
        with anyio.move_on_after(self._get_wait):
            while key not in self._nads and (self._loop.synced or not self.ready()):
                await self._loop.wait_changed()
        entry = self._nads.get(key)
        if entry is None:
            entry = await self._get(ns, nad)
        return self._network(ns, nad, entry)

    def _network(self, namespace: str, name: str, entry: _Entry) -> reg.NetworkConfig:
        if entry.error:
            raise UnknownAttachmentError(namespace=namespace, name=name, why=entry.error)
        if entry.config is not None:
            return entry.config
        try:
            return self._registry.get(name)
        except reg.UnknownNetworkError as exc:
            raise UnknownAttachmentError(
                namespace=namespace,
                name=name,
                why=f"no spec.config and no network {name!r} in {self._registry.net_dir}",
            ) from exc

    async def _get(self, namespace: str, name: str) -> _Entry:
        self.gets += 1
        try:
            with errors.translated(f"get {PLURAL} {namespace}/{name}"):
                resp: Any = await self._client.custom.get_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    _preload_content=False,
                    _request_timeout=watch.aiohttp_timeout(total=5),
                )
                async with resp:
                    body = await watch.read_limited(resp, watch.MAX_LINE)
                    watch.raise_for_status(resp.status, body)
            doc = watch.decode(body)
        except errors.NotFoundError:
            raise UnknownAttachmentError(namespace=namespace, name=name) from None
        except errors.KubernetesError as exc:
            raise UnknownAttachmentError(
                namespace=namespace, name=name, why=f"not cached and cannot be read: {exc}"
            ) from exc
        parsed = parse_nad(doc)
        if parsed is None:
            raise UnknownAttachmentError(namespace=namespace, name=name, why="unusable object")
        return parsed[2]

    # --- watch.Handler --------------------------------------------------------------------

    def replace(self, objects: list[Mapping[str, Any]]) -> None:
        nads: dict[tuple[str, str], _Entry] = {}
        for obj in objects:
            parsed = self._parse(obj)
            if parsed is not None:
                nads[(parsed[0], parsed[1])] = parsed[2]
        self._nads = nads

    def apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        parsed = self._parse(obj)
        if parsed is None:
            return
        key = (parsed[0], parsed[1])
        if kind == "DELETED":
            self._nads.pop(key, None)
        else:
            self._nads[key] = parsed[2]

    def _parse(self, obj: Mapping[str, Any]) -> tuple[str, str, _Entry] | None:
        parsed = parse_nad(obj)
        if parsed is not None and parsed[2].error:
            log.warning(
                "NetworkAttachmentDefinition %s/%s is unusable: %s", *parsed[:2], parsed[2].error
            )
        return parsed
