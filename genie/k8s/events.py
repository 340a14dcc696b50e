"""Kubernetes Events on the pod (core/v1): `AddedInterface` per interface, a Warning on failure.

Best effort by design, not through the outbox: an Event is a notice for `kubectl describe`,
not state. The log already holds the durable truth (which addresses, which failure, when),
and Events expire from etcd after an hour anyway, so replaying them after a long API outage
or an agent restart would only show stale news. So: a bounded in-memory queue that the
CNI path fills without waiting (full -> the Event is dropped and counted), drained by a task
that tries each Event a few times while the API server is briefly unavailable, then drops it.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import tenacity

from genie.domain import events as ev
from genie.domain import state as st
from genie.k8s import annotations as ann
from genie.k8s import errors as k8s_errors

if TYPE_CHECKING:
    from genie.k8s import client as k8s_client

log = logging.getLogger("genie.k8s.events")

COMPONENT: Final = "genie"
NORMAL: Final = "Normal"
WARNING: Final = "Warning"
REASON_ADDED: Final = "AddedInterface"
REASON_ADD_FAILED: Final = "AddFailed"
MAX_MESSAGE: Final = 1024  # what client-go's recorder truncates a message to
MAX_NAME: Final = 253
DEFAULT_QUEUE: Final = 1024
DEFAULT_WORKERS: Final = 4


class EventSink(Protocol):
    """Creates one core/v1 Event; raises k8s errors (ApiUnavailableError is retried briefly)."""

    async def create_event(self, *, namespace: str, body: Mapping[str, Any]) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class PodEvent:
    """One Event about one pod, stamped when it happened (not when it was sent)."""

    pod: ev.PodRef
    type: str
    reason: str
    message: str
    at: float


class ApiEventSink:
    """EventSink over the agent's kubernetes-asyncio client (one POST per Event)."""

    def __init__(self, client: k8s_client.Client, *, timeout: float = 10.0) -> None:
        self._client = client
        self._timeout = timeout

    async def create_event(self, *, namespace: str, body: Mapping[str, Any]) -> None:
        core: Any = self._client.core  # the generated client's stubs lack `_` options
        with k8s_errors.translated(f"create event in {namespace}"):
            await core.create_namespaced_event(
                namespace, dict(body), _request_timeout=self._timeout
            )


def added_interface_messages(att: st.Attachment) -> list[str]:
    """Multus's wording, one per interface: `Add eth1 [10.1.0.5/24] from tenant-b`."""
    return [
        f"Add {s.ifname} [{','.join(s.addresses)}] from {s.network}" for s in ann.interfaces(att)
    ]


def body(event: PodEvent, *, node_name: str) -> dict[str, Any]:
    """The core/v1 Event object as client-go's recorder writes it."""
    stamp = _rfc3339(event.at)
    suffix = f".{time.time_ns():x}{secrets.token_hex(2)}"
    involved: dict[str, str] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": event.pod.namespace,
        "name": event.pod.name,
    }
    if event.pod.uid:
        involved["uid"] = event.pod.uid
    source: dict[str, str] = {"component": COMPONENT}
    if node_name:
        source["host"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": event.pod.name[: MAX_NAME - len(suffix)] + suffix,
            "namespace": event.pod.namespace,
        },
        "involvedObject": involved,
        "type": event.type,
        "reason": event.reason,
        "message": _truncate(event.message),
        "source": source,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "reportingComponent": COMPONENT,
        "reportingInstance": node_name,
    }


class PodEvents:
    """The bounded Event queue and its drain; call `run()` in a task, the rest from anywhere."""

    def __init__(
        self,
        *,
        sink: EventSink,
        node_name: str,
        max_queue: int = DEFAULT_QUEUE,
        workers: int = DEFAULT_WORKERS,
        attempts: int = 3,
        retry_max: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_queue < 1 or workers < 1 or attempts < 1:
            raise ValueError("max_queue, workers and attempts must be at least 1")
        self._sink = sink
        self._node = node_name
        self._send, self._receive = anyio.create_memory_object_stream[PodEvent](max_queue)
        self._workers = workers
        self._attempts = attempts
        self._retry_max = retry_max
        self._clock = clock
        self.sent = 0
        self.dropped = 0
        self.failed = 0

    def interfaces_added(self, att: st.Attachment) -> None:
        """One `AddedInterface` Normal Event per interface of a completed ADD."""
        for message in added_interface_messages(att):
            self.emit(att.pod, type_=NORMAL, reason=REASON_ADDED, message=message)

    def add_failed(self, pod: ev.PodRef, message: str, *, reason: str = REASON_ADD_FAILED) -> None:
        """A Warning Event: an ADD failed (and was rolled back); `message` is the error text."""
        self.emit(pod, type_=WARNING, reason=reason, message=message)

    def emit(self, pod: ev.PodRef, *, type_: str, reason: str, message: str) -> bool:
        """Queue an Event without waiting; False when it was dropped (no pod, or queue full)."""
        if not pod.name or not pod.namespace:
            return False
        event = PodEvent(pod=pod, type=type_, reason=reason, message=message, at=self._clock())
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning(
                    "event queue full: dropped %s %s for pod %s (%d dropped so far)",
                    type_,
                    reason,
                    pod,
                    self.dropped,
                )
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
        return True

    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    def close(self) -> None:
        """Stop taking Events (emit returns False); what is queued is dropped with the queue."""
        self._send.close()
        self._receive.close()

    async def run(self) -> None:
        """Send queued Events with `workers` concurrent senders until cancelled, then close."""
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self._workers):
                    tg.start_soon(self._drain, self._receive.clone())
        finally:
            self.close()

    async def _drain(self, receive: anyio.abc.ObjectReceiveStream[PodEvent]) -> None:
        async with receive:
            async for event in receive:
                await self._send_one(event)

    async def _send_one(self, event: PodEvent) -> None:
        doc = body(event, node_name=self._node)
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._attempts),
            wait=tenacity.wait_random_exponential(multiplier=0.2, max=self._retry_max),
            retry=tenacity.retry_if_exception_type(k8s_errors.ApiUnavailableError),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._sink.create_event(namespace=event.pod.namespace, body=doc)
        except k8s_errors.KubernetesError as exc:
            self.failed += 1
            log.warning("event %s for pod %s not recorded: %s", event.reason, event.pod, exc)
            return
        self.sent += 1


def _rfc3339(at: float) -> str:
    moment = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _truncate(message: str) -> str:
    if len(message.encode()) <= MAX_MESSAGE:
        return message
    return message.encode()[: MAX_MESSAGE - 3].decode(errors="ignore") + "..."
