"""CNI path benchmark: genie through its shim vs the same delegates exec'd directly.

Side by side in one run, interleaved round by round so machine noise hits every mode alike:
- genie: ADD and DEL through the installed shim and a real agent (delegates concurrent);
- serial: the same delegate configs exec'd one after the other (what Multus and CNI-Genie do);
- concurrent: exec'd directly all at once (the floor genie can approach).
For 1, 2, 4, 8 bridge networks, and 4 networks of a bridge wrapped to take 100 ms longer
(a cloud ENI attach or DHCP). Also the shim's start-up vs `python3 -I -S -c pass`.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from bench import memcg, report
from genie.demo import agent_proc, netns, runtime

DEBIAN_CNI = Path("/usr/lib/cni")
SLOW_PLUGIN = "#!/bin/sh\nsleep 0.1\nexec /usr/lib/cni/bridge\n"


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.node = netns.unique_name("genie-b-node")
        self.net_dir = root / "net.d"
        self.pods_dir = root / "pods"
        self.bin_dir = root / "bin"
        self.plugins = root / "plugins"
        self.ipam = root / "ipam"
        self.socket = root / "run" / "genie.sock"
        for d in (self.net_dir, self.pods_dir, self.bin_dir, self.plugins, self.ipam):
            d.mkdir(parents=True)
        slow = self.plugins / "slowbridge"
        slow.write_text(SLOW_PLUGIN)
        slow.chmod(0o755)
        self.cni_path = [DEBIAN_CNI, self.plugins]
        self.networks: dict[str, dict[str, Any]] = {}
        self.conflist: dict[str, Any] = {}
        self.pod_ns: list[str] = []

    def network(self, name: str, octet: int, *, plugin: str = "bridge") -> None:
        gw = f"10.{octet}.0.1"
        route = "0.0.0.0/0" if not self.networks else f"10.{octet}.0.0/16"
        conf = {
            "cniVersion": "1.0.0",
            "name": name,
            "type": plugin,
            "bridge": f"gb{octet}",
            "isGateway": True,
            "ipam": {
                "type": "host-local",
                "dataDir": str(self.ipam),
                "ranges": [[{"subnet": f"10.{octet}.0.0/16", "gateway": gw}]],
                "routes": [{"dst": route, "gw": gw}],
            },
        }
        self.networks[name] = conf
        (self.net_dir / f"20-{name}.conf").write_text(json.dumps(conf))

    def pod(self, name: str, networks: Sequence[str]) -> None:
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "default",
                "annotations": {"cni": ",".join(networks)},
            },
        }
        (self.pods_dir / f"{name}.yaml").write_text(yaml.safe_dump(manifest))

    def sandbox(self, pod: str) -> runtime.Sandbox:
        name = netns.unique_name("genie-b-pod")
        self.pod_ns.append(name)
        return runtime.Sandbox(
            container_id=secrets.token_hex(16), netns=str(netns.create(name)), name=pod
        )

    def drop_sandbox(self, sandbox: runtime.Sandbox) -> None:
        name = Path(sandbox.netns).name
        netns.delete(name)
        self.pod_ns.remove(name)

    # -- the three ways -----------------------------------------------------------------
    def genie(self, command: str, sandbox: runtime.Sandbox) -> float:
        reply = runtime.invoke(
            self.bin_dir / "genie",
            command=command,
            sandbox=sandbox,
            config=runtime.plugin_config(self.conflist),
            cni_path=[self.bin_dir, DEBIAN_CNI],
        )
        if reply.exit_code != 0:
            raise RuntimeError(f"genie {command} failed: {reply.stdout} {reply.stderr}")
        return reply.elapsed

    def direct(
        self, command: str, sandbox: runtime.Sandbox, networks: Sequence[str], *, concurrent: bool
    ) -> float:
        order = list(enumerate(networks))
        if command == "DEL":
            order.reverse()
        started = time.perf_counter()
        procs = []
        for index, name in order:
            conf = self.networks[name]
            plugin = next(d / conf["type"] for d in self.cni_path if (d / conf["type"]).exists())
            env = {
                "CNI_COMMAND": command,
                "CNI_CONTAINERID": sandbox.container_id,
                "CNI_NETNS": sandbox.netns,
                "CNI_IFNAME": f"eth{index}",
                "CNI_ARGS": sandbox.cni_args(),
                "CNI_PATH": ":".join(str(p) for p in self.cni_path),
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            }
            proc = subprocess.Popen(
                [str(plugin)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(conf).encode())
            proc.stdin.close()
            if concurrent:
                procs.append(proc)
            else:
                _finish(proc, command)
        for proc in procs:
            _finish(proc, command)
        return time.perf_counter() - started


def _finish(proc: subprocess.Popen[bytes], command: str) -> None:
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    if proc.wait() != 0:
        raise RuntimeError(f"direct {command} failed: {out!r} {err!r}")


@contextlib.contextmanager
def bench_node(
    workdir: Path | None = None, *, memory_group: memcg.MemoryCgroup | None = None
) -> Iterator[Bench]:
    root = Path(tempfile.mkdtemp(prefix="genie-bench-", dir=workdir))
    bench = Bench(root)
    agent: agent_proc.AgentProcess | None = None
    try:
        netns.create(bench.node)
        for i in range(8):
            bench.network(f"net{i}", 150 + i)
        for i in range(4):
            bench.network(f"slow{i}", 170 + i, plugin="slowbridge")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "genie.cli",
                "install-cni",
                "--bin-dir",
                str(bench.bin_dir),
                "--conf-dir",
                str(root / "conf"),
                "--socket",
                str(bench.socket),
            ],
            check=True,
            capture_output=True,
        )
        bench.conflist = json.loads((root / "conf" / "00-genie.conflist").read_text())
        agent = agent_proc.AgentProcess(
            socket_path=bench.socket,
            netns=netns.NETNS_DIR / bench.node,
            log_path=root / "agent.log",
            args=[
                "--db",
                str(root / "events.db"),
                "--net-dir",
                str(bench.net_dir),
                "--cni-path",
                ":".join(str(p) for p in bench.cni_path),
                "--pods-dir",
                str(bench.pods_dir),
                "--default-network",
                "net0",
                "--log-level",
                "WARNING",
            ],
        )
        with memory_group.spawning() if memory_group else contextlib.nullcontext():
            agent.start()
        agent.wait_ready()
        with netns.enter(bench.node):  # direct plugin runs happen "on the node" too
            yield bench
    finally:
        if agent is not None:
            agent.stop()
        for name in list(bench.pod_ns):
            netns.delete(name)
        netns.delete(bench.node)
        shutil.rmtree(root, ignore_errors=True)


def _median_ms(samples: Sequence[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def measure(bench: Bench, networks: Sequence[str], rounds: int) -> dict[str, Any]:
    pod = f"p{len(networks)}-{networks[0]}"
    bench.pod(pod, networks)
    samples: dict[str, list[float]] = {
        k: []
        for k in (
            "genie_add",
            "genie_del",
            "serial_add",
            "serial_del",
            "concurrent_add",
            "concurrent_del",
        )
    }
    for _ in range(rounds + 1):  # the first round warms caches and is dropped
        round_samples: dict[str, float] = {}
        for mode in ("genie", "serial", "concurrent"):
            sandbox = bench.sandbox(pod)
            if mode == "genie":
                round_samples["genie_add"] = bench.genie("ADD", sandbox)
                round_samples["genie_del"] = bench.genie("DEL", sandbox)
            else:
                conc = mode == "concurrent"
                round_samples[f"{mode}_add"] = bench.direct(
                    "ADD", sandbox, networks, concurrent=conc
                )
                round_samples[f"{mode}_del"] = bench.direct(
                    "DEL", sandbox, networks, concurrent=conc
                )
            bench.drop_sandbox(sandbox)
        if _ > 0:
            for key, value in round_samples.items():
                samples[key].append(value)
    row: dict[str, Any] = {key: _median_ms(values) for key, values in samples.items()}
    row["ratio_add_vs_serial"] = round(row["genie_add"] / row["serial_add"], 3)
    row["ratio_add_vs_concurrent"] = round(row["genie_add"] / row["concurrent_add"], 3)
    row["rounds"] = rounds
    return row


def startup(rounds: int, shim: Path) -> dict[str, float]:
    env = {"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"}

    def timed(cmd: list[str]) -> float:
        started = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env, input=b"{}")
        return time.perf_counter() - started

    interpreter = shim.read_text().splitlines()[0][2:].split()[0]
    shim_s, floor_s = [], []
    for _ in range(rounds):
        shim_s.append(timed([str(shim)]))
        floor_s.append(timed([interpreter, "-I", "-S", "-c", "pass"]))
    return {"shim_version_ms": _median_ms(shim_s), "python_IS_pass_ms": _median_ms(floor_s)}


def measure_all(*, quick: bool, workdir: Path | None = None) -> dict[str, Any]:
    rounds = 5 if quick else 20
    results: dict[str, Any] = {"rounds": rounds, "cases": {}}
    with bench_node(workdir) as bench:
        for count in (1, 2, 4, 8):
            nets = [f"net{i}" for i in range(count)]
            results["cases"][f"bridge x{count}"] = measure(bench, nets, rounds)
        slow = ["slow0", "slow1", "slow2", "slow3"]
        results["cases"]["slow(+100ms) x4"] = measure(bench, slow, rounds)
        results["startup"] = startup(rounds * 2, bench.bin_dir / "genie")
        one = results["cases"]["bridge x1"]
        results["overhead_1_network_ms"] = round(one["genie_add"] - one["serial_add"], 2)
    return results


def table(results: dict[str, Any]) -> str:
    head = (
        f"{'case':<18}{'genie ADD':>10}{'serial':>9}{'concur.':>9}{'genie/ser':>10}"
        f"{'genie DEL':>10}{'serial':>9}{'concur.':>9}"
    )
    lines = [head, "-" * len(head)]
    for case, r in results["cases"].items():
        lines.append(
            f"{case:<18}{r['genie_add']:>10.1f}{r['serial_add']:>9.1f}{r['concurrent_add']:>9.1f}"
            f"{r['ratio_add_vs_serial']:>10.2f}{r['genie_del']:>10.1f}{r['serial_del']:>9.1f}"
            f"{r['concurrent_del']:>9.1f}"
        )
    s = results["startup"]
    lines.append(
        f"medians in ms over {results['rounds']} rounds; shim VERSION "
        f"{s['shim_version_ms']} ms vs python -I -S -c pass {s['python_IS_pass_ms']} ms; "
        f"genie overhead at 1 network {results['overhead_1_network_ms']} ms"
    )
    return "\n".join(lines)


TARGETS = {"bridge x4": "<= 1.0", "bridge x8": "<= 0.8", "slow(+100ms) x4": "<= 0.35"}


def run(*, quick: bool, workdir: Path) -> list[report.Measurement]:
    """bench/run entry: the side-by-side table on stderr, one Measurement per number."""
    results = measure_all(quick=quick, workdir=workdir)
    print(table(results), file=sys.stderr, flush=True)
    out: list[report.Measurement] = []
    for case, row in results["cases"].items():
        for key in (
            "genie_add",
            "serial_add",
            "concurrent_add",
            "genie_del",
            "serial_del",
            "concurrent_del",
        ):
            out.append(report.Measurement("cni", f"{case} {key} median", row[key], "ms"))
        out.append(
            report.Measurement(
                "cni",
                f"{case} genie/serial ADD",
                row["ratio_add_vs_serial"],
                "x",
                target=TARGETS.get(case, ""),
            )
        )
    out.append(
        report.Measurement(
            "cni",
            "shim+agent overhead, 1 network ADD",
            results["overhead_1_network_ms"],
            "ms",
            target="<= 20",
        )
    )
    startup_ms = results["startup"]
    out.append(
        report.Measurement("cni", "shim VERSION start-up", startup_ms["shim_version_ms"], "ms")
    )
    out.append(
        report.Measurement("cni", "python -I -S -c pass", startup_ms["python_IS_pass_ms"], "ms")
    )
    return out
