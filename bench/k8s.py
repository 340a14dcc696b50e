"""Kubernetes benchmark: ADD with the pod read from genie's watch cache vs one pod GET per
call (what CNI-Genie does on every ADD), and the API requests genie makes per pod.

Against a real etcd + kube-apiserver (tests/k8s/apiserver.py, RBAC mode) and a node made
as the end-to-end tests make it (node netns, loopback relay to the apiserver, the agent with
the ServiceAccount token bound to deploy/rbac.yaml, the installed shim, 2 bridge networks).

1. counted phase: N pods created beforehand, ADD of each through the shim, wait for the
   write-backs; the apiserver's own `apiserver_request_total` and the agent's /metrics are
   diffed around the ADDs (the bench itself makes no API request in that window), then
   around the DELs.
2. latency phase, interleaved pod by pod (order alternating): (a) genie as it is, ADD+DEL of
   a cached pod; (b) the same, with a GET of the pod made right before the ADD by a fresh
   genie.k8s.client (agent token, kubeconfig, new TCP+TLS connection: one exec'd plugin),
   from inside the node netns through the same relay; (b) = GET + ADD of that call.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.from_thread
from prometheus_client import parser as prom_parser

from bench import report
from genie.demo import netns, runtime
from genie.k8s import client as k8s_client
from genie.k8s import watch as k8s_watch
from tests.e2e import node as e2e_node
from tests.k8s import apiserver, relay
from tests.k8s import kube as kube_mod

REPO: Final = Path(__file__).resolve().parents[1]
RBAC: Final = REPO / "deploy" / "rbac.yaml"
NAD_CRD: Final = REPO / "deploy" / "nad-crd.yaml"
NAD_CRD_NAME: Final = "network-attachment-definitions.k8s.cni.cncf.io"
NETWORKS: Final = "net-a,net-b"
INTERFACES: Final = 2
# what the agent may touch (deploy/rbac.yaml); requests on anything else are not its own
NAD_PLURAL: Final = kube_mod.NAD_PLURAL
RESOURCES: Final = ("pods", "events", NAD_PLURAL)
SETTLE_TIMEOUT: Final = 30.0
OPEN_WATCH: Final = "OPEN"  # a watch still streaming (apiserver_request_total counts it at its end)

Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]
Requests = collections.Counter[tuple[str, str]]  # (VERB, resource) -> count


def _parse(text: str, prefixes: Sequence[str]) -> Sample:
    """Prometheus text -> {(sample name, sorted labels): value}, only names with a prefix."""
    wanted = "\n".join(line for line in text.splitlines() if line.startswith(tuple(prefixes)))
    out: Sample = {}
    for family in prom_parser.text_string_to_metric_families(wanted + "\n"):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def _value(sample: Sample, name: str) -> float:
    return sum(v for (n, _), v in sample.items() if n == name)


def _requests(sample: Sample) -> Requests:
    """Requests by (verb, resource) on the agent's resources; open watches as ("OPEN", ...)."""
    counts: Requests = collections.Counter()
    for (name, labels), value in sample.items():
        lab = dict(labels)
        if lab.get("resource") not in RESOURCES or lab.get("subresource"):
            continue
        if name == "apiserver_request_total":
            counts[(lab.get("verb", ""), lab["resource"])] += int(value)
        elif name == "apiserver_longrunning_gauge" and lab.get("verb") == "WATCH":
            counts[(OPEN_WATCH, lab["resource"])] += int(value)
    return counts


def _diff(after: Requests, before: Requests) -> Requests:
    return collections.Counter({k: after[k] - before[k] for k in after if after[k] != before[k]})


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _p90(samples: Sequence[float]) -> float:
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=10, method="inclusive")[8]


