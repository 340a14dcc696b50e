"""The write-back outbox: publish each attachment's addresses onto its pod, retried until done.

The pending write is not a queue entry but the log itself: `AddCompleted` leaves the
attachment `annotation_pending`, and only `AnnotationPublished` or `AnnotationAbandoned` clear
it. So a write-back survives an agent restart (the replayed state still says pending), and the
CNI reply never waits for the API server: ADD only calls `notify()`.

Each patch is a JSON merge patch naming only genie's two annotation keys (nobody else's
annotation is touched, no read-modify-write) plus `metadata.uid` as a precondition, so a pod
deleted and re-created under the same name is refused atomically by the API server instead of
getting the old sandbox's addresses. 404 or a different UID: abandoned. API unreachable:
retried with capped exponential backoff and full jitter, forever (until done or the pod goes).
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import tenacity

from genie.domain import events as ev
from genie.domain import state as st
from genie.k8s import annotations as ann
from genie.k8s import errors as k8s_errors
from genie.services import cursor, keyed_lock
from genie.store import recorder

if TYPE_CHECKING:
    from genie.k8s import client as k8s_client

log = logging.getLogger("genie.outbox")

DEFAULT_CONCURRENCY: Final = 8
DEFAULT_MAX_IN_FLIGHT: Final = 512
DEFAULT_RESCAN: Final = 30.0
DEFAULT_BACKOFF_INITIAL: Final = 0.5
DEFAULT_BACKOFF_MAX: Final = 30.0


class Outcome(enum.StrEnum):
    """What the API server did with one write-back."""

    PATCHED = "patched"
    POD_GONE = "pod-gone"  # 404: no pod of that name any more
    POD_REPLACED = "pod-replaced"  # the UID precondition failed: same name, another pod


# Errors worth retrying: the API server is away, or RBAC/credentials may be fixed meanwhile.
RETRIED: Final = (
    k8s_errors.ApiUnavailableError,
    k8s_errors.ForbiddenError,
    k8s_errors.UnauthorizedError,
)


class PodPatcher(Protocol):
    """Merge-patches a pod's annotations (with the UID precondition when `uid` is not empty).

    Raises k8s errors.KubernetesError for anything but 404 and a failed UID precondition.
    """

    async def patch_annotations(
        self, *, namespace: str, name: str, uid: str, annotations: Mapping[str, str]
    ) -> Outcome: ...


class ApiPodPatcher:
    """PodPatcher over the agent's kubernetes-asyncio client (one PATCH per call)."""

    def __init__(self, client: k8s_client.Client, *, timeout: float = 10.0) -> None:
        self._client = client
        self._timeout = timeout

    async def patch_annotations(
        self, *, namespace: str, name: str, uid: str, annotations: Mapping[str, str]
    ) -> Outcome:
        try:
            core: Any = self._client.core  # the generated client's stubs lack `_` options
            with k8s_errors.translated(f"patch pod {namespace}/{name}"):
                await core.patch_namespaced_pod(
                    name,
                    namespace,
                    ann.merge_patch(annotations, uid=uid),
                    _content_type="application/merge-patch+json",
                    _request_timeout=self._timeout,
                )
        except k8s_errors.NotFoundError:
            return Outcome.POD_GONE
        except k8s_errors.ConflictError:
            return Outcome.POD_REPLACED  # newer API servers: "Precondition failed: UID ..."
        except k8s_errors.InvalidError as exc:
            if uid and "metadata.uid" in str(exc):
                return Outcome.POD_REPLACED  # 1.20: 422 "metadata.uid: field is immutable"
            raise
        return Outcome.PATCHED


class _RetryError(Exception):
    """An attempt that should be tried again after a backoff (the cause says why)."""


