"""Agent configuration: defaults, file keys, environment and flag precedence, bad input."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from genie.daemon import config


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_are_designs() -> None:
    cfg = config.load(_args(), environ={})
    assert cfg.socket == Path("/run/genie/genie.sock")
    assert cfg.db == Path("/var/lib/genie/events.db")
    assert cfg.net_dir == Path("/etc/cni/net.d")
    assert cfg.cni_path == (Path("/opt/cni/bin"), Path("/usr/lib/cni"))
    assert cfg.kubeconfig is None and cfg.pods_dir is None and cfg.metrics_addr is None


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "db: /x/events.db\nnet-dir: /x/net.d\ncni_path: [/a, /b]\n"
        "default-network: tenant-a\nnode-name: from-file\n"
    )
    cfg = config.load(_args("--config", str(path), "--db", "/flag.db"), environ={"NODE_NAME": "n"})
    assert cfg.db == Path("/flag.db")
    assert cfg.net_dir == Path("/x/net.d")
    assert cfg.cni_path == (Path("/a"), Path("/b"))
    assert cfg.default_network == "tenant-a"
    assert cfg.node_name == "n"  # the environment wins over the file
    assert config.load(_args("--cni-path", "/p:/q"), environ={"NODE_NAME": "n"}).node_name == "n"
    assert config.load(_args("--cni-path", "/p:/q"), environ={}).cni_path == (
        Path("/p"),
        Path("/q"),
    )


def test_node_name_precedence_flag_then_env_then_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("node-name: from-file\n")
    file_only = _args("--config", str(path))
    assert config.load(file_only, environ={}).node_name == "from-file"
    assert config.load(file_only, environ={"NODE_NAME": ""}).node_name == "from-file"
    assert config.load(file_only, environ={"NODE_NAME": "from-env"}).node_name == "from-env"
    flag = _args("--config", str(path), "--node-name", "from-flag")
    assert config.load(flag, environ={"NODE_NAME": "from-env"}).node_name == "from-flag"


def test_json_config_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text('{"socket": "/s.sock", "delegate-timeout": 5}')
    cfg = config.load(_args("--config", str(path)), environ={})
    assert cfg.socket == Path("/s.sock") and cfg.delegate_timeout == 5.0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("nope: 1\n", "unknown key 'nope'"),
        ("- a\n", "mapping"),
        ("a: [\n", "not valid"),
        ("delegate-timeout: -1\n", "delegate-timeout"),
        ("max-requests: lots\n", "max-requests"),
    ],
)
def test_bad_config_files_are_named(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=needle):
        config.load(_args("--config", str(path)), environ={})


def test_huge_or_missing_config_file(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    huge.write_text("#" * (config.MAX_CONFIG_BYTES + 1))
    with pytest.raises(config.ConfigError, match="larger than"):
        config.load(_args("--config", str(huge)), environ={})
    with pytest.raises(config.ConfigError, match=r"missing\.yaml"):
        config.load(_args("--config", str(tmp_path / "missing.yaml")), environ={})


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (("--log-level", "LOUD"), "log-level: 'LOUD' is not valid"),
        (("--metrics-addr", "nope"), "metrics-addr: 'nope' is not valid"),
        (("--metrics-addr", "127.0.0.1:"), "metrics-addr"),
        (("--metrics-addr", "127.0.0.1:99999"), "metrics-addr"),
        (("--metrics-addr", "127.0.0.1:0"), "metrics-addr"),
        (("--metrics-addr", "::1:9310"), "brackets"),
        (("--metrics-addr", "bad host:9310"), "metrics-addr"),
    ],
)
def test_bad_log_level_and_metrics_addr_are_config_errors(
    flags: tuple[str, str], needle: str
) -> None:
    with pytest.raises(config.ConfigError, match=needle):
        config.load(_args(*flags), environ={})


def test_log_level_and_metrics_addr_forms(tmp_path: Path) -> None:
    assert config.load(_args("--log-level", "debug"), environ={}).log_level == "DEBUG"
    path = tmp_path / "agent.yaml"
    path.write_text("log-level: warning\nmetrics-addr: ':9310'\n")
    cfg = config.load(_args("--config", str(path)), environ={})
    assert cfg.log_level == "WARNING"
    assert config.metrics_listen(cfg.metrics_addr or "") == ("127.0.0.1", 9310)
    assert config.metrics_listen("[::1]:9310") == ("::1", 9310)
    assert config.metrics_listen("localhost:80") == ("localhost", 80)


def _agent(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`genie agent` on scratch paths, without Kubernetes; returns once it has exited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    paths = ["--db", str(tmp_path / "events.db"), "--socket", str(tmp_path / "genie.sock")]
    return subprocess.run(
        [sys.executable, "-m", "genie.cli", "agent", *paths, "--net-dir", str(tmp_path), *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "flags",
    [("--log-level", "LOUD"), ("--metrics-addr", "nope"), ("--metrics-addr", "127.0.0.1:65536")],
)
def test_agent_refuses_bad_values_before_opening_the_log(
    tmp_path: Path, flags: tuple[str, str]
) -> None:
    out = _agent(tmp_path, *flags)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(f"genie: {flags[0][2:]}: "), out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "events.db").exists()


def test_agent_with_its_metrics_port_taken_exits_2_before_opening_the_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _agent(tmp_path, "--metrics-addr", f"127.0.0.1:{port}")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    last = out.stderr.splitlines()[-1]
    assert last.startswith(f"genie: metrics-addr 127.0.0.1:{port}: cannot listen: "), last
    assert not (tmp_path / "events.db").exists()  # the log was not opened, nothing recovered
