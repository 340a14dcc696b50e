"""List then watch one kind of object, forever: the reflector loop shared by pods and NADs.

The loop (as client-go's reflector and kopf do it): list (paged) and hand the full set to
the handler; watch from the list's resourceVersion with bookmarks and a server-side
timeout, so the stream is renewed every few minutes; resume from the last resourceVersion
seen after a stream ends or breaks; on 410 Gone (the version was compacted away) list again.
Failures wait a capped exponential backoff with full jitter before the next attempt.

Objects stay raw JSON dicts: the handler keeps the few fields it needs and drops the rest,
so no generated model is built per event. Every line of the stream is size-limited.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

import anyio

from genie.k8s import errors

log = logging.getLogger("genie.k8s.watch")

MAX_LINE: Final = 4 << 20  # one watch event: etcd refuses objects over 1.5 MiB
MAX_LIST_PAGE: Final = 64 << 20
PAGE_SIZE: Final = 500
CONNECT_TIMEOUT: Final = 10.0
WATCH_TIMEOUT: Final = 300  # server-side: the stream ends (cleanly) after this many seconds

# a generated list method, e.g. CoreV1Api.list_pod_for_all_namespaces, with its filters bound
ListCall = Callable[..., Awaitable[Any]]


class Handler(Protocol):
    def replace(self, objects: list[Mapping[str, Any]]) -> None:
        """After a (re)list: the complete current set (objects absent from it are gone)."""
        ...

    def apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        """One watch event: kind is ADDED, MODIFIED or DELETED."""
        ...


@dataclasses.dataclass(slots=True)
class Backoff:
    """Capped exponential backoff with full jitter: attempt n waits U(0, min(cap, base*2**n))."""

    base: float = 0.25
    cap: float = 30.0
    rng: random.Random = dataclasses.field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0, min(self.cap, self.base * 2 ** min(attempt, 30)))


@dataclasses.dataclass(slots=True)
class Stats:
    """Counters for metrics and tests."""

    lists: int = 0
    watches: int = 0
    events: int = 0
    bookmarks: int = 0
    gone: int = 0
    failures: int = 0
    last_error: str = ""


class ListWatch:
    """One list+watch loop; `run()` until cancelled."""

    def __init__(
        self,
        *,
        what: str,
        list_call: ListCall,
        handler: Handler,
        watch_timeout: int = WATCH_TIMEOUT,
        backoff: Backoff | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._what = what
        self._list_call = list_call
        self._handler = handler
        self._watch_timeout = watch_timeout
        self._backoff = backoff or Backoff()
        self._page_size = page_size
        self.stats = Stats()
        self.listed = anyio.Event()  # set once the first list completed
        self.resource_version = ""
        self._streaming = False
        self._changed = anyio.Event()

    @property
    def synced(self) -> bool:
        """Listed at least once and the watch stream is open now (the cache is current)."""
        return self.listed.is_set() and self._streaming

    async def wait_changed(self) -> None:
        """Until the next list or watch event was handed to the handler (or state changed)."""
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def run(self) -> None:
        attempt = 0
        resource_version = ""
        while True:
            try:
                if not resource_version:
                    resource_version = await self._list()
                    attempt = 0
                resource_version = await self._watch(resource_version)
                attempt = 0
            except errors.GoneError as exc:
                self.stats.gone += 1
                log.info("%s: watch from %s: %s; listing again", self._what, resource_version, exc)
                resource_version = ""
            except errors.KubernetesError as exc:
                self.stats.failures += 1
                self.stats.last_error = str(exc)
                delay = self._backoff.delay(attempt)
                attempt += 1
                level = (
                    logging.WARNING if attempt in (1, 10) or attempt % 50 == 0 else logging.DEBUG
                )
                log.log(
                    level, "%s: %s (attempt %d, retry in %.2f s)", self._what, exc, attempt, delay
                )
                await anyio.sleep(delay)
            finally:
                if self._streaming:
                    self._streaming = False
                    self._notify()

    # --- list -----------------------------------------------------------------------------

    async def _list(self) -> str:
        items: list[Mapping[str, Any]] = []
        token = ""
        resource_version = ""
        while True:
            kwargs: dict[str, Any] = {"limit": self._page_size}
            if token:
                kwargs["_continue"] = token
            doc = await self._request(kwargs, client_timeout=aiohttp_timeout(total=60))
            if not isinstance(doc.get("items"), list):
                raise errors.ApiUnavailableError(f"{self._what}: list answer is not a list")
            items.extend(i for i in doc["items"] if isinstance(i, dict))
            meta = doc.get("metadata") or {}
            if not resource_version:
                resource_version = str(meta.get("resourceVersion") or "")
            token = str(meta.get("continue") or "")
            if not token:
                break
        if not resource_version:
            raise errors.ApiUnavailableError(f"{self._what}: list answer has no resourceVersion")
        self._handler.replace(items)
        self.stats.lists += 1
        self.resource_version = resource_version
        self.listed.set()
        self._notify()
        log.debug("%s: listed %d at %s", self._what, len(items), resource_version)
        return resource_version

    async def _request(self, kwargs: dict[str, Any], *, client_timeout: Any) -> Any:
        """One list call (not a watch) read whole, size-limited; a decoded JSON document."""
        with errors.translated(f"list {self._what}"):
            resp = await self._list_call(
                **kwargs, _preload_content=False, _request_timeout=client_timeout
            )
            async with resp:
                body = await read_limited(resp, MAX_LIST_PAGE)
                raise_for_status(resp.status, body)
        return decode(body)

    # --- watch ----------------------------------------------------------------------------

    async def _watch(self, resource_version: str) -> str:
        """Stream events from resource_version until the server ends the stream; the last
        resourceVersion seen (bookmarks included)."""
        timeout = aiohttp_timeout(connect=CONNECT_TIMEOUT, sock_read=self._watch_timeout + 30)
        with errors.translated(f"watch {self._what}"):
            resp = await self._list_call(
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_timeout,
                _preload_content=False,
                _request_timeout=timeout,
            )
            async with resp:
                if resp.status != 200:
                    raise_for_status(resp.status, await read_limited(resp, 64 << 10))
                self.stats.watches += 1
                self._streaming = True
                self._notify()
                pending = bytearray()
                async for chunk in resp.content.iter_any():
                    start = 0
                    while (newline := chunk.find(b"\n", start)) >= 0:
                        pending += chunk[start:newline]
                        start = newline + 1
                        if pending.strip():
                            resource_version = self._event(bytes(pending)) or resource_version
                        pending.clear()
                    pending += chunk[start:]
                    if len(pending) > MAX_LINE:
                        raise errors.ApiUnavailableError(
                            f"{self._what}: watch event larger than {MAX_LINE} bytes"
                        )
                if pending.strip():
                    resource_version = self._event(bytes(pending)) or resource_version
        self.resource_version = resource_version
        return resource_version

    def _event(self, line: bytes) -> str:
        """Handle one watch line; the resourceVersion it carries ('' if none)."""
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise errors.ApiUnavailableError(f"{self._what}: watch event is not JSON") from exc
        if not isinstance(doc, dict):
            raise errors.ApiUnavailableError(f"{self._what}: watch event is not an object")
        kind = doc.get("type")
        obj = doc.get("object")
        if not isinstance(obj, dict):
            raise errors.ApiUnavailableError(f"{self._what}: watch event without object")
        if kind == "ERROR":
            code = obj.get("code")
            message = str(obj.get("message", ""))
            raise errors.for_status(
                code if isinstance(code, int) else 500, message, reason=str(obj.get("reason", ""))
            )
        meta = obj.get("metadata")
        rv = str(meta.get("resourceVersion") or "") if isinstance(meta, dict) else ""
        if kind == "BOOKMARK":
            self.stats.bookmarks += 1
        elif kind in ("ADDED", "MODIFIED", "DELETED"):
            self.stats.events += 1
            self._handler.apply(kind, obj)
            self._notify()
        else:
            log.debug("%s: ignoring watch event of type %r", self._what, kind)
        if rv:
            self.resource_version = rv
        return rv


def aiohttp_timeout(**kwargs: float) -> Any:
    import aiohttp

    return aiohttp.ClientTimeout(**kwargs)


async def read_limited(resp: Any, limit: int) -> bytes:
    body = bytearray()
    async for chunk in resp.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise errors.ApiUnavailableError(f"answer larger than {limit} bytes")
    return bytes(body)


def decode(body: bytes) -> dict[str, Any]:
    """A JSON object from an answer; ApiUnavailableError when it is not one."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise errors.ApiUnavailableError("answer is not JSON") from exc
    if not isinstance(doc, dict):
        raise errors.ApiUnavailableError("answer is not a JSON object")
    return doc


def raise_for_status(status: int, body: bytes) -> None:
    if 200 <= status < 300:
        return
    message, reason = errors.status_message(body)
    raise errors.for_status(status, f"HTTP {status}: {message}", reason=reason)
