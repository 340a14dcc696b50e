"""Chaos: SIGKILL the agent >= 100 times under kubelet-like ADD/DEL churn; nothing may leak.

One simulated node (real agent, installed shim, real bridge + host-local plugins), 20 pods
with 2-3 of 3 networks each, 4 runtime threads and a killer (tests/chaos/churn.py). At the
end every pod is DEL'd until success and the node must be spotless: no host-local
allocation, no link in the node netns but lo and the bridges, no attachment in the log, and
`genie replay --verify` clean. GENIE_CHAOS_SEED replays a run; GENIE_CHAOS_KILLS changes
the number of kills.
"""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from genie.demo import netns
from tests.chaos import churn
from tests.e2e import node as e2e_node
from tests.e2e import truth
from tests.support import plugins

pytestmark = [pytest.mark.slow, pytest.mark.netns]

PODS = 20
WORKERS = 4
KILLS = int(os.environ.get("GENIE_CHAOS_KILLS", "100"))
# (network, octet): the bridges are gb<octet> inside the node netns
NETWORKS = (("net-a", 201), ("net-b", 202), ("net-slow", 203))
# a bridge that takes 100 ms more for every command: a wider window for kills mid-operation
SLOW_BRIDGE = "sleep 0.1\nexec /usr/lib/cni/bridge\n"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[e2e_node.Node]:
    with e2e_node.running_node(tmp_path) as n:
        plugins.write_script_plugin(n.root / "plugins", "slowbridge", SLOW_BRIDGE)
        for name, octet in NETWORKS:
            conf = n.bridge(name, octet=octet)
            if name == "net-slow":
                conf["type"] = "slowbridge"
                n.write_network(f"20-{name}.conf", conf)
        yield n


def _slots(node: e2e_node.Node, rng: random.Random) -> list[churn.PodSlot]:
    slots = []
    for i in range(PODS):
        chosen = rng.sample(NETWORKS, rng.choice((2, 3)))
        name = f"chaos-{i}"
        node.pod(name, {"cni": ",".join(net for net, _ in chosen)})
        slots.append(
            churn.PodSlot(
                name=name,
                networks=tuple(net for net, _ in chosen),
                gateways=tuple(f"10.{octet}.0.1" for _, octet in chosen),
                sandbox=node.sandbox(name),
            )
        )
    return slots


def _node_links(node: e2e_node.Node) -> set[str]:
    return {str(link["ifname"]) for link in netns.links(node.name)}


@pytest.mark.timeout(900)
def test_agent_killed_under_churn_loses_nothing(node: e2e_node.Node) -> None:
    seed = int(os.environ.get("GENIE_CHAOS_SEED", secrets.randbits(32)))
    print(f"\nchaos seed {seed} (GENIE_CHAOS_SEED={seed} replays the choices)")
    rng = random.Random(seed)
    slots = _slots(node, rng)
    tally, flight, stop = churn.Tally(), churn.InFlight(), threading.Event()
    workers = [
        churn.RuntimeWorker(
            node=node,
            slots=slots[i::WORKERS],
            seed=rng.randrange(1 << 32),
            tally=tally,
            flight=flight,
            stop=stop,
        )
        for i in range(WORKERS)
    ]
    killer = churn.Killer(node=node, seed=rng.randrange(1 << 32), tally=tally, flight=flight)
    started = time.monotonic()
    for worker in workers:
        worker.start()
    try:
        while sum(tally.kills.values()) < KILLS and not tally.problems:
            killer.one_round()
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=120)
    churn_seconds = time.monotonic() - started
    assert not any(w.is_alive() for w in workers), "a runtime thread hangs"

    # the end of every pod: kubelet DELs each sandbox until it succeeds
    for slot in slots:
        churn.RuntimeWorker(
            node=node, slots=[slot], seed=0, tally=tally, flight=flight, stop=stop
        ).delete_until_ok(slot)
    print(
        f"chaos: {churn_seconds:.0f} s of churn, kills {sum(tally.kills.values())} "
        f"{dict(sorted(tally.kills.items()))}, ADD ok {tally.add_ok} fail {tally.add_fail}, "
        f"DEL ok {tally.del_ok} retries {tally.del_retries}, namespace checks {tally.checks}"
    )
    assert tally.problems == []
    assert sum(tally.kills.values()) >= KILLS
    if KILLS >= 100:  # a short run (GENIE_CHAOS_KILLS) may miss a phase by chance
        assert set(tally.kills) >= set(churn.PHASES), f"phases hit: {dict(tally.kills)}"
    assert tally.add_ok >= KILLS // 2, "the churn barely ran"
    # nothing leaked: host-local holds no address, the node has only lo and the bridges
    # (the host ends of the veths go with the pod ends the bridge plugin's DEL removes)
    assert node.allocations() == {}
    bridges = {f"gb{octet}" for _, octet in NETWORKS}
    assert _node_links(node) - bridges == {"lo"}, _node_links(node)
    # the log agrees: no attachment left, and a replay from event 1 matches every snapshot
    assert node.state() == []
    verify = node.genie("replay", "--db", str(node.db), "--verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    for slot in slots:  # and the pods' namespaces are empty again
        assert truth.links(slot.sandbox.netns) == ["lo"], slot.name
