"""Drive an installed CNI plugin exactly as a container runtime's libcni does.

Used by `genie demo`, the end-to-end tests and the benchmarks: the plugin is exec'd with the
CNI_* environment and the network config on stdin, and its stdout and exit code are returned.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class PluginReply:
    exit_code: int
    stdout: str
    stderr: str
    elapsed: float = 0.0

    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Sandbox:
    """What the runtime knows of one pod sandbox."""

    container_id: str
    netns: str
    namespace: str = "default"
    name: str = ""
    uid: str = ""
    ifname: str = "eth0"

    def cni_args(self) -> str:
        pairs = [("IgnoreUnknown", "1")]
        if self.name:
            pairs += [("K8S_POD_NAMESPACE", self.namespace), ("K8S_POD_NAME", self.name)]
            pairs.append(("K8S_POD_INFRA_CONTAINER_ID", self.container_id))
            if self.uid:
                pairs.append(("K8S_POD_UID", self.uid))
        return ";".join(f"{k}={v}" for k, v in pairs)


def plugin_config(conflist: Mapping[str, Any], *, cni_version: str | None = None) -> dict[str, Any]:
    """The stdin libcni gives the first plugin of a conflist: plugin + name + cniVersion."""
    plugin = dict(conflist["plugins"][0])
    plugin["name"] = conflist["name"]
    plugin["cniVersion"] = cni_version or conflist["cniVersion"]
    return plugin


def invoke(
    plugin: Path,
    *,
    command: str,
    sandbox: Sandbox | None,
    config: Mapping[str, Any],
    cni_path: Sequence[Path],
    timeout: float = 300.0,
    extra_env: Mapping[str, str] | None = None,
) -> PluginReply:
    """Exec `plugin` once, as libcni would, and return what it printed."""
    env = {"CNI_COMMAND": command, "CNI_PATH": ":".join(str(p) for p in cni_path)}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    if sandbox is not None:
        env.update(
            CNI_CONTAINERID=sandbox.container_id,
            CNI_NETNS=sandbox.netns,
            CNI_IFNAME=sandbox.ifname,
            CNI_ARGS=sandbox.cni_args(),
        )
    env.update(extra_env or {})
    started = time.perf_counter()
    proc = subprocess.run(
        [str(plugin)],
        input=json.dumps(config).encode(),
        env=env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return PluginReply(
        exit_code=proc.returncode,
        stdout=proc.stdout.decode(errors="replace"),
        stderr=proc.stderr.decode(errors="replace"),
        elapsed=time.perf_counter() - started,
    )
