"""The agent process: socket permissions, peer check, health, readiness, metrics, drain."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import parser as prom_parser

from genie.cni import wire
from genie.demo import agent_proc, runtime
from tests.e2e import node as e2e_node
from tests.support import plugins

pytestmark = pytest.mark.netns


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def node(tmp_path: Path) -> Iterator[e2e_node.Node]:
    with e2e_node.running_node(tmp_path) as n:
        n.bridge("net-a", octet=241, default_route=True)
        yield n


def test_socket_is_0600_in_a_0700_dir(node: e2e_node.Node) -> None:
    assert stat.S_IMODE(node.socket.stat().st_mode) == 0o600
    assert stat.S_ISSOCK(node.socket.stat().st_mode)
    assert stat.S_IMODE(node.socket.parent.stat().st_mode) == 0o700


def test_health_and_readiness(node: e2e_node.Node) -> None:
    assert agent_proc.get(node.socket, "/healthz")[0] == 200
    assert agent_proc.get(node.socket, "/readyz")[0] == 200


NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
PROBE = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print("connect-refused", exc.errno)
    sys.exit(0)
s.sendall(b"GET /readyz HTTP/1.0\\r\\n\\r\\n")
print(s.recv(100).split(b"\\r\\n")[0].decode())
"""


def _probe_as_nobody(path: Path) -> str:
    # the system interpreter: nobody cannot enter root's home, where the venv may live
    out = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", PROBE, str(path)],
        user=NOBODY,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.fixture
def public_node(tmp_path: Path) -> Iterator[e2e_node.Node]:
    """A node whose socket dir sits in /run, so only genie's own modes guard it."""
    sock_dir = Path("/run") / f"genie-t-{os.urandom(4).hex()}"
    try:
        with e2e_node.running_node(tmp_path, socket=sock_dir / "genie.sock") as n:
            yield n
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_non_root_peers_are_refused(public_node: e2e_node.Node) -> None:
    node = public_node
    # first wall: the 0700 directory keeps other users from reaching the socket at all
    assert _probe_as_nobody(node.socket).startswith("connect-refused")
    # second wall: even with the modes opened up, SO_PEERCRED refuses a non-root peer
    node.socket.parent.chmod(0o755)
    node.socket.chmod(0o666)
    conn = agent_proc.UnixHTTPConnection(node.socket)
    conn.request("POST", "/v1/cni", body=b"CNI_COMMAND=STATUS\0\0{}")
    assert conn.getresponse().status == 200  # root is served
    conn.close()
    out = _probe_as_nobody(node.socket)
    assert "403" in out, out


def test_garbage_on_the_socket_does_not_hurt(node: e2e_node.Node) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(node.socket))
        s.sendall(b"\x00\xffthis is not http\r\n\r\n")
        s.settimeout(5)
        assert b" 400 " in s.recv(100).split(b"\r\n")[0]
    conn = agent_proc.UnixHTTPConnection(node.socket)
    conn.request("POST", "/v1/cni", body=b"not the framing")
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert resp.getheader("X-CNI-Exit-Code") == "1" and body["code"] in (4, 6), body
    conn.close()
    assert agent_proc.get(node.socket, "/readyz")[0] == 200


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of `name` in a scrape, by its sorted label pairs."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in prom_parser.text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def test_metrics_count_requests_and_events(tmp_path: Path) -> None:
    port = _free_port()
    with e2e_node.running_node(tmp_path, extra_args=("--metrics-addr", f"127.0.0.1:{port}")) as n:
        n.bridge("net-a", octet=242, default_route=True)
        n.pod("m", {"cni": "net-a"})
        sandbox = n.sandbox("m")
        assert n.cni("ADD", sandbox).exit_code == 0
        assert n.cni("DEL", sandbox).exit_code == 0
        text = n.metrics(port)
    assert 'genie_cni_requests_total{command="ADD",outcome="ok"} 1.0' in text
    assert 'genie_cni_requests_total{command="DEL",outcome="ok"} 1.0' in text
    assert 'genie_cni_request_seconds_count{command="ADD"} 1.0' in text
    assert "genie_events_appended_total 6.0" in text  # 2 commits for ADD, 2 for DEL
    assert "default" not in text.replace('"default"', "")  # no pod names leak into metrics