@dataclasses.dataclass
class Rig:
    """Everything of one run; made by `rig()`, which tears it all down."""

    cluster: apiserver.Cluster
    node: e2e_node.Node
    node_name: str
    portal: anyio.from_thread.BlockingPortal  # an event loop thread in the host netns
    node_portal: anyio.from_thread.BlockingPortal  # one born in the node netns
    kube: kube_mod.Kube  # admin
    agent_kubeconfig: Path  # the agent's token, through the relay from the node netns
    direct_kubeconfig: Path  # the agent's token, straight to the apiserver (what (b) uses)
    metrics_port: int
    api_at_agent_start: Requests  # the apiserver's counters just before the agent started
    namespace: str = ""

    # -- numbers ----------------------------------------------------------------------------
    def agent_metrics(self) -> Sample:
        return _parse(self.node.metrics(self.metrics_port), ["genie_"])

    def api_requests(self) -> Requests:
        return _api_requests(self.cluster)

    # -- pods and the runtime's side ---------------------------------------------------------
    def create_pods(self, prefix: str, count: int) -> list[tuple[str, str]]:
        async def create() -> list[tuple[str, str]]:
            made = []
            for i in range(count):
                name = f"{prefix}-{i}"
                pod = await self.kube.create_pod(
                    namespace=self.namespace,
                    name=name,
                    node=self.node_name,
                    annotations={"cni": NETWORKS},
                )
                made.append((name, str(pod["metadata"]["uid"])))
            return made

        return self.portal.call(create)

    def sandbox(self, name: str, uid: str) -> runtime.Sandbox:
        base = self.node.sandbox(name, namespace=self.namespace)
        return dataclasses.replace(base, uid=uid)

    def cni(self, command: str, sandbox: runtime.Sandbox) -> float:
        reply = self.node.cni(command, sandbox)
        if reply.exit_code != 0:
            raise RuntimeError(f"genie {command} failed: {reply.stdout} {reply.stderr}")
        if command == "ADD" and len(reply.json().get("interfaces", [])) < INTERFACES:
            raise RuntimeError(f"ADD gave fewer than {INTERFACES} interfaces: {reply.stdout}")
        return reply.elapsed

    def drop(self, sandbox: runtime.Sandbox) -> None:
        netns.delete(Path(sandbox.netns).name)

    def fresh_get(self, name: str, *, via_relay: bool = False) -> tuple[float, float]:
        """One pod GET as a per-call plugin makes it: a new client with the agent's token,
        a new TCP+TLS connection, the body read and decoded. (client set-up s, GET s): the
        set-up is Python's (kubeconfig load, ApiClient); a Go plugin's is a fraction of it.
        Straight to the apiserver, or from the node netns through the test relay."""
        kubeconfig = self.agent_kubeconfig if via_relay else self.direct_kubeconfig

        async def get() -> tuple[float, float]:
            started = time.perf_counter()
            client = await k8s_client.connect(kubeconfig=kubeconfig)
            assert client is not None
            ready = time.perf_counter()
            try:
                await _read_pod(client, namespace=self.namespace, name=name)
                return ready - started, time.perf_counter() - ready
            finally:
                await client.close()

        return (self.node_portal if via_relay else self.portal).call(get)

    def warm_gets(self, names: Sequence[str]) -> list[float]:
        """The same GETs on one kept-alive client (the floor a daemon doing GETs would pay)."""

        async def gets() -> list[float]:
            client = await k8s_client.connect(kubeconfig=self.direct_kubeconfig)
            assert client is not None
            try:
                await _read_pod(client, namespace=self.namespace, name=names[0])  # connect
                out = []
                for name in names:
                    started = time.perf_counter()
                    await _read_pod(client, namespace=self.namespace, name=name)
                    out.append(time.perf_counter() - started)
                return out
            finally:
                await client.close()

        return self.portal.call(gets)

    def wait(self, check: Callable[[], bool], *, within: float, what: str) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.05)
        print(f"k8s bench: not true after {within} s: {what}", file=sys.stderr, flush=True)
        return False


