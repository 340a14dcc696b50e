"""The chaos test's actors: kubelet-like runtime threads and a killer that SIGKILLs the agent.

Runtime threads drive pods through the installed shim the way kubelet does (a failed ADD is
followed by DEL, DEL is retried until it exits 0, the ADD is retried after that) and check the
pod namespace right after every ADD success. The killer picks a phase for each kill (during an
ADD, during a DEL, idle, during start-up recovery) and records which phase it really hit.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import random
import secrets
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from genie.demo import agent_proc, runtime
from tests.e2e import node as e2e_node
from tests.e2e import truth

DEL_DEADLINE = 60.0  # seconds a pod may stay un-deletable before the test calls it stuck
RETRY_PAUSE = (0.02, 0.1)  # seconds between a runtime's retries


@dataclasses.dataclass
class PodSlot:
    """One pod: its annotation's networks, its current sandbox, whether an ADD succeeded."""

    name: str
    networks: tuple[str, ...]
    gateways: tuple[str, ...]
    sandbox: runtime.Sandbox
    attached: bool = False


@dataclasses.dataclass
class Tally:
    add_ok: int = 0
    add_fail: int = 0
    del_ok: int = 0
    del_retries: int = 0
    checks: int = 0
    kills: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    problems: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()

    def bump(self, field: str, by: int = 1) -> None:
        with self.lock:
            setattr(self, field, getattr(self, field) + by)

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


class InFlight:
    """CNI calls running now, by command; a gate lets the killer hold new calls back."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running: collections.Counter[str] = collections.Counter()
        self._open = True

    @contextlib.contextmanager
    def call(self, command: str) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._open)
            self._running[command] += 1
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._running[command] -= 1
                self._cond.notify_all()

    def snapshot(self) -> dict[str, int]:
        with self._cond:
            return {k: v for k, v in self._running.items() if v}

    def wait_for(self, command: str, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._running[command] > 0, timeout)

    @contextlib.contextmanager
    def paused(self, timeout: float) -> Iterator[bool]:
        """Hold new calls back; yields True once nothing is in flight (False on timeout)."""
        with self._cond:
            self._open = False
            idle = self._cond.wait_for(lambda: not +self._running, timeout)
        try:
            yield idle
        finally:
            with self._cond:
                self._open = True
                self._cond.notify_all()


class RuntimeWorker(threading.Thread):
    """Kubelet for a few pods: ADD, check, DEL, with kubelet's retries."""

    def __init__(
        self,
        *,
        node: e2e_node.Node,
        slots: Sequence[PodSlot],
        seed: int,
        tally: Tally,
        flight: InFlight,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"runtime-{seed}", daemon=True)
        self.node = node
        self.slots = list(slots)
        self.rng = random.Random(seed)
        self.tally = tally
        self.flight = flight
        self.stop_event = stop

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.step(self.rng.choice(self.slots))
        except Exception as exc:  # surfaced by the test as a problem, never swallowed
            self.tally.problem(f"{self.name} crashed: {exc!r}")

    def cni(self, command: str, slot: PodSlot) -> runtime.PluginReply:
        with self.flight.call(command):
            return self.node.cni(command, slot.sandbox)

    def step(self, slot: PodSlot) -> None:
        if slot.attached:
            self.delete_until_ok(slot)
            slot.attached = False
            slot.sandbox = dataclasses.replace(slot.sandbox, container_id=secrets.token_hex(16))
            return
        reply = self.cni("ADD", slot)
        if reply.exit_code == 0:
            self.tally.bump("add_ok")
            self.check(slot, reply.json())
            slot.attached = True
            return
        self.tally.bump("add_fail")
        self.delete_until_ok(slot)  # kubelet tears the sandbox down after a failed ADD
        if self.rng.random() < 0.5:  # a new sandbox, or the same one retried
            slot.sandbox = dataclasses.replace(slot.sandbox, container_id=secrets.token_hex(16))

    def delete_until_ok(self, slot: PodSlot) -> None:
        deadline = time.monotonic() + DEL_DEADLINE
        while True:
            reply = self.cni("DEL", slot)
            if reply.exit_code == 0:
                self.tally.bump("del_ok")
                return
            self.tally.bump("del_retries")
            if time.monotonic() > deadline:
                self.tally.problem(f"pod {slot.name} stuck: DEL keeps failing: {reply.stdout}")
                return
            time.sleep(self.rng.uniform(*RETRY_PAUSE))

    def check(self, slot: PodSlot, result: Any) -> None:
        """The addresses the ADD result lists are on the pod's links, and the gateways answer."""
        self.tally.bump("checks")
        where = f"pod {slot.name} container {slot.sandbox.container_id}"
        try:
            listed: dict[str, set[str]] = {}
            for ip in result["ips"]:
                ifname = result["interfaces"][ip["interface"]]["name"]
                listed.setdefault(ifname, set()).add(ip["address"])
        except (KeyError, IndexError, TypeError) as exc:
            self.tally.problem(f"{where}: unreadable ADD result {result!r}: {exc!r}")
            return
        wanted = {f"eth{i}" for i in range(len(slot.networks))}
        if set(listed) != wanted or sum(map(len, listed.values())) != len(slot.networks):
            self.tally.problem(f"{where}: result lists {listed}, wanted one address on {wanted}")
        seen = truth.addresses(slot.sandbox.netns)
        for ifname, cidrs in listed.items():
            if not cidrs <= set(seen.get(ifname, ())):
                self.tally.problem(f"{where}: {ifname} should hold {cidrs}, holds {seen}")
        gateway = self.rng.choice(slot.gateways)
        if not truth.ping(slot.sandbox.netns, gateway):
            self.tally.problem(f"{where}: gateway {gateway} does not answer")