def test_delegate_failures_are_counted_by_network_and_command(tmp_path: Path) -> None:
    port = _free_port()
    with e2e_node.running_node(tmp_path, extra_args=("--metrics-addr", f"127.0.0.1:{port}")) as n:
        n.bridge("net-a", octet=243, default_route=True)
        plugin_dir = n.root / "plugins"
        # ADD fails (its rollback DEL succeeds)
        plugins.write_script_plugin(
            plugin_dir,
            "addfails",
            'cat >/dev/null\n[ "$CNI_COMMAND" = ADD ] && { echo boom >&2; exit 1; }\nexit 0',
        )
        # ADD succeeds, CHECK and DEL fail
        ok = json.dumps(plugins.RESULT)
        plugins.write_script_plugin(
            plugin_dir,
            "delfails",
            f"cat >/dev/null\ncase $CNI_COMMAND in ADD) printf '%s' '{ok}';; *) exit 1;; esac",
        )
        n.write_network("30-bad.conf", {"cniVersion": "1.0.0", "name": "bad", "type": "addfails"})
        n.write_network(
            "31-sticky.conf", {"cniVersion": "1.0.0", "name": "sticky", "type": "delfails"}
        )
        n.pod("b", {"cni": "net-a,bad"})
        assert n.cni("ADD", n.sandbox("b")).exit_code == 1
        n.pod("s", {"cni": "sticky"})
        sticky = n.sandbox("s")
        assert n.cni("ADD", sticky).exit_code == 0
        assert n.cni("CHECK", sticky).exit_code == 1
        assert n.cni("DEL", sticky).exit_code == 1
        assert n.cni("DEL", sticky).exit_code == 1
        text = n.metrics(port)
    failures = _samples(text, "genie_delegate_failures_total")
    assert failures == {
        (("command", "ADD"), ("network", "bad")): 1.0,
        (("command", "CHECK"), ("network", "sticky")): 1.0,
        (("command", "DEL"), ("network", "sticky")): 2.0,
    }  # and none for net-a: its ADD and its rollback DEL succeeded


def _post_raw(node: e2e_node.Node, body: bytes) -> int:
    """POST a CNI request body straight to the socket; the CNI error code of the reply."""
    conn = agent_proc.UnixHTTPConnection(node.socket)
    try:
        conn.request("POST", wire.PATH, body=body)
        code: int = json.loads(conn.getresponse().read())["code"]
        return code
    finally:
        conn.close()


def test_request_outcomes_are_bounded_and_refusals_counted(tmp_path: Path) -> None:
    port = _free_port()
    with e2e_node.running_node(tmp_path, extra_args=("--metrics-addr", f"127.0.0.1:{port}")) as n:
        n.bridge("net-a", octet=245, default_route=True)
        for code in (999, 12345):  # a plugin's own codes, whatever they are
            plugins.write_script_plugin(
                n.root / "plugins",
                f"code{code}",
                f"""cat >/dev/null\nprintf '{{"cniVersion":"1.0.0","code":{code},"msg":"no"}}'\n"""
                "exit 1",
            )
            conf = {"cniVersion": "1.0.0", "name": f"c{code}", "type": f"code{code}"}
            n.write_network(f"30-c{code}.conf", conf)
            n.pod(f"p{code}", {"cni": f"c{code}"})
            reply = n.cni("ADD", n.sandbox(f"p{code}"))
            assert reply.json()["code"] == code, reply.stdout
        # refused before dispatch: not framed, an unknown command, a bad container ID
        assert _post_raw(n, b"not the framing") == 6
        stdin = json.dumps({"cniVersion": "1.0.0", "name": "genie", "type": "genie"}).encode()
        assert _post_raw(n, wire.encode_request({"CNI_COMMAND": "FROB"}, stdin)) == 4
        bad_id = {
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "../etc",
            "CNI_NETNS": "/run/netns/x",
            "CNI_IFNAME": "eth0",
        }
        assert _post_raw(n, wire.encode_request(bad_id, stdin)) == 4
        text = n.metrics(port)
    assert _samples(text, "genie_cni_requests_total") == {
        (("command", "ADD"), ("outcome", "other")): 2.0,
        (("command", "ADD"), ("outcome", "4")): 1.0,
        (("command", "unknown"), ("outcome", "4")): 1.0,
        (("command", "unknown"), ("outcome", "6")): 1.0,
    }


