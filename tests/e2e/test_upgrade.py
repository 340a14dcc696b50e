"""Agent upgrade on a live node: the previous release writes the log, this one takes over.

The previous release is the code of a pinned commit of this repository (`git archive`), run
by the same interpreter with its own `genie` package first on the path. It installs its shim,
starts its agent and ADDs pods; then, as a DaemonSet rolling update does, the old agent gets
SIGTERM, this release's install-cni replaces the shim and this release's agent opens the same
database. Running pods must keep their network untouched, and this release must CHECK and DEL
them from the log the old one wrote.
"""

from __future__ import annotations

import io
import sqlite3
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from genie.demo import runtime
from genie.store import migrations
from tests.e2e import node as e2e_node
from tests.e2e import truth

pytestmark = pytest.mark.netns

REPO: Final = Path(__file__).resolve().parents[2]
# genie 0.1.0 (tag v0.1.0): the release before deploy/ and the runtime end-to-end tests
PREVIOUS_RELEASE: Final = "2ef1eea22d48c5e088b919c4399c288b2b6c3322"
RELEASED_DIRS: Final = ("genie", "migrations")


def _previous_release(dest: Path) -> Path:
    """The previous release's `genie` package and migrations, extracted under `dest`."""
    shallow = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--is-shallow-repository"],
        capture_output=True,
        text=True,
        check=False,
    )
    if shallow.returncode != 0:
        pytest.skip(f"not a git checkout ({shallow.stderr.strip()}): no previous release to run")
    have = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"], check=False
    )
    if have.returncode != 0 and shallow.stdout.strip() == "true":
        pytest.skip(f"shallow clone without the previous release {PREVIOUS_RELEASE[:12]}")
    assert have.returncode == 0, f"previous release {PREVIOUS_RELEASE} missing from the history"
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS_RELEASE, *RELEASED_DIRS],
        capture_output=True,
        check=True,
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


@pytest.fixture
def old_code(tmp_path: Path) -> Path:
    return _previous_release(tmp_path / "previous-release")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[e2e_node.Node]:
    n = e2e_node.Node(tmp_path / "node")
    try:
        yield n
    finally:
        n.close()


def _ok(reply: runtime.PluginReply) -> dict[str, Any]:
    assert reply.exit_code == 0, f"{reply.stdout} {reply.stderr}"
    result = reply.json()
    assert isinstance(result, dict)
    return result


def _schema_version(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_upgrade_keeps_running_pods_and_deletes_them(
    node: e2e_node.Node, old_code: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.bridge("net-a", octet=241, default_route=True)
    node.bridge("net-b", octet=242)
    node.bridge("net-c", octet=243)

    # --- the previous release: its install-cni, its agent, its shim ---------------------
    with monkeypatch.context() as old:
        # `python -m genie.cli` puts the working directory first on sys.path
        old.chdir(old_code)
        old.setenv("PYTHONPATH", str(old_code))
        # its bytecode under old_code is the proof that the old modules were the ones imported
        old.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
        node.prepare()
        old_shim = (node.bin_dir / "genie").read_bytes()
        node.start_agent()
    assert (old_code / "genie" / "daemon" / "__pycache__").is_dir(), "old agent ran other code"
    assert node.agent is not None
    old_pid = node.agent.proc.pid if node.agent.proc else 0

    pods = {"router": "net-a,net-b,net-c", "dispatcher": "net-a,net-b", "worker": "net-a"}
    sandboxes = {}
    for name, networks in pods.items():
        node.pod(name, {"cni": networks})
        sandboxes[name] = node.sandbox(name)
        _ok(node.cni("ADD", sandboxes[name]))
    before = {name: truth.addresses(sb.netns) for name, sb in sandboxes.items()}
    assert {name: len(ifs) for name, ifs in before.items()} == {
        name: len(n.split(",")) for name, n in pods.items()
    }
    state_before = node.state()
    allocations_before = node.allocations()
    written_by_old = _schema_version(node.db)

    # --- rolling update: SIGTERM, the init container's install-cni, the new agent -------
    assert node.stop_agent() == 0
    node.install_shim()
    assert (node.bin_dir / "genie").read_bytes() != old_shim or _same_shim_source(old_code)
    node.start_agent()
    assert node.agent is not None and node.agent.proc is not None
    assert node.agent.proc.pid != old_pid
    assert written_by_old <= migrations.latest() == _schema_version(node.db)

    # running pods untouched: same state, same addresses, same IPAM files, still reachable
    assert node.state() == state_before
    assert node.allocations() == allocations_before
    for name, sb in sandboxes.items():
        assert truth.addresses(sb.netns) == before[name]
    router_b = before["router"]["eth1"][0].split("/")[0]
    assert truth.ping(sandboxes["dispatcher"].netns, router_b)
    for sb in sandboxes.values():
        _ok_empty(node.cni("CHECK", sb))

    # a pod added by the new release next to the old ones, then every pod DEL'd (twice)
    node.pod("late", {"cni": "net-b,net-c"})
    sandboxes["late"] = node.sandbox("late")
    _ok(node.cni("ADD", sandboxes["late"]))
    for sb in sandboxes.values():
        _ok_empty(node.cni("DEL", sb))
        _ok_empty(node.cni("DEL", sb))
        assert truth.addresses(sb.netns) == {}
    assert node.allocations() == {}
    assert node.state() == []
    verify = node.genie("replay", "--db", str(node.db), "--verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _ok_empty(reply: runtime.PluginReply) -> None:
    assert reply.exit_code == 0, f"{reply.stdout} {reply.stderr}"


def _same_shim_source(old_code: Path) -> bool:
    """True when the shim did not change between the releases (then the bytes match)."""
    new = (REPO / "genie" / "cni" / "shim.py").read_bytes()
    return (old_code / "genie" / "cni" / "shim.py").read_bytes() == new
