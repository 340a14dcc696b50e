"""Overload: a burst of 250 concurrent ADDs (a node after reboot) through the shim, one agent.

Every pod asks for 2 bridge networks (host-local /16 ranges), all shims are started at once,
and all must succeed; then all are DEL'd at once and host-local must hold nothing. Reported:
failures, the agent's peak RSS (VmHWM from /proc), the peak memory of the agent with every
plugin it ran (a memory cgroup around them, as the DaemonSet's limit counts it; page cache
included), ADD latency p50/p99 as the runtime sees it (shim exec to exit), wall time.
Concurrency inside the agent is bounded by max_requests and max_delegates
(genie/daemon/config.py): the rest of the burst waits, it is not refused.
Multus thick plugin is OOM-killed in this situation (multus-cni issue 1346).
"""

from __future__ import annotations

import ipaddress
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path

from bench import cni, memcg, report
from genie.demo import runtime

NETWORKS = ("net0", "net1")
TARGET_RSS_MIB = 150


def agent_pid(socket_path: Path) -> int:
    """The `genie agent` serving `socket_path` (nsenter execs it: its pid is python's)."""
    wanted = [b"genie.cli", b"agent", str(socket_path).encode()]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if all(w in argv for w in wanted) and b"nsenter" not in argv[0]:
            return int(entry.name)
    raise RuntimeError(f"no genie agent process serving {socket_path}")


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def allocations(ipam: Path) -> int:
    """Addresses host-local holds: files named as IPs under <dataDir>/<network>/."""
    held = 0
    for network in ipam.iterdir() if ipam.is_dir() else ():
        for entry in network.iterdir() if network.is_dir() else ():
            try:
                ipaddress.ip_address(entry.name)
            except ValueError:
                continue
            held += 1
    return held


def burst(
    call: Callable[[runtime.Sandbox], runtime.PluginReply], sandboxes: Sequence[runtime.Sandbox]
) -> tuple[list[runtime.PluginReply], float]:
    """Run `call` for every sandbox at the same instant (one thread each); replies, wall time."""
    gate = threading.Barrier(len(sandboxes) + 1)

    def one(sandbox: runtime.Sandbox) -> runtime.PluginReply:
        gate.wait()
        return call(sandbox)

    with futures.ThreadPoolExecutor(max_workers=len(sandboxes)) as pool:
        pending = [pool.submit(one, s) for s in sandboxes]
        gate.wait()
        started = time.perf_counter()
        replies = [p.result() for p in pending]
        return replies, time.perf_counter() - started


def _percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(*, quick: bool, workdir: Path) -> list[report.Measurement]:
    pods = 100 if quick else 250
    with (
        memcg.child("genie-burst") as group,
        cni.bench_node(workdir, memory_group=group) as node,
    ):
        pid = agent_pid(node.socket)
        rss_idle = status_kib(pid, "VmRSS") / 1024
        sandboxes = []
        for i in range(pods):
            node.pod(f"burst-{i}", NETWORKS)
            sandboxes.append(node.sandbox(f"burst-{i}"))
        conf = runtime.plugin_config(node.conflist)

        def invoke(command: str) -> Callable[[runtime.Sandbox], runtime.PluginReply]:
            def call(sandbox: runtime.Sandbox) -> runtime.PluginReply:
                return runtime.invoke(
                    node.bin_dir / "genie",
                    command=command,
                    sandbox=sandbox,
                    config=conf,
                    cni_path=[node.bin_dir, cni.DEBIAN_CNI],
                )

            return call

        adds, add_wall = burst(invoke("ADD"), sandboxes)
        add_failures = [r for r in adds if r.exit_code != 0]
        peak_after_add = status_kib(pid, "VmHWM") / 1024
        dels, del_wall = burst(invoke("DEL"), sandboxes)
        del_failures = [r for r in dels if r.exit_code != 0]
        peak = status_kib(pid, "VmHWM") / 1024
        group_peak = group.peak_mib() if group is not None else None
        group_cache = group.page_cache_mib() if group is not None else None
        left = allocations(node.ipam)
        for failed in (add_failures + del_failures)[:3]:
            print(f"burst: failure: {failed.stdout[:300]} {failed.stderr[:300]}", file=sys.stderr)
    latencies = [r.elapsed * 1000 for r in adds]
    detail = f"{pods} pods x {len(NETWORKS)} bridge networks, all shims started at once"
    print(
        f"burst: {pods} ADDs in {add_wall:.1f} s ({len(add_failures)} failed), "
        f"{pods} DELs in {del_wall:.1f} s ({len(del_failures)} failed); agent RSS "
        f"{rss_idle:.0f} MiB idle, peak {peak:.0f} MiB ({peak_after_add:.0f} after the ADDs); "
        f"{left} addresses left; cpus {len(os.sched_getaffinity(0))}",
        file=sys.stderr,
    )
    m = report.Measurement
    if group_peak is None or group_cache is None:
        print("burst: no memory cgroup could be made here: agent+plugins peak not measured")
        with_plugins = []
    else:
        with_plugins = [
            m(
                "burst",
                "agent + plugins peak (memory cgroup)",
                group_peak,
                "MiB",
                detail=f"what the DaemonSet limit counts; {group_cache:.0f} MiB of it page cache",
            )
        ]
    return [
        m("burst", f"ADD failures ({pods} concurrent)", len(add_failures), "pods", "<= 0", detail),
        m("burst", "agent peak RSS (VmHWM)", peak, "MiB", f"<= {TARGET_RSS_MIB}", detail),
        *with_plugins,
        m("burst", "agent RSS before the burst", rss_idle, "MiB"),
        m("burst", "ADD latency p50", statistics.median(latencies), "ms", "", "shim exec to exit"),
        m("burst", "ADD latency p99", _percentile(latencies, 0.99), "ms", "", "shim exec to exit"),
        m("burst", "ADD latency max", max(latencies), "ms"),
        m("burst", "ADD burst wall time", add_wall, "s"),
        m("burst", "DEL burst wall time", del_wall, "s"),
        m("burst", f"DEL failures ({pods} concurrent)", len(del_failures), "pods", "<= 0"),
        m("burst", "addresses left after DEL", left, "addresses", "<= 0", "host-local files"),
    ]
