"""Pods deleted without a CNI DEL: release their attachments from the log after a grace period.

The runtime normally DELs a sandbox before its pod object goes away; when the node lost the
sandbox (runtime crash, kubelet state wiped) that DEL never comes and the addresses would
leak. The pod watcher tells the sweep about deleted pods (`pod_deleted`), and after its first
list which pods exist (`reconcile`). A pod's attachments that are still recorded when its
grace period ends (the runtime had that long to DEL) are released exactly as a DEL would be,
from the log alone, recorded with initiator `pod-gone` and ending in `Released`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Final

import anyio

from genie.cni import errors
from genie.domain import events as ev
from genie.domain import state as st
from genie.services import context, release

log = logging.getLogger("genie.sweep")

DEFAULT_GRACE: Final = 60.0
DEFAULT_RETRY: Final = 30.0

# Is this pod (namespace, name, and UID when not empty) in the pod cache right now?
PodPresent = Callable[[ev.PodRef], bool]


@dataclasses.dataclass(slots=True)
class _Candidate:
    pod: ev.PodRef
    due: float
    why: str
    failures: int = 0


class PodGoneSweep:
    """Schedules and carries out pod-gone releases; run `run()` as a task."""

    def __init__(
        self,
        svc: context.Services,
        *,
        grace: float = DEFAULT_GRACE,
        retry: float = DEFAULT_RETRY,
        present: PodPresent | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._svc = svc
        self._grace = grace
        self._retry = retry
        self._present = present
        self._clock = clock
        self._candidates: dict[tuple[str, str, str], _Candidate] = {}
        self._wake = anyio.Event()
        self.released = 0
        self.failures = 0

    def pod_deleted(self, pod: ev.PodRef) -> None:
        """The watch saw `pod` deleted: release what it still holds after the grace period."""
        self._schedule(pod, why="deleted")

    def reconcile(self, present: Iterable[ev.PodRef]) -> int:
        """After the first list: every attachment whose pod is not in `present` becomes a
        candidate (its pod went away while the agent was not watching). Returns how many."""
        by_uid = {p.uid for p in present if p.uid}
        by_name = {(p.namespace, p.name) for p in present}
        scheduled = 0
        for att in list(self._svc.store.state.attachments.values()):
            pod = att.pod
            if not pod.name:
                continue  # not a Kubernetes pod (podman, static): nothing to compare with
            there = pod.uid in by_uid if pod.uid else (pod.namespace, pod.name) in by_name
            if not there and self._schedule(pod, why="absent from the first pod list"):
                scheduled += 1
        return scheduled

    async def reconcile_when_ready(
        self,
        *,
        ready: Callable[[], bool],
        pods: Callable[[], Iterable[ev.PodRef]],
        poll: float = 0.1,
    ) -> int:
        """Wait until the pod source has listed once (`ready()`), then `reconcile(pods())`."""
        while not ready():  # noqa: ASYNC110 - PodSource offers only the ready() poll
            await anyio.sleep(poll)
        scheduled = self.reconcile(pods())
        if scheduled:
            log.info("%d pods with recorded attachments are gone: sweeping them", scheduled)
        return scheduled

    def scheduled(self) -> list[ev.PodRef]:
        """The pods waiting out their grace period (or a retry)."""
        return [c.pod for c in self._candidates.values()]

    async def run(self) -> None:
        """Release candidates as they fall due; cancel to stop."""
        while True:
            self._wake = anyio.Event()
            now = self._clock()
            due = [c for c in self._candidates.values() if c.due <= now]
            for candidate in due:
                await self._sweep(candidate)
            upcoming = min((c.due for c in self._candidates.values()), default=math.inf)
            with anyio.move_on_after(max(0.0, upcoming - self._clock())):
                await self._wake.wait()

    def _schedule(self, pod: ev.PodRef, *, why: str) -> bool:
        key = _key(pod)
        if key in self._candidates:
            return False
        self._candidates[key] = _Candidate(pod=pod, due=self._clock() + self._grace, why=why)
        self._wake.set()
        log.debug("pod %s (%s) %s: sweep in %.0fs", pod, pod.uid or "no uid", why, self._grace)
        return True

    async def _sweep(self, candidate: _Candidate) -> None:
        pod = candidate.pod
        key = _key(pod)
        if self._present is not None and self._present(pod):
            log.info("pod %s is back in the pod cache: not sweeping it", pod)
            del self._candidates[key]
            return
        failed = False
        for cid in self._containers_of(pod):
            failed |= not await self._release(cid, candidate)
        if failed:
            candidate.failures += 1
            candidate.due = self._clock() + self._retry
        else:
            del self._candidates[key]

    def _containers_of(self, pod: ev.PodRef) -> list[str]:
        return [
            att.container_id
            for att in self._svc.store.state.attachments.values()
            if _matches(att.pod, pod)
        ]

    async def _release(self, cid: str, candidate: _Candidate) -> bool:
        """Release one container under its lock; False when a delegate DEL failed."""
        svc = self._svc
        async with svc.locks.hold(cid):
            att = svc.store.state.attachments.get(cid)
            if att is None or not _matches(att.pod, candidate.pod):
                return True  # the runtime's DEL came after all
            reason = (
                f"pod {att.pod} ({att.pod.uid or 'no uid'}) {candidate.why} "
                f"and no CNI DEL within {self._grace:g}s"
            )
            try:
                await release.release_locked(
                    svc, att, netns=att.netns, initiator=ev.INITIATOR_POD_GONE, reason=reason
                )
            except errors.CniError as exc:
                self.failures += 1
                log.error(
                    "pod-gone release of container %s failed: %s; retrying in %.0fs",
                    cid,
                    exc.msg,
                    self._retry,
                )
                return False
        self.released += 1
        log.info("released container %s: %s (%s)", cid, reason, _summary(att))
        return True


def _key(pod: ev.PodRef) -> tuple[str, str, str]:
    """A pod's identity: its UID when known (a re-created pod is another pod), else its name."""
    return ("", "", pod.uid) if pod.uid else (pod.namespace, pod.name, "")


def _matches(recorded: ev.PodRef, gone: ev.PodRef) -> bool:
    """Is the attachment's pod the gone one? By UID when both know it, else by name."""
    if recorded.uid and gone.uid:
        return recorded.uid == gone.uid
    return (recorded.namespace, recorded.name) == (gone.namespace, gone.name)


def _summary(att: st.Attachment) -> str:
    return ", ".join(
        f"{d.plan.ifname}={d.plan.network}[{' '.join(st.addresses(d.result))}]"
        for d in att.delegates
    )