def _api_requests(cluster: apiserver.Cluster) -> Requests:
    """The apiserver's own request counters (admin token), on the agent's resources."""
    status, text = cluster.request("GET", "/metrics")
    if status != 200 or not isinstance(text, str):
        raise apiserver.HarnessError(f"apiserver /metrics: HTTP {status}")
    return _requests(_parse(text, ["apiserver_request_total", "apiserver_longrunning_gauge"]))


async def _read_pod(client: k8s_client.Client, *, namespace: str, name: str) -> dict[str, Any]:
    resp: Any = await client.core.read_namespaced_pod(name, namespace, _preload_content=False)
    async with resp:
        body = await k8s_watch.read_limited(resp, k8s_watch.MAX_LINE)
        if resp.status != 200:
            raise RuntimeError(f"GET pod {namespace}/{name}: HTTP {resp.status}")
    return k8s_watch.decode(body)  # json, as the plugin would decode it


@contextlib.contextmanager
def rig(workdir: Path) -> Iterator[Rig]:
    """Cluster, node, agent, admin client: all of it removed on exit, even on failure."""
    binary = apiserver.build_apiserver()
    shm = Path("/dev/shm")
    cluster_root = Path(
        tempfile.mkdtemp(prefix="genie-bench-k8s-", dir=shm if shm.is_dir() else None)
    )
    node: e2e_node.Node | None = None
    try:
        with contextlib.ExitStack() as stack:
            cluster = stack.enter_context(
                apiserver.Cluster.running(binary=binary, root=cluster_root)
            )
            cluster.apply_file(NAD_CRD)
            cluster.wait_crd(NAD_CRD_NAME)
            cluster.agent_kubeconfig(cluster_root / "genie.kubeconfig", rbac=RBAC)
            token = cluster.service_account_token(namespace="kube-system", name="genie")
            node = e2e_node.Node(workdir / "node")
            node.prepare()
            agent_kubeconfig = stack.enter_context(
                relay.agent_kubeconfig(
                    node.name, cluster.port, workdir / "agent.kubeconfig", token=token
                )
            )
            direct_kubeconfig = apiserver.write_kubeconfig(
                workdir / "direct.kubeconfig", server=cluster.url, token=token, user="genie"
            )
            node.bridge("net-a", octet=231, default_route=True)
            node.bridge("net-b", octet=232)
            node_name = kube_mod.unique("node")
            metrics_port = apiserver.free_port()
            flags = ["--kubeconfig", str(agent_kubeconfig), "--node-name", node_name]
            flags += ["--metrics-addr", f"127.0.0.1:{metrics_port}", "--log-level", "WARNING"]
            api_at_agent_start = _api_requests(cluster)
            node.start_agent(extra_args=tuple(flags))
            portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
            with netns.enter(node.name):  # this loop's thread is born in the node netns
                node_portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
            kube = stack.enter_context(
                portal.wrap_async_context_manager(kube_mod.admin(cluster.admin_kubeconfig))
            )
            bench = Rig(
                cluster=cluster,
                node=node,
                node_name=node_name,
                portal=portal,
                node_portal=node_portal,
                kube=kube,
                agent_kubeconfig=agent_kubeconfig,
                direct_kubeconfig=direct_kubeconfig,
                metrics_port=metrics_port,
                api_at_agent_start=api_at_agent_start,
            )
            bench.namespace = portal.call(kube.create_namespace)
            stack.callback(node.stop_agent)  # before the cluster, the relay and the portal
            yield bench
    finally:
        if node is not None:
            node.close()
        shutil.rmtree(cluster_root, ignore_errors=True)


