"""A simulated node for end-to-end tests: node netns, real agent, installed shim, pod netns.

Everything a test creates goes through this object so teardown can remove it all: the agent
process, every namespace (and with it every link), the temp dir with host-local's data.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from genie.demo import agent_proc, netns, runtime
from tests.support import cniconf

DEBIAN_CNI = Path("/usr/lib/cni")


class Node:
    def __init__(self, root: Path, *, socket: Path | None = None) -> None:
        self.root = root
        self.net_dir = root / "net.d"
        self.pods_dir = root / "pods"
        self.bin_dir = root / "bin"
        self.conf_dir = root / "conf"
        self.ipam_dir = root / "ipam"
        self.db = root / "events.db"
        self.socket = socket or root / "run" / "genie.sock"
        for d in (self.net_dir, self.pods_dir, self.bin_dir, self.conf_dir, self.ipam_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.name = netns.unique_name("genie-t-node")
        self._namespaces: list[str] = []
        self.agent: agent_proc.AgentProcess | None = None
        self.conflist: dict[str, Any] = {}
        self._agent_flags: tuple[str, tuple[str, ...]] = ("net-a", ())

    # -- set-up -----------------------------------------------------------------------
    def start(self, *, default_network: str = "net-a", extra_args: tuple[str, ...] = ()) -> None:
        self.prepare()
        self.start_agent(default_network=default_network, extra_args=extra_args)

    def prepare(self) -> None:
        """The node namespace and the installed shim, without the agent yet."""
        self._namespaces.append(self.name)
        netns.create(self.name)
        self.install_shim()

    def install_shim(self) -> None:
        """`genie install-cni` into this node's dirs, as the DaemonSet's init container runs it."""
        subprocess.run(
            [
                sys.executable,
                "-m",
                "genie.cli",
                "install-cni",
                "--bin-dir",
                str(self.bin_dir),
                "--conf-dir",
                str(self.conf_dir),
                "--socket",
                str(self.socket),
            ],
            check=True,
            capture_output=True,
        )
        self.conflist = json.loads((self.conf_dir / "00-genie.conflist").read_text())

    def start_agent(
        self, *, default_network: str = "net-a", extra_args: tuple[str, ...] = ()
    ) -> None:
        self._agent_flags = (default_network, extra_args)
        self.agent = agent_proc.AgentProcess(
            socket_path=self.socket,
            netns=netns.NETNS_DIR / self.name,
            log_path=self.root / "agent.log",
            args=[
                "--db",
                str(self.db),
                "--net-dir",
                str(self.net_dir),
                "--cni-path",
                f"{DEBIAN_CNI}:{self.root / 'plugins'}",
                "--pods-dir",
                str(self.pods_dir),
                "--default-network",
                default_network,
                *extra_args,
            ],
        )
        self.agent.start()
        self.agent.wait_ready()

    def restart_agent(self) -> None:
        """Stop the agent (SIGTERM) and start it again with the same flags."""
        default_network, extra_args = self._agent_flags
        self.stop_agent()
        self.start_agent(default_network=default_network, extra_args=extra_args)

    def stop_agent(self) -> int:
        code = self.agent.stop() if self.agent else 0
        self.agent = None
        return code

    def close(self) -> None:
        self.stop_agent()
        for name in reversed(self._namespaces):
            netns.delete(name)

    def agent_log(self) -> str:
        path = self.root / "agent.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def metrics(self, port: int) -> str:
        """The agent's /metrics text, read inside the node netns (its loopback is the node's)."""
        with netns.enter(self.name):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/metrics")
                return conn.getresponse().read(4 << 20).decode()
            finally:
                conn.close()

    # -- networks and pods ------------------------------------------------------------
    def bridge(
        self, name: str, *, octet: int, default_route: bool = False, **extra: Any
    ) -> dict[str, Any]:
        gateway = f"10.{octet}.0.1"
        route = "0.0.0.0/0" if default_route else f"10.{octet}.0.0/16"
        conf = {
            "cniVersion": "1.0.0",
            "name": name,
            "type": "bridge",
            "bridge": f"gb{octet}",
            "isGateway": True,
            "ipam": {
                "type": "host-local",
                "dataDir": str(self.ipam_dir),
                "ranges": [[{"subnet": f"10.{octet}.0.0/24", "gateway": gateway}]],
                "routes": [{"dst": route, "gw": gateway}],
            },
            **extra,
        }
        self.write_network(f"20-{name}.conf", conf)
        return conf

    def write_network(self, filename: str, conf: Mapping[str, Any]) -> Path:
        path = self.net_dir / filename
        tmp = path.with_suffix(".tmp~")
        tmp.write_text(json.dumps(conf))
        tmp.rename(path)
        return path

    def pod(
        self, name: str, annotations: Mapping[str, str] | None = None, *, namespace: str = "default"
    ) -> None:
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": dict(annotations or {}),
            },
        }
        (self.pods_dir / f"{namespace}-{name}.yaml").write_text(yaml.safe_dump(manifest))

    def sandbox(
        self, pod: str, *, namespace: str = "default", ifname: str = "eth0"
    ) -> runtime.Sandbox:
        name = netns.unique_name("genie-t-pod")
        self._namespaces.append(name)
        path = netns.create(name)
        return runtime.Sandbox(
            container_id=secrets.token_hex(16),
            netns=str(path),
            namespace=namespace,
            name=pod,
            ifname=ifname,
        )

    # -- the runtime's side -----------------------------------------------------------
    def cni(
        self,
        command: str,
        sandbox: runtime.Sandbox | None,
        *,
        cni_version: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> runtime.PluginReply:
        conf = (
            dict(config)
            if config is not None
            else runtime.plugin_config(self.conflist, cni_version=cni_version)
        )
        return runtime.invoke(
            self.bin_dir / "genie",
            command=command,
            sandbox=sandbox,
            config=conf,
            cni_path=[self.bin_dir, DEBIAN_CNI],
        )

    # -- ground truth -----------------------------------------------------------------
    def allocations(self) -> dict[str, list[str]]:
        """host-local's own files: network -> allocated IPs (the leak check)."""
        return cniconf.host_local_allocations(self.ipam_dir)

    def genie(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "genie.cli", *args], check=False, capture_output=True, text=True
        )

    def state(self) -> list[dict[str, Any]]:
        out = self.genie("state", "--db", str(self.db), "--json")
        assert out.returncode == 0, out.stderr
        attachments: list[dict[str, Any]] = json.loads(out.stdout)["attachments"]
        return attachments


@contextlib.contextmanager
def running_node(root: Path, *, socket: Path | None = None, **kwargs: Any) -> Iterator[Node]:
    node = Node(root, socket=socket)
    try:
        node.start(**kwargs)
        yield node
    finally:
        node.close()