class Outbox:
    """Publishes the annotations of every `annotation_pending` attachment; run it as a task."""

    def __init__(
        self,
        *,
        store: recorder.EventStore,
        locks: keyed_lock.KeyedLock,
        patcher: PodPatcher,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        rescan_interval: float = DEFAULT_RESCAN,
        backoff_initial: float = DEFAULT_BACKOFF_INITIAL,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
    ) -> None:
        if concurrency < 1 or max_in_flight < 1:
            raise ValueError("concurrency and max_in_flight must be at least 1")
        self._store = store
        self._locks = locks
        self._patcher = patcher
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._max_in_flight = max_in_flight
        self._rescan = rescan_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._wake = anyio.Event()
        self._in_flight: set[str] = set()
        self.published = 0
        self.abandoned = 0
        self.retries = 0

    def notify(self) -> None:
        """Wake the outbox now (after an ADD committed); never blocks, never fails."""
        self._wake.set()

    def pending(self) -> int:
        """How many attachments wait for their write-back (the log's view)."""
        return sum(1 for a in self._store.state.attachments.values() if a.annotation_pending)

    def in_flight(self) -> frozenset[str]:
        """Container IDs whose write-back is being attempted or waiting out a backoff."""
        return frozenset(self._in_flight)

    async def run(self) -> None:
        """Scan for pending write-backs at every notify() and rescan interval; cancel to stop."""
        async with anyio.create_task_group() as tg:
            while True:
                self._wake = anyio.Event()
                for cid in self._due():
                    self._in_flight.add(cid)
                    tg.start_soon(self._publish, cid, name=f"genie-outbox {cid[:12]}")
                with anyio.move_on_after(self._rescan):
                    await self._wake.wait()

    def _due(self) -> list[str]:
        room = self._max_in_flight - len(self._in_flight)
        if room <= 0:
            return []
        due = [
            att
            for att in self._store.state.attachments.values()
            if att.annotation_pending and att.container_id not in self._in_flight
        ]
        due.sort(key=lambda att: att.updated_at)  # the longest waiting first
        return [att.container_id for att in due[:room]]

    async def _publish(self, cid: str) -> None:
        retrying = tenacity.AsyncRetrying(
            wait=tenacity.wait_random_exponential(
                multiplier=self._backoff_initial, max=self._backoff_max
            ),
            retry=tenacity.retry_if_exception_type(_RetryError),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._attempt(cid)
        except Exception:
            log.exception("write-back of container %s failed unexpectedly; next scan retries", cid)
        finally:
            if len(self._in_flight) >= self._max_in_flight:
                self._wake.set()  # room again: start the ones the last scan left out
            self._in_flight.discard(cid)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        self.retries += 1
        failure = state.outcome.exception() if state.outcome else None
        cause = failure.__cause__ if failure is not None else None
        wait = state.next_action.sleep if state.next_action else math.nan
        level = logging.WARNING if state.attempt_number in (1, 10) else logging.DEBUG
        log.log(
            level,
            "write-back attempt %d failed (%s); retrying in %.1fs",
            state.attempt_number,
            cause or failure,
            wait,
        )

    async def _attempt(self, cid: str) -> None:
        """One try; raises _RetryError when it should be tried again after a backoff."""
        att = self._store.state.attachments.get(cid)
        if att is None or not att.annotation_pending:
            return
        if att.phase is not st.Phase.ATTACHED:
            await self._abandon(cid, f"sandbox is {att.phase}")  # a DEL began: too late
            return
        if not att.pod.name:
            await self._abandon(cid, "no pod name in CNI_ARGS")
            return
        values = ann.build(att)
        try:
            async with self._limiter:
                outcome = await self._patcher.patch_annotations(
                    namespace=att.pod.namespace,
                    name=att.pod.name,
                    uid=att.pod.uid,
                    annotations=values,
                )
        except RETRIED as exc:
            raise _RetryError(f"pod {att.pod}") from exc
        except k8s_errors.KubernetesError as exc:  # a 4xx that the same patch will get again
            await self._abandon(cid, f"the API server refused the patch of pod {att.pod}: {exc}")
            return
        if outcome is Outcome.PATCHED:
            if await self._record(cid, ev.AnnotationPublished(annotations=values)):
                self.published += 1
                log.info("pod %s: annotations published (container %s)", att.pod, cid)
        elif outcome is Outcome.POD_GONE:
            await self._abandon(cid, f"pod {att.pod} is gone")
        else:
            await self._abandon(cid, f"pod {att.pod} was replaced (its UID is not {att.pod.uid})")

    async def _abandon(self, cid: str, reason: str) -> None:
        if await self._record(cid, ev.AnnotationAbandoned(reason=reason)):
            self.abandoned += 1
            log.info("write-back for container %s abandoned: %s", cid, reason)

    async def _record(self, cid: str, event: ev.Event) -> bool:
        """Append `event` under the container's lock if the write-back is still pending."""
        async with self._locks.hold(cid):
            att = self._store.state.attachments.get(cid)
            if att is None or not att.annotation_pending:
                return False  # deleted (or settled) meanwhile: nothing left to say
            await cursor.StreamCursor(self._store, cid, att.version).append(event)
            return True
