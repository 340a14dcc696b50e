"""Bad things in the node's own files: invalid net-dir configs, dangerous delegate types, and
delegates (script plugins in the node's plugins dir) that print garbage or nothing."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from genie.cni import errors
from genie.services import delegates
from tests.badinput import kit
from tests.e2e import node as e2e_node
from tests.e2e import truth
from tests.support import plugins

pytestmark = pytest.mark.netns

BROKEN_FILES = {
    "30-not-json.conf": b"{ this is not json",
    "30-list.conf": b'["bridge"]',
    "30-no-name.conf": b'{"cniVersion": "1.0.0", "type": "bridge"}',
    "30-no-type.conf": b'{"cniVersion": "1.0.0", "name": "broken-no-type"}',
    "30-empty-chain.conflist": b'{"cniVersion": "1.0.0", "name": "broken-chain", "plugins": []}',
    "30-bad-parallel.conf": b'{"name": "broken-par", "type": "bridge", "parallel": "yes"}',
    "30-not-utf8.conf": b'{"name": "\xff", "type": "bridge"}',
    "30-huge.conf": b'{"name": "broken-huge", "type": "bridge", "x": "' + b"x" * (1 << 20) + b'"}',
}


@pytest.fixture
def broken_files(node: e2e_node.Node) -> Iterator[None]:
    for fname, body in BROKEN_FILES.items():
        (node.net_dir / fname).write_bytes(body)
    try:
        yield
    finally:
        for fname in BROKEN_FILES:
            (node.net_dir / fname).unlink(missing_ok=True)


@pytest.mark.usefixtures("broken_files")
def test_invalid_net_dir_files_are_skipped_and_logged_by_name(node: e2e_node.Node) -> None:
    kit.still_serving(node)  # the good networks beside them work
    log = node.agent_log()
    for fname in BROKEN_FILES:
        assert f"ignoring network config {node.net_dir / fname}:" in log, fname
    # a pod asking for a network only a broken file names gets a clear config error
    node.pod("wants-broken", {"cni": "net-a,broken-no-type"})
    sandbox = node.sandbox("wants-broken")
    with kit.refused_without_trace(node):
        err = kit.error(node.cni("ADD", sandbox))
    assert err["code"] == errors.INVALID_NETWORK_CONFIG, err
    assert "default/wants-broken" in err["msg"] and "'broken-no-type'" in err["msg"], err
    assert node.cni("DEL", sandbox).exit_code == 0


@pytest.mark.parametrize(
    "plugin_type",
    ["/usr/lib/cni/bridge", "../../../usr/lib/cni/bridge", "..", ".", "sub/bridge", "bridge;id"],
)
def test_delegate_type_with_a_path_is_refused_before_anything_runs(
    node: e2e_node.Node, plugin_type: str
) -> None:
    conf = node.bridge("evil", octet=219)
    conf["type"] = plugin_type
    node.write_network("20-evil.conf", conf)
    node.pod("evil-pod", {"cni": "net-a,evil"})
    sandbox = node.sandbox("evil-pod")
    try:
        with kit.refused_without_trace(node):
            err = kit.error(node.cni("ADD", sandbox))
            assert truth.links(sandbox.netns) == ["lo"]
        assert err["code"] == errors.INVALID_NETWORK_CONFIG, err
        assert "default/evil-pod" in err["msg"] and "network evil" in err["msg"], err
        assert "not a plain plugin name" in err["msg"], err
        assert node.cni("DEL", sandbox).exit_code == 0  # and the pod is never stuck
    finally:
        (node.net_dir / "20-evil.conf").unlink()


def test_delegate_type_missing_from_cni_path_is_refused_before_anything_runs(
    node: e2e_node.Node,
) -> None:
    node.write_network("20-typo.conf", {"cniVersion": "1.0.0", "name": "typo", "type": "brigde"})
    node.pod("typo-pod", {"cni": "net-a,typo"})
    sandbox = node.sandbox("typo-pod")
    try:
        with kit.refused_without_trace(node):
            err = kit.error(node.cni("ADD", sandbox))
        assert err["code"] == errors.INVALID_NETWORK_CONFIG, err
        assert "default/typo-pod" in err["msg"] and "'brigde' not found" in err["msg"], err
        assert node.cni("DEL", sandbox).exit_code == 0
    finally:
        (node.net_dir / "20-typo.conf").unlink()


# script plugin body -> words the error must hold
BAD_DELEGATES = {
    "garbage": ("cat >/dev/null\necho 'this is not a CNI result'", "printed no result"),
    "nothing": ("cat >/dev/null", "printed no result"),
    "json without version": ("cat >/dev/null\necho '{\"ips\": []}'", "printed no result"),
    "garbage and status 1": ("cat >/dev/null\necho 'boom' >&2\nexit 1", "exited with status 1"),
    "killed": ("cat >/dev/null\nkill -9 $$", "killed by signal 9"),
    "floods stdout": (
        "cat >/dev/null\nhead -c 3000000 /dev/zero | tr '\\0' x",
        f"more than {delegates.MAX_STDOUT} bytes",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DELEGATES))
def test_delegate_printing_garbage_or_nothing_is_rolled_back(
    node: e2e_node.Node, case: str
) -> None:
    body, needle = BAD_DELEGATES[case]
    plugin = f"bad{sorted(BAD_DELEGATES).index(case)}"
    # on DEL (the rollback) the script succeeds quietly, as DEL of nothing should
    plugins.write_script_plugin(
        node.root / "plugins", plugin, f'if [ "$CNI_COMMAND" = DEL ]; then exit 0; fi\n{body}'
    )
    node.write_network(f"40-{plugin}.conf", {"cniVersion": "1.0.0", "name": plugin, "type": plugin})
    node.pod(plugin, {"cni": f"net-a,{plugin},net-b"})
    sandbox = node.sandbox(plugin)
    try:
        with kit.rolled_back(node, sandbox.container_id):
            err = kit.error(node.cni("ADD", sandbox))
            assert truth.links(sandbox.netns) == ["lo"]  # net-a and net-b undone too
        assert err["code"] == errors.DELEGATE_FAILED, err
        assert f"default/{plugin}" in err["msg"] and f"network {plugin}" in err["msg"], err
        assert needle in err["msg"] and "rolled back" in err["msg"], err
        assert len(json.dumps(err)) < 16384, "the delegate's output is not echoed whole"
        assert node.cni("DEL", sandbox).exit_code == 0
    finally:
        (node.net_dir / f"40-{plugin}.conf").unlink()


def test_delegate_hanging_past_its_timeout_is_killed_and_rolled_back(tmp_path: Path) -> None:
    """A plugin stuck mid-ADD (a wedged DHCP or cloud call): killed at delegate-timeout, and
    the ADD rolled back like any other failure, its real neighbours included."""
    config = tmp_path / "agent.yaml"
    config.write_text("delegate-timeout: 2\n")
    with e2e_node.running_node(tmp_path / "node", extra_args=("--config", str(config))) as n:
        n.bridge("net-a", octet=215, default_route=True)
        n.bridge("net-b", octet=216)
        n.pod("good", {"cni": "net-a,net-b"})
        pidfile = tmp_path / "hang.pid"
        plugins.write_script_plugin(
            n.root / "plugins",
            "hang",
            f'if [ "$CNI_COMMAND" = DEL ]; then exit 0; fi\ncat >/dev/null\n'
            f"echo $$ > {pidfile}\nexec sleep 600",
        )
        n.write_network("40-hang.conf", {"cniVersion": "1.0.0", "name": "hang", "type": "hang"})
        n.pod("stuck", {"cni": "net-a,hang,net-b"})
        sandbox = n.sandbox("stuck")
        with kit.rolled_back(n, sandbox.container_id):
            started = time.monotonic()
            err = kit.error(n.cni("ADD", sandbox))
            took = time.monotonic() - started
            assert truth.links(sandbox.netns) == ["lo"]  # net-a and net-b undone too
        assert err["code"] == errors.DELEGATE_FAILED, err
        assert "default/stuck" in err["msg"] and "network hang" in err["msg"], err
        assert "timed out after 2s" in err["msg"] and "rolled back" in err["msg"], err
        assert 2 <= took < 20, took
        hung = int(pidfile.read_text())
        with pytest.raises(ProcessLookupError):  # killed, not left sleeping
            os.kill(hung, 0)
        assert n.cni("DEL", sandbox).exit_code == 0
