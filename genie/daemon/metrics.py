"""Prometheus metrics of one agent: requests, latencies, delegate failures, events appended.

Labels are bounded (CNI command, outcome, network name from the operator's net dir); nothing
from a pod (names, annotations, addresses) becomes a label, so metrics expose no pod data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import prometheus_client as prom
from prometheus_client import core as prom_core
from prometheus_client import registry as prom_registry

from genie.cni import errors

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "genie_cni_requests",
            "CNI requests handled, by command and outcome (ok, the CNI error code, or other).",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.latency = prom.Histogram(
            "genie_cni_request_seconds",
            "Time from request to reply, by CNI command.",
            ["command"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.delegate_failures = prom.Counter(
            "genie_delegate_failures",
            "Delegate plugin invocations that failed, by network and CNI command.",
            ["network", "command"],
            registry=self.registry,
        )
        self.in_flight = prom.Gauge(
            "genie_cni_in_flight",
            "CNI operations in progress.",
            registry=self.registry,
        )

    def request_done(self, command: str, code: int | None) -> None:
        """Count one CNI request: `code` None for success, else the CNI error code replied."""
        self.requests.labels(command, outcome(code)).inc()

    def delegate_failed(self, network: str, command: str) -> None:
        """A delegate chain's ADD, DEL or CHECK failed (network: the operator's config name)."""
        self.delegate_failures.labels(network, command).inc()

    def watch_event_log(
        self, *, last_seq: Callable[[], int], live_attachments: Callable[[], int]
    ) -> None:
        """Export the loaded log's state, read at each scrape: the global sequence as the count
        of events appended, and the live attachments (so whatever changed them, a request,
        recovery, GC or the pod-gone sweep, and right after a restart, the gauge is the log's).
        """
        self.read_at_scrape(
            "genie_events_appended",
            "Events committed to the attachment log (global sequence).",
            last_seq,
            counter=True,
        )
        self.read_at_scrape(
            "genie_attachments",
            "Sandboxes with recorded attachments on this node.",
            live_attachments,
        )

    def read_at_scrape(
        self, name: str, doc: str, value: Callable[[], float], *, counter: bool = False
    ) -> None:
        """A metric whose value another component keeps; read when Prometheus scrapes."""
        self.registry.register(_ReadAtScrape(name, doc, value, counter=counter))

    def exposition(self) -> bytes:
        data: bytes = prom.generate_latest(self.registry)
        return data


def outcome(code: int | None) -> str:
    """The `outcome` label: "ok", a well-known CNI or genie code, or "other" for any other
    code (plugins pick their own, e.g. host-local's 999: one label per code is unbounded)."""
    if code is None:
        return "ok"
    return str(code) if code in errors.KNOWN_CODES else "other"


class _ReadAtScrape(prom_registry.Collector):
    def __init__(self, name: str, doc: str, value: Callable[[], float], *, counter: bool) -> None:
        self._name = name
        self._doc = doc
        self._value = value
        self._counter = counter

    def collect(self) -> Iterator[prom_core.Metric]:
        family: prom_core.Metric
        if self._counter:
            family = prom_core.CounterMetricFamily(self._name, self._doc)
        else:
            family = prom_core.GaugeMetricFamily(self._name, self._doc)
        family.add_metric([], float(self._value()))
        yield family
