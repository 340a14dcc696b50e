"""Agent configuration: DESIGN.md's flags, each also a key of an optional YAML/JSON file.

Precedence: built-in default < config file < environment (NODE_NAME) < command-line flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

MAX_CONFIG_BYTES: Final = 256 * 1024
LOG_LEVELS: Final = frozenset(logging.getLevelNamesMapping())  # DEBUG, INFO, WARNING, ...
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


class ConfigError(Exception):
    """The configuration file or a flag is not usable; the message says which and why."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    socket: Path = Path("/run/genie/genie.sock")
    db: Path = Path("/var/lib/genie/events.db")
    net_dir: Path = Path("/etc/cni/net.d")
    cni_path: tuple[Path, ...] = (Path("/opt/cni/bin"), Path("/usr/lib/cni"))
    node_name: str = ""
    kubeconfig: Path | None = None
    pods_dir: Path | None = None
    default_network: str | None = None
    metrics_addr: str | None = None  # host:port, e.g. 127.0.0.1:9310
    delegate_timeout: float = 60.0  # seconds per plugin invocation
    max_delegates: int = 64  # plugin processes running at once, node-wide
    max_requests: int = 128  # CNI requests served at once; more wait (burst after reboot)
    shutdown_grace: float = 30.0  # seconds SIGTERM waits for in-flight operations
    pod_gone_grace: float = 60.0  # seconds a deleted pod's runtime has to DEL before genie does
    snapshot_every: int = 10_000
    log_level: str = "INFO"


_FIELDS: Final = {f.name: f for f in dataclasses.fields(AgentConfig)}


def _key(name: str) -> str:
    return name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config key; defaults are None so that unset flags do not override."""
    parser.add_argument("--config", type=Path, help="YAML or JSON file with these keys")
    helps = {
        "socket": "unix socket the shim talks to",
        "db": "SQLite event log",
        "net_dir": "delegate network configs (genie's own conflist is ignored)",
        "cni_path": "colon-separated dirs where delegate plugins are looked up by bare name",
        "node_name": "this node's name (default: env NODE_NAME)",
        "kubeconfig": "kubeconfig file (else in-cluster, else no Kubernetes)",
        "pods_dir": "static pod manifests: the pod source when there is no Kubernetes",
        "default_network": "network for pods that ask for none (and eth0 for Multus syntax)",
        "metrics_addr": "host:port for Prometheus /metrics (off when unset)",
    }
    for name in _FIELDS:
        parser.add_argument(f"--{_key(name)}", dest=name, default=None, help=helps.get(name))


def load(args: argparse.Namespace, *, environ: Mapping[str, str] = os.environ) -> AgentConfig:
    values: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        values.update(_read_file(args.config))
    if environ.get("NODE_NAME"):  # the environment wins over the file (an empty one does not)
        values["node_name"] = environ["NODE_NAME"]
    for name in _FIELDS:
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = flag
    return AgentConfig(**{name: _coerce(name, value) for name, value in values.items()})


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = yaml.safe_load(raw) if raw.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys")
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in _FIELDS:
            known = ", ".join(sorted(_key(n) for n in _FIELDS))
            raise ConfigError(f"config file {path}: unknown key {key!r} (known: {known})")
        values[name] = value
    return values


def _coerce(name: str, value: Any) -> Any:
    try:
        match name:
            case "socket" | "db" | "net_dir":
                return Path(str(value))
            case "kubeconfig" | "pods_dir":
                return Path(str(value)) if value not in (None, "") else None
            case "cni_path":
                parts: Sequence[Any] = value.split(":") if isinstance(value, str) else value
                return tuple(Path(str(p)) for p in parts if str(p))
            case "delegate_timeout" | "shutdown_grace" | "pod_gone_grace":
                number = float(value)
                if number <= 0:
                    raise ValueError("must be positive")
                return number
            case "max_delegates" | "max_requests" | "snapshot_every":
                count = int(value)
                if count <= 0:
                    raise ValueError("must be positive")
                return count
            case "default_network":
                return str(value) if value not in (None, "") else None
            case "metrics_addr":
                if value in (None, ""):
                    return None
                metrics_listen(str(value))
                return str(value)
            case "log_level":
                level = str(value).upper()
                if level not in LOG_LEVELS:
                    raise ValueError("not a logging level (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
                return level
            case _:
                return str(value)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{_key(name)}: {value!r} is not valid: {exc}") from exc


def metrics_listen(addr: str) -> tuple[str, int]:
    """(host, port) to listen on for `host:port`; empty host = 127.0.0.1, IPv6 as [ADDR]:PORT.

    Raises ValueError for anything that cannot be a TCP listen address. Whether the port is
    free, and the name resolves to a local address, only binding it tells.
    """
    host, sep, port_text = addr.rpartition(":")
    if not sep:
        raise ValueError("must be host:port")
    if host.startswith("[") and host.endswith("]"):
        host = str(ipaddress.IPv6Address(host[1:-1]))
    elif ":" in host:
        raise ValueError("an IPv6 address needs brackets: [ADDR]:PORT")
    elif host and _HOSTNAME.fullmatch(host) is None:
        raise ValueError(f"{host!r} is not a host name or address")
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number from 1 to 65535")
    return host or "127.0.0.1", int(port_text)
