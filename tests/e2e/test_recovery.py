"""Crash recovery with real plugins: SIGKILL the agent mid-ADD and mid-DEL, restart it."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from genie.demo import runtime
from genie.domain import events as ev
from genie.domain import state as st
from genie.services import recovery
from tests.e2e import node as e2e_node
from tests.e2e import truth
from tests.support import plugins

pytestmark = pytest.mark.netns

# a bridge that takes its time for one command: the window in which the agent is killed
SLOW_BRIDGE = """
if [ "$CNI_COMMAND" = "{command}" ]; then sleep 3; fi
exec /usr/lib/cni/bridge
"""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[e2e_node.Node]:
    with e2e_node.running_node(tmp_path) as n:
        n.bridge("net-a", octet=221, default_route=True)
        n.bridge("net-b", octet=222)
        yield n


def _kill_agent_during(node: e2e_node.Node, command: str, sandbox: runtime.Sandbox) -> None:
    box: dict[str, runtime.PluginReply] = {}
    worker = threading.Thread(target=lambda: box.update(r=node.cni(command, sandbox)))
    worker.start()
    time.sleep(1.2)  # inside the slow delegate now
    assert node.agent is not None
    node.agent.stop(sig=signal.SIGKILL)
    worker.join(timeout=10)
    assert box["r"].exit_code != 0  # the runtime saw the failure (connection dropped)


def _events(node: e2e_node.Node, container: str) -> list[dict[str, object]]:
    out = node.genie("events", "--db", str(node.db), "--container", container, "--json")
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_killed_mid_add_is_rolled_back_at_restart(node: e2e_node.Node) -> None:
    plugins.write_script_plugin(
        node.root / "plugins", "slowbridge", SLOW_BRIDGE.format(command="ADD")
    )
    slow = node.bridge("net-slow", octet=223)
    slow["type"] = "slowbridge"
    node.write_network("20-net-slow.conf", slow)
    node.pod("done", {"cni": "net-a,net-b"})
    node.pod("half", {"cni": "net-a,net-slow"})
    done, half = node.sandbox("done"), node.sandbox("half")
    assert node.cni("ADD", done).exit_code == 0
    _kill_agent_during(node, "ADD", half)
    assert node.allocations()  # net-a's address for `half` is held: the crash left it behind

    node.start_agent()
    # outlast the slow delegate: had it survived the agent (an orphan), it would allocate now
    time.sleep(2.5)
    # recovery rolled the half-done ADD back: nothing in the namespace, nothing in host-local
    assert truth.links(half.netns) == ["lo"]
    assert sorted(node.allocations()) == ["net-a", "net-b"]
    assert all(len(ips) == 1 for ips in node.allocations().values())  # only `done` holds
    kinds = [e["event"] for e in _events(node, half.container_id)]
    assert kinds[0] == "AddRequested" and kinds[-1] == "AddRolledBack", kinds
    assert "recovery" in str(_events(node, half.container_id)[-1])
    # the completed pod was not touched and still works
    assert [a["container"] for a in node.state()] == [done.container_id]
    assert sorted(truth.addresses(done.netns)) == ["eth0", "eth1"]
    gateway = "10.221.0.1"
    assert truth.ping(done.netns, gateway)
    assert node.cni("DEL", half).exit_code == 0  # kubelet's DEL after the failed ADD
    assert node.cni("DEL", done).exit_code == 0
    assert node.allocations() == {}


def test_killed_mid_del_is_finished_at_restart(node: e2e_node.Node) -> None:
    plugins.write_script_plugin(
        node.root / "plugins", "slowbridge", SLOW_BRIDGE.format(command="DEL")
    )
    slow = node.bridge("net-slow", octet=224)
    slow["type"] = "slowbridge"
    node.write_network("20-net-slow.conf", slow)
    node.pod("p", {"cni": "net-a,net-slow"})
    sandbox = node.sandbox("p")
    assert node.cni("ADD", sandbox).exit_code == 0
    _kill_agent_during(node, "DEL", sandbox)
    node.start_agent()
    assert node.state() == []
    assert node.allocations() == {}
    assert truth.links(sandbox.netns) == ["lo"]
    kinds = [e["event"] for e in _events(node, sandbox.container_id)]
    assert kinds.count("DelRequested") == 2 and kinds[-1] == "DelCompleted", kinds
    assert node.cni("DEL", sandbox).exit_code == 0  # and the runtime's retry is a no-op


def _rec(seq: int, stream: str, version: int, event: ev.Event) -> ev.Recorded:
    return ev.Recorded(seq, stream, version, float(seq), event)


def test_the_plan_is_a_pure_function_of_the_log() -> None:
    plan = ev.PlannedDelegate(
        index=0, network="a", ifname="eth0", cni_version="1.0.0", plugins=({"type": "bridge"},)
    )
    add = ev.AddRequested(
        pod=ev.PodRef("ns", "p"),
        netns="/x",
        runtime_cni_version="1.0.0",
        delegates=(plan,),
        ifname="eth0",
    )
    log = [
        _rec(1, "adding", 1, add),
        _rec(2, "attached", 1, add),
        _rec(3, "attached", 2, ev.DelegateAdded(index=0, result={"cniVersion": "1.0.0"})),
        _rec(4, "attached", 3, ev.AddCompleted(result={"cniVersion": "1.0.0"})),
        _rec(5, "failing", 1, add),
        _rec(6, "failing", 2, ev.DelegateFailed(index=0, code=7, msg="no")),
        _rec(7, "deleting", 1, add),
        _rec(8, "deleting", 2, ev.DelegateAdded(index=0, result={"cniVersion": "1.0.0"})),
        _rec(9, "deleting", 3, ev.AddCompleted(result={"cniVersion": "1.0.0"})),
        _rec(10, "deleting", 4, ev.DelRequested()),
    ]
    first = recovery.plan(st.fold(log))
    assert first == recovery.plan(st.fold(list(log)))
    assert [(s.container_id, s.action) for s in first] == [
        ("adding", recovery.Action.ROLL_BACK),
        ("deleting", recovery.Action.FINISH_DEL),
        ("failing", recovery.Action.ROLL_BACK),
    ]
    assert recovery.plan(st.fold(log[:4])) == (
        recovery.Step("adding", recovery.Action.ROLL_BACK, 1),
    )