# -- the two phases ------------------------------------------------------------------------
def counted_phase(bench: Rig, pods: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """ADD every pod, wait for its write-back and Events, DEL every pod; API requests of each
    half (apiserver side) and the agent's own counters."""
    sandboxes = [bench.sandbox(name, uid) for name, uid in pods]
    agent_before, api_before = bench.agent_metrics(), bench.api_requests()
    add_s = [bench.cni("ADD", sb) for sb in sandboxes]

    def settled() -> bool:
        if _value(bench.agent_metrics(), "genie_writebacks_pending") > 0:
            return False
        made = _diff(bench.api_requests(), api_before)
        return made[("POST", "events")] >= INTERFACES * len(pods)

    settled_ok = bench.wait(settled, within=SETTLE_TIMEOUT, what="write-backs and Events done")
    time.sleep(0.5)  # anything late (a retried patch, an extra Event) lands in the window too
    agent_mid, api_mid = bench.agent_metrics(), bench.api_requests()
    for sb in sandboxes:
        bench.cni("DEL", sb)
        bench.drop(sb)
    time.sleep(0.5)
    api_after = bench.api_requests()
    return {
        "pods": len(pods),
        "add_ms": [_ms(s) for s in add_s],
        "settled": settled_ok,
        "add_requests": _diff(api_mid, api_before),
        "del_requests": _diff(api_after, api_mid),
        "agent_gets": _value(agent_mid, "genie_pod_api_gets_total")
        - _value(agent_before, "genie_pod_api_gets_total"),
    }


def latency_phase(
    bench: Rig, cached: Sequence[tuple[str, str]], fetched: Sequence[tuple[str, str]]
) -> dict[str, list[float]]:
    """Round i: (a) ADD+DEL of cached[i]; (b) GET + ADD+DEL of fetched[i]; order alternates."""
    bench.fresh_get(fetched[0][0])  # untimed: the clients' first-use costs
    bench.fresh_get(fetched[0][0], via_relay=True)
    keys = ("a_add", "a_del", "client_setup", "get", "relay_get", "b_add", "b_del")
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for i, (a_pod, b_pod) in enumerate(zip(cached, fetched, strict=True)):
        modes = ("a", "b") if i % 2 == 0 else ("b", "a")
        for mode in modes:
            name, uid = a_pod if mode == "a" else b_pod
            sb = bench.sandbox(name, uid)
            if mode == "b":
                samples["relay_get"].append(bench.fresh_get(name, via_relay=True)[1])  # info
                setup, get = bench.fresh_get(name)
                samples["client_setup"].append(setup)
                samples["get"].append(get)
            samples[f"{mode}_add"].append(bench.cni("ADD", sb))
            samples[f"{mode}_del"].append(bench.cni("DEL", sb))
            bench.drop(sb)
    samples["b_total"] = [g + a for g, a in zip(samples["get"], samples["b_add"], strict=True)]
    samples["warm_get"] = bench.warm_gets([name for name, _ in fetched])
    return samples


def measure(*, quick: bool, workdir: Path) -> dict[str, Any]:
    n = 10 if quick else 30
    with rig(workdir) as bench:
        agent_start = bench.agent_metrics()
        counted = bench.create_pods("count", n)
        cached = bench.create_pods("cached", n)
        fetched = bench.create_pods("fetched", n)
        bench.wait(
            lambda: _value(bench.agent_metrics(), "genie_pod_cache_pods") >= 3 * n,
            within=SETTLE_TIMEOUT,
            what=f"{3 * n} pods in the agent's cache",
        )
        count = counted_phase(bench, counted)
        lat = latency_phase(bench, cached, fetched)
        # the bench's own pod GETs in the latency phase: 2 warm-ups, 2n fresh, n+1 kept-alive
        bench_gets = 2 + len(lat["get"]) + len(lat["relay_get"]) + 1 + len(lat["warm_get"])
        agent_end = bench.agent_metrics()
        whole = _diff(bench.api_requests(), bench.api_at_agent_start)

    def agent_delta(name: str) -> float:
        return _value(agent_end, name) - _value(agent_start, name)

    return {
        "n": n,
        "count": count,
        "lat": lat,
        "whole": whole,
        "adds": 3 * n,
        "bench_gets": bench_gets,
        "agent_gets": agent_delta("genie_pod_api_gets_total"),
        "agent_adds": sum(
            v
            for (name, labels), v in agent_end.items()
            if name == "genie_cni_requests_total" and ("command", "ADD") in labels
        ),
        "pending_at_end": _value(agent_end, "genie_writebacks_pending"),
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    lat, count, whole = results["lat"], results["count"], results["whole"]
    pods = count["pods"]
    out: dict[str, Any] = {}
    keys = ("a_add", "b_total", "get", "warm_get", "relay_get", "client_setup", "b_add")
    for key in (*keys, "a_del", "b_del"):
        out[f"{key}_median"] = _ms(statistics.median(lat[key]))
        out[f"{key}_p90"] = _ms(_p90(lat[key]))
    out["ratio"] = round(out["b_total_median"] / out["a_add_median"], 2)
    out["ratio_p90"] = round(out["b_total_p90"] / out["a_add_p90"], 2)
    added = count["add_requests"]
    out["api_gets"] = added[("GET", "pods")]
    out["patches"] = added[("PATCH", "pods")]
    out["events"] = added[("POST", "events")]
    out["other_add_requests"] = sum(added.values()) - out["api_gets"] - out["patches"]
    out["other_add_requests"] -= out["events"]
    out["del_requests"] = sum(count["del_requests"].values())
    out["per_pod"] = {
        "gets": out["api_gets"] / pods,
        "patches": out["patches"] / pods,
        "events": out["events"] / pods,
    }
    out["pod_list_watch"] = (
        whole[("LIST", "pods")] + whole[("WATCH", "pods")] + whole[(OPEN_WATCH, "pods")]
    )
    out["nad_list_watch"] = sum(whole[(verb, NAD_PLURAL)] for verb in ("LIST", "WATCH", OPEN_WATCH))
    out["whole_pod_gets_not_bench"] = whole[("GET", "pods")] - results["bench_gets"]
    return out


def _fmt(counts: Requests) -> str:
    return ", ".join(f"{verb} {res} {n}" for (verb, res), n in sorted(counts.items())) or "none"


def table(results: dict[str, Any], s: dict[str, Any]) -> str:
    n, count = results["n"], results["count"]
    head = f"{'ADD, pod with 2 networks, through the shim':<52}{'median':>9}{'p90':>9}"
    rows = [
        ("(a) genie: pod from the watch cache", "a_add"),
        ("(b) pod GET + ADD (CNI-Genie: GET on every ADD)", "b_total"),
        ("    GET: new TCP+TLS connection, agent token", "get"),
        ("    ADD part of (b)", "b_add"),
        ("    GET on a kept-alive connection (floor)", "warm_get"),
        ("    Python client set-up, not counted in (b)", "client_setup"),
        ("    GET from the node netns via the test relay *", "relay_get"),
        ("DEL (a)", "a_del"),
        ("DEL (b)", "b_del"),
    ]
    lines = [head, "-" * len(head)]
    for label, key in rows:
        lines.append(f"{label:<52}{s[f'{key}_median']:>9.1f}{s[f'{key}_p90']:>9.1f}")
    lines.append(
        f"(b)/(a): {s['ratio']:.2f}x at the median, {s['ratio_p90']:.2f}x at p90; ms, {n} pods"
        " per mode, interleaved pod by pod (order alternating), same apiserver, same token"
    )
    lines.append(
        "* not in (b): through tests/k8s/relay.py (a thread per direction into the node netns);"
        " a real node has no relay"
    )
    lines.append("")
    per = s["per_pod"]
    lines.append(
        f"API requests while {count['pods']} pods were ADDed and written back "
        f"(apiserver_request_total, settled: {count['settled']}): {_fmt(count['add_requests'])}"
    )
    lines.append(
        f"  per pod: pod GETs {per['gets']:.2f}, pod PATCHes {per['patches']:.2f},"
        f" Events {per['events']:.2f} ({INTERFACES} interfaces); during the DELs:"
        f" {_fmt(count['del_requests'])}"
    )
    lines.append(
        f"whole run ({results['adds']} ADDs): {_fmt(results['whole'])}; OPEN = watches still"
        f" streaming. Pod GETs not made by the bench itself: {s['whole_pod_gets_not_bench']};"
        f" agent genie_pod_api_gets_total +{results['agent_gets']:.0f}"
        f" over {results['agent_adds']:.0f} ADDs"
    )
    return "\n".join(lines)


def run(*, quick: bool, workdir: Path) -> list[report.Measurement]:
    """bench/run entry: the side-by-side table on stderr, one Measurement per number."""
    results = measure(quick=quick, workdir=workdir)
    s = summarize(results)
    print(table(results, s), file=sys.stderr, flush=True)
    n, pods, adds = results["n"], results["count"]["pods"], results["agent_adds"]
    how_a = f"genie as it is: {n} pods created beforehand (in the watch cache), ADD via the shim"
    how_b = (
        "right before the shim ADD, GET of the pod through a fresh genie.k8s.client (agent"
        " token, new TCP+TLS connection straight to the apiserver, body decoded; Python"
        " client set-up excluded), (b) = GET + ADD of that call"
    )

    def m(name: str, value: float, unit: str, target: str = "", detail: str = "") -> None:
        out.append(report.Measurement("k8s", name, value, unit, target=target, detail=detail))

    out: list[report.Measurement] = []
    m("ADD (a) pod cached, median", s["a_add_median"], "ms", detail=how_a)
    m("ADD (a) pod cached, p90", s["a_add_p90"], "ms")
    m("ADD (b) + pod GET per call, median", s["b_total_median"], "ms", detail=how_b)
    m("ADD (b) + pod GET per call, p90", s["b_total_p90"], "ms")
    m("(b)/(a) median", s["ratio"], "x", detail=f"p90: {s['ratio_p90']}x")
    m("pod GET, new connection, median", s["get_median"], "ms", detail=f"p90 {s['get_p90']}")
    m("pod GET, kept-alive, median", s["warm_get_median"], "ms", detail="floor of a GET")
    m(
        "pod GET via the test relay, median",
        s["relay_get_median"],
        "ms",
        detail="not in (b): the test relay into the node netns adds its own hops",
    )
    m(
        "pod GETs per ADD (agent)",
        results["agent_gets"] / max(adds, 1),
        "GET/ADD",
        target="<= 0",
        detail=f"genie_pod_api_gets_total +{results['agent_gets']:.0f} over {adds:.0f} ADDs",
    )
    m(
        "pod GETs per ADD (apiserver)",
        s["per_pod"]["gets"],
        "GET/ADD",
        target="<= 0",
        detail=f"apiserver_request_total GET pods while {pods} pods were ADDed",
    )
    m(
        "pod PATCHes per pod",
        s["per_pod"]["patches"],
        "PATCH/pod",
        target="<= 1",
        detail=f"{s['patches']} for {pods} pods (both annotations in one merge patch)",
    )
    m(
        "write-backs pending after settling",
        results["pending_at_end"],
        "pods",
        target="<= 0",
        detail="genie_writebacks_pending at the end",
    )
    m(
        "Events created per pod",
        s["per_pod"]["events"],
        "Event/pod",
        detail=f"{s['events']} for {pods} pods; {INTERFACES} expected (AddedInterface each)",
    )
    m(
        "API requests per DEL",
        s["del_requests"] / pods,
        "req/DEL",
        target="<= 0",
        detail="DEL reads only the event log",
    )
    m(
        "pod LIST+WATCH, whole run",
        s["pod_list_watch"],
        "requests",
        target="<= 2",
        detail=f"not per pod: {adds:.0f} ADDs; NADs {s['nad_list_watch']}; watch renews / 300 s",
    )
    return out