def test_attachments_gauge_is_the_logs_after_restart_and_recovery(tmp_path: Path) -> None:
    port = _free_port()
    with e2e_node.running_node(tmp_path, extra_args=("--metrics-addr", f"127.0.0.1:{port}")) as n:
        n.bridge("net-a", octet=244, default_route=True)
        plugins.write_script_plugin(
            n.root / "plugins",
            "hangs",
            'cat >/dev/null\n[ "$CNI_COMMAND" = ADD ] && sleep 60\nexit 0',
        )
        n.write_network("30-hang.conf", {"cniVersion": "1.0.0", "name": "hang", "type": "hangs"})
        n.pod("kept", {"cni": "net-a"})
        n.pod("cut", {"cni": "hang"})
        assert n.cni("ADD", n.sandbox("kept")).exit_code == 0
        assert _samples(n.metrics(port), "genie_attachments") == {(): 1.0}
        box: dict[str, runtime.PluginReply] = {}
        cut = n.sandbox("cut")
        adder = threading.Thread(target=lambda: box.update(add=n.cni("ADD", cut)))
        adder.start()
        deadline = time.monotonic() + 10
        while len(n.state()) < 2:  # the cut ADD is recorded: its delegate hangs
            assert time.monotonic() < deadline, n.agent_log()
            time.sleep(0.05)
        assert n.agent is not None and n.agent.proc is not None
        n.agent.stop(sig=signal.SIGKILL)
        adder.join(timeout=10)
        assert box["add"].exit_code == 1
        # the new agent rolls "cut" back in recovery; no CNI request reaches it before the scrape
        n.restart_agent()
        assert [a["pod"] for a in n.state()] == ["default/kept"]
        text = n.metrics(port)
        assert _samples(text, "genie_attachments") == {(): 1.0}
        assert _samples(text, "genie_cni_requests_total") == {}


def test_sigterm_drains_in_flight_adds_then_exits_zero(node: e2e_node.Node) -> None:
    plugins.write_script_plugin(
        node.root / "plugins",
        "slowok",
        "cat >/dev/null\nsleep 2\n"
        'printf \'{"cniVersion":"1.0.0","ips":[{"address":"10.9.9.9/24"}]}\'',
    )
    node.write_network("30-slow.conf", {"cniVersion": "1.0.0", "name": "slow", "type": "slowok"})
    node.pod("s", {"cni": "slow"})
    sandbox = node.sandbox("s")
    box: dict[str, runtime.PluginReply] = {}
    adder = threading.Thread(target=lambda: box.update(add=node.cni("ADD", sandbox)))
    adder.start()
    time.sleep(0.7)  # the ADD is now inside the slow delegate
    assert node.agent is not None and node.agent.proc is not None
    os.kill(node.agent.proc.pid, signal.SIGTERM)
    time.sleep(0.3)
    assert agent_proc.get(node.socket, "/readyz")[0] == 503
    # a new request during the drain is told to come back later, not dropped
    late = node.cni("ADD", node.sandbox("s"))
    assert late.json()["code"] == 11
    adder.join(timeout=10)
    assert box["add"].exit_code == 0, box["add"].stdout
    assert node.agent.proc.wait(timeout=10) == 0
    assert [a["phase"] for a in node.state()] == ["attached"]
