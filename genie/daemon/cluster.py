"""What the agent runs when it talks to a cluster: pod cache, NADs, write-back, Events, sweep.

Built only when a Kubernetes client could be configured; the rest of the agent sees a
PodSource, a NAD lookup and an AttachObserver, and works the same without a cluster.
"""

from __future__ import annotations

import logging

import anyio.abc

from genie.daemon import metrics as agent_metrics
from genie.domain import events as ev
from genie.domain import state as st
from genie.k8s import client as k8s_client
from genie.k8s import events as k8s_events
from genie.k8s import nads as k8s_nads
from genie.k8s import outbox as k8s_outbox
from genie.k8s import pods as k8s_pods
from genie.networks import registry as reg
from genie.services import context, sweep

log = logging.getLogger("genie.cluster")


class Cluster:
    """The Kubernetes side of one node agent."""

    def __init__(
        self, client: k8s_client.Client, *, node_name: str, networks: reg.NetworkRegistry
    ) -> None:
        self.client = client
        self.node_name = node_name
        self.pods = k8s_pods.PodWatcher(client, node_name=node_name)
        self.attachment_definitions = k8s_nads.AttachmentDefinitions(client, registry=networks)
        self.events = k8s_events.PodEvents(
            sink=k8s_events.ApiEventSink(client), node_name=node_name
        )
        self._outbox: k8s_outbox.Outbox | None = None
        self._sweep: sweep.PodGoneSweep | None = None

    def export(self, metrics: agent_metrics.AgentMetrics) -> None:
        """The Kubernetes side's own numbers, read at scrape time."""
        watched = self.pods
        metrics.read_at_scrape(
            "genie_pod_cache_pods",
            "Pods of this node in the watch cache.",
            lambda: len(watched.pods()),
        )
        metrics.read_at_scrape(
            "genie_pod_api_gets",
            "Pod GETs made because a pod was not (yet) in the cache; the hot path makes none.",
            lambda: watched.gets,
            counter=True,
        )
        metrics.read_at_scrape(
            "genie_writebacks_pending",
            "Attachments whose pod annotations are not written yet.",
            lambda: self._outbox.pending() if self._outbox else 0,
        )
        metrics.read_at_scrape(
            "genie_events_dropped",
            "Kubernetes Events dropped because the queue was full or the API stayed away.",
            lambda: self.events.dropped,
            counter=True,
        )

    def start_watches(self, tg: anyio.abc.TaskGroup) -> None:
        """Pods and NADs are watched from the start: readiness waits for the first pod list."""
        tg.start_soon(self.pods.run, name="genie-pod-watch")
        tg.start_soon(self.attachment_definitions.run, name="genie-nad-watch")

    def start_write_back(
        self, tg: anyio.abc.TaskGroup, svc: context.Services, *, pod_gone_grace: float
    ) -> None:
        """Once the log is loaded and recovered: outbox, Events and the pod-gone sweep."""
        self._outbox = k8s_outbox.Outbox(
            store=svc.store, locks=svc.locks, patcher=k8s_outbox.ApiPodPatcher(self.client)
        )
        self._sweep = sweep.PodGoneSweep(svc, grace=pod_gone_grace, present=self._present)
        gone = self._sweep
        self.pods.on_deleted(
            lambda pod: gone.pod_deleted(ev.PodRef(pod.namespace, pod.name, pod.uid))
        )
        tg.start_soon(self._outbox.run, name="genie-outbox")
        tg.start_soon(self.events.run, name="genie-events")
        tg.start_soon(self._sweep.run, name="genie-pod-gone-sweep")
        tg.start_soon(self._reconcile, name="genie-pod-gone-reconcile")

    # -- context.AttachObserver: told after each ADD, never blocks ---------------------------
    def attached(self, att: st.Attachment) -> None:
        if self._outbox is not None:
            self._outbox.notify()
        self.events.interfaces_added(att)

    def add_failed(self, pod: ev.PodRef, message: str) -> None:
        self.events.add_failed(pod, message)

    def _present(self, pod: ev.PodRef) -> bool:
        cached = self.pods.cached(namespace=pod.namespace, name=pod.name)
        return cached is not None and (not pod.uid or cached.uid == pod.uid)

    async def _reconcile(self) -> None:
        assert self._sweep is not None
        await self._sweep.reconcile_when_ready(
            ready=self.pods.ready,
            pods=lambda: [ev.PodRef(p.namespace, p.name, p.uid) for p in self.pods.pods()],
        )
