"""`genie demo`: the whole feature on one machine, no cluster, cleaned up even on Ctrl-C.

A node namespace with two bridge networks, two pods (CNI-Genie and Multus annotation syntax),
the real agent, the installed shim driven as kubelet would, pings over both networks, the audit
log, DEL, and a check that host-local holds no address afterwards.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from genie.demo import agent_proc, netns, runtime

DEBIAN_CNI = Path("/usr/lib/cni")
NETWORKS = {
    "tenant-a": {"bridge": "gbr-a", "subnet": "10.201.0", "route": "0.0.0.0/0"},
    "tenant-b": {"bridge": "gbr-b", "subnet": "10.202.0", "route": "10.202.0.0/16"},
}
PODS = {
    "dispatcher": {"cni": "tenant-a,tenant-b"},
    "worker": {"k8s.v1.cni.cncf.io/networks": "tenant-b"},
}


def bridge_conf(name: str, ipam_dir: Path) -> dict[str, Any]:
    spec = NETWORKS[name]
    gateway = f"{spec['subnet']}.1"
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "bridge",
        "bridge": spec["bridge"],
        "isGateway": True,
        "ipam": {
            "type": "host-local",
            "dataDir": str(ipam_dir),
            "ranges": [[{"subnet": f"{spec['subnet']}.0/24", "gateway": gateway}]],
            "routes": [{"dst": spec["route"], "gw": gateway}],
        },
    }


def pod_manifest(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "pause"}]},
    }


def say(text: str = "") -> None:
    print(text, flush=True)


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="genie-demo-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _delete_all(names: list[str]) -> None:
    for name in reversed(names):
        netns.delete(name)


def run() -> int:  # a linear script reads best in one piece
    if not DEBIAN_CNI.joinpath("bridge").exists():
        say(
            f"genie demo: the reference CNI plugins are not in {DEBIAN_CNI} "
            "(apt-get install containernetworking-plugins)"
        )
        return 2
    names: list[str] = []
    with workspace() as root, contextlib.ExitStack() as cleanup:
        cleanup.callback(_delete_all, names)
        node = netns.unique_name("genie-demo-node")
        names.append(node)
        node_path = netns.create(node)
        net_dir, pods_dir, bin_dir, conf_dir = (root / d for d in ("net.d", "pods", "bin", "conf"))
        for d in (net_dir, pods_dir, bin_dir, conf_dir):
            d.mkdir()
        ipam_dir = root / "ipam"
        for network in NETWORKS:
            (net_dir / f"10-{network}.conf").write_text(json.dumps(bridge_conf(network, ipam_dir)))
        for pod, annotations in PODS.items():
            (pods_dir / f"{pod}.yaml").write_text(yaml.safe_dump(pod_manifest(pod, annotations)))
        socket_path = root / "run" / "genie.sock"
        db = root / "events.db"
        say(f"node namespace {node}; networks {', '.join(NETWORKS)}; pods {', '.join(PODS)}")
        genie = [sys.executable, "-m", "genie.cli"]
        subprocess.run(
            [
                *genie,
                "install-cni",
                "--bin-dir",
                str(bin_dir),
                "--conf-dir",
                str(conf_dir),
                "--socket",
                str(socket_path),
            ],
            check=True,
        )
        conflist = json.loads((conf_dir / "00-genie.conflist").read_text())
        agent = agent_proc.AgentProcess(
            socket_path=socket_path,
            netns=node_path,
            log_path=root / "agent.log",
            args=[
                "--db",
                str(db),
                "--net-dir",
                str(net_dir),
                "--cni-path",
                str(DEBIAN_CNI),
                "--pods-dir",
                str(pods_dir),
                "--default-network",
                "tenant-a",
            ],
        )
        cleanup.callback(agent.stop)
        agent.start()
        agent.wait_ready()
        say(f"agent ready on {socket_path} (log {root / 'agent.log'})\n")

        sandboxes: dict[str, runtime.Sandbox] = {}
        for pod in PODS:
            ns_name = netns.unique_name(f"genie-demo-{pod}")
            names.append(ns_name)
            sandboxes[pod] = runtime.Sandbox(
                container_id=secrets.token_hex(16), netns=str(netns.create(ns_name)), name=pod
            )
        config = runtime.plugin_config(conflist)
        for pod, sandbox in sandboxes.items():
            reply = runtime.invoke(
                bin_dir / "genie",
                command="ADD",
                sandbox=sandbox,
                config=config,
                cni_path=[bin_dir, DEBIAN_CNI],
            )
            if reply.exit_code != 0:
                say(f"ADD {pod} failed: {reply.stdout}{reply.stderr}")
                return 1
            result = reply.json()
            ips = ", ".join(
                f"{result['interfaces'][ip['interface']]['name']}={ip['address']}"
                for ip in result["ips"]
            )
            say(f"ADD {pod:<10} {reply.elapsed * 1000:6.1f} ms  runtime got: {ips}")

        say("\ninside the pod namespaces:")
        seen: dict[str, dict[str, list[str]]] = {}
        for pod, sandbox in sandboxes.items():
            seen[pod] = netns.addresses(Path(sandbox.netns).name)
            for ifname, cidrs in sorted(seen[pod].items()):
                say(f"  {pod:<10} {ifname:<5} {' '.join(cidrs)}")
        say("\npings from dispatcher to worker:")
        ok = True
        for ifname, cidrs in sorted(seen["worker"].items()):
            for cidr in cidrs:
                reached = netns.ping(Path(sandboxes["dispatcher"].netns).name, cidr.split("/")[0])
                ok &= reached
                say(f"  worker {ifname} {cidr:<16} {'reachable' if reached else 'UNREACHABLE'}")

        for pod, sandbox in sandboxes.items():
            for attempt in ("DEL", "DEL again"):
                reply = runtime.invoke(
                    bin_dir / "genie",
                    command="DEL",
                    sandbox=sandbox,
                    config=config,
                    cni_path=[bin_dir, DEBIAN_CNI],
                )
                say(
                    f"{attempt:<9} {pod:<10} exit {reply.exit_code} "
                    f"{reply.elapsed * 1000:6.1f} ms {reply.stdout.strip()}"
                )
                ok &= reply.exit_code == 0
        say("\ngenie events (the audit log: every attach and detach):")
        subprocess.run([*genie, "events", "--db", str(db)], check=False)
        say("\ngenie state after DEL:")
        subprocess.run([*genie, "state", "--db", str(db)], check=False)
        leftovers = [p for p in ipam_dir.rglob("*") if p.is_file() and p.name[0].isdigit()]
        say(f"host-local allocations left: {len(leftovers)}")
        ok &= not leftovers
        agent.stop()
        say("demo " + ("passed" if ok else "FAILED") + "; cleaning up")
        return 0 if ok else 1