PHASES = ("add", "del", "idle", "recovery")


class Killer:
    """SIGKILLs the agent `kills` times at chosen phases and restarts it every time."""

    def __init__(self, *, node: e2e_node.Node, seed: int, tally: Tally, flight: InFlight) -> None:
        assert node.agent is not None
        self.agent: agent_proc.AgentProcess = node.agent
        self.log = node.root / "agent.log"
        self.rng = random.Random(seed)
        self.tally = tally
        self.flight = flight

    def kill(self, phase: str) -> None:
        self.agent.stop(sig=signal.SIGKILL)  # the whole process group: agent and delegates
        with self.tally.lock:
            self.tally.kills[phase] += 1

    def phase_now(self, wanted: str = "add") -> str:
        """What the runtime side is doing at this instant (`wanted` first when both run)."""
        running = {k.lower() for k in self.flight.snapshot()}
        return wanted if wanted in running else min(running, default="idle")

    def one_round(self) -> None:
        """Let the churn run a while, kill at a chosen phase, restart (maybe kill in recovery)."""
        time.sleep(self.rng.uniform(0.05, 0.5))
        wanted = self.rng.choice(PHASES[:3])
        if wanted == "idle":
            with self.flight.paused(timeout=10.0):
                time.sleep(self.rng.uniform(0.0, 0.05))
                self.kill(self.phase_now())
        else:
            if self.flight.wait_for(wanted.upper(), timeout=5.0):
                time.sleep(self.rng.uniform(0.0, 0.25))  # somewhere inside the operation
            self.kill(self.phase_now(wanted))
        self.restart(kill_in_recovery=self.rng.random() < 0.5)

    def restart(self, *, kill_in_recovery: bool) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.agent.start()
        if kill_in_recovery and self._recovery_started(offset, timeout=10.0):
            time.sleep(self.rng.uniform(0.0, 0.05))
            self.kill("recovery")
            self.agent.start()
        self.agent.wait_ready(timeout=30.0)

    def _recovery_started(self, offset: int, *, timeout: float) -> bool:
        """Watch the agent's log for a recovery step; False once it serves without one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log.open("rb") as fh:
                fh.seek(offset)
                text = fh.read()
            if b"INFO genie.recovery: recovery:" in text:
                return True
            if b"serving CNI on" in text:
                return False
            time.sleep(0.002)
        return False
