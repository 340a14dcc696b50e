"""DelegateRunner's exec contract with stand-in plugins: env, stdin, chains, failures, limits."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from genie.cni import errors
from genie.domain import events as ev
from genie.services import delegates
from tests.support import plugins

pytestmark = pytest.mark.anyio

CID = "c0ffee"


def _plan(
    *types: str,
    network: str = "net-a",
    cni_args: tuple[tuple[str, str], ...] = (),
    extra: Mapping[str, Any] | None = None,
) -> ev.PlannedDelegate:
    return ev.PlannedDelegate(
        index=0,
        network=network,
        ifname="eth1",
        cni_version="1.0.0",
        plugins=tuple(
            {"cniVersion": "1.0.0", "name": network, "type": t, **(extra or {})} for t in types
        ),
        cni_args=cni_args,
    )


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    return path


@pytest.fixture
def record_dir(tmp_path: Path) -> Path:
    return tmp_path / "records"


def _runner(bin_dir: Path, **kw: Any) -> delegates.DelegateRunner:
    return delegates.DelegateRunner(cni_path=[bin_dir], **kw)


def _wait_gone(pid: int, *, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True  # dead, waiting for its (new) parent to reap it
        time.sleep(0.02)
    return False


async def test_env_is_clean_and_cni_args_merged(bin_dir: Path, record_dir: Path) -> None:
    plugins.recording_plugin(bin_dir, "rec", record_dir=record_dir)
    os.environ["GENIE_TEST_LEAK"] = "1"
    try:
        plan = _plan("rec", cni_args=(("IgnoreUnknown", "true"), ("IP", "10.1.0.5")))
        await _runner(bin_dir).add(
            plan,
            container_id=CID,
            netns="/run/netns/x",
            runtime_args=(("K8S_POD_NAMESPACE", "ns"), ("IP", "10.9.9.9"), ("K8S_POD_NAME", "p")),
        )
    finally:
        del os.environ["GENIE_TEST_LEAK"]
    ((env, stdin),) = plugins.recorded(record_dir, "rec")
    assert set(env) - {"PWD", "SHLVL", "_", "OLDPWD"} == {
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_ARGS",
        "CNI_PATH",
        "PATH",
    }
    assert env["CNI_COMMAND"] == "ADD"
    assert env["CNI_CONTAINERID"] == CID
    assert env["CNI_NETNS"] == "/run/netns/x"
    assert env["CNI_IFNAME"] == "eth1"
    assert env["CNI_PATH"] == str(bin_dir)
    assert env["PATH"] == delegates.SAFE_PATH
    # the plan's IP wins over the runtime's; IgnoreUnknown once, first
    assert env["CNI_ARGS"] == "IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;IP=10.1.0.5"
    assert stdin == dict(plan.plugins[0])
    assert "prevResult" not in stdin


def test_cni_args_empty_and_refused() -> None:
    assert delegates.merge_cni_args((), (), network="n") == ""
    assert delegates.merge_cni_args((("A", "1"),), (), network="n") == "IgnoreUnknown=true;A=1"
    for bad in [("A;B", "1"), ("A", "1;B=2"), ("", "x"), ("A=B", "1")]:
        with pytest.raises(errors.CniError) as info:
            delegates.merge_cni_args((bad,), (), network="n")
        assert info.value.code == errors.INVALID_NETWORK_CONFIG


async def test_chain_add_passes_prev_result_and_del_runs_in_reverse(
    bin_dir: Path, record_dir: Path
) -> None:
    first = {**plugins.RESULT, "ips": [{"address": "10.0.0.2/24"}]}
    second = {**plugins.RESULT, "ips": [{"address": "10.0.0.3/24"}]}
    plugins.recording_plugin(bin_dir, "one", record_dir=record_dir, result=first)
    plugins.recording_plugin(bin_dir, "two", record_dir=record_dir, result=second)
    plan = _plan("one", "two")
    runner = _runner(bin_dir)

    result = await runner.add(plan, container_id=CID, netns="/run/netns/x")
    assert result == second
    ((_, one_in),) = plugins.recorded(record_dir, "one")
    ((_, two_in),) = plugins.recorded(record_dir, "two")
    assert "prevResult" not in one_in
    assert two_in["prevResult"] == first

    await runner.check(plan, prev_result=result, container_id=CID, netns="/run/netns/x")
    before = time.monotonic_ns()
    await runner.delete(plan, prev_result=result, container_id=CID, netns="")
    calls_one = plugins.recorded(record_dir, "one")
    calls_two = plugins.recorded(record_dir, "two")
    assert [env["CNI_COMMAND"] for env, _ in calls_one] == ["ADD", "CHECK", "DEL"]
    assert [env["CNI_COMMAND"] for env, _ in calls_two] == ["ADD", "CHECK", "DEL"]
    # CHECK and DEL: every plugin sees the stored final result
    assert calls_one[1][1]["prevResult"] == second
    assert calls_one[2][1]["prevResult"] == second
    assert calls_two[2][1]["prevResult"] == second
    assert calls_one[2][0]["CNI_NETNS"] == ""
    # reverse order: "two" was deleted before "one"
    del_one = (record_dir / "one.2.env").stat().st_mtime_ns
    del_two = (record_dir / "two.2.env").stat().st_mtime_ns
    assert before <= del_two <= del_one


async def test_del_without_prev_result(bin_dir: Path, record_dir: Path) -> None:
    plugins.recording_plugin(bin_dir, "rec", record_dir=record_dir)
    await _runner(bin_dir).delete(_plan("rec"), prev_result=None, container_id=CID, netns="")
    ((env, stdin),) = plugins.recorded(record_dir, "rec")
    assert env["CNI_COMMAND"] == "DEL"
    assert "prevResult" not in stdin


async def test_check_skipped_before_0_4_0(bin_dir: Path, record_dir: Path) -> None:
    plugins.recording_plugin(bin_dir, "rec", record_dir=record_dir)
    plan = ev.PlannedDelegate(
        index=0,
        network="old",
        ifname="eth0",
        cni_version="0.3.1",
        plugins=({"cniVersion": "0.3.1", "name": "old", "type": "rec"},),
    )
    await _runner(bin_dir).check(plan, prev_result={}, container_id=CID, netns="/x")
    assert plugins.recorded(record_dir, "rec") == []


async def test_timeout_kills_the_whole_process_group(bin_dir: Path, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    plugins.write_script_plugin(
        bin_dir,
        "sleepy",
        f"""
sleep 60 &
echo $! >> {pids}
echo $$ >> {pids}
sleep 60
""",
    )
    start = time.monotonic()
    with pytest.raises(errors.CniError) as info:
        await _runner(bin_dir, timeout=0.5).add(_plan("sleepy"), container_id=CID, netns="/x")
    elapsed = time.monotonic() - start
    assert info.value.code == errors.DELEGATE_FAILED
    assert info.value.msg == "delegate sleepy for network net-a timed out after 0.5s"
    assert elapsed < 5
    recorded = [int(p) for p in pids.read_text().split()]
    assert len(recorded) == 2
    for pid in recorded:
        assert _wait_gone(pid), f"process {pid} survived the timeout"


async def test_cancellation_kills_the_child(bin_dir: Path, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    plugins.write_script_plugin(bin_dir, "sleepy", f"echo $$ >> {pids}\nsleep 60")
    runner = _runner(bin_dir, timeout=30)
    with anyio.move_on_after(0.5):
        await runner.add(_plan("sleepy"), container_id=CID, netns="/x")
    (pid,) = (int(p) for p in pids.read_text().split())
    assert _wait_gone(pid)


@pytest.mark.parametrize("output", ["", "garbage", "[1, 2]", '{"ips": []}'])
async def test_add_without_a_result_is_delegate_failed(bin_dir: Path, output: str) -> None:
    plugins.write_script_plugin(bin_dir, "liar", f"cat >/dev/null\nprintf '%s' '{output}'")
    with pytest.raises(errors.CniError) as info:
        await _runner(bin_dir).add(_plan("liar"), container_id=CID, netns="/x")
    assert info.value.code == errors.DELEGATE_FAILED
    assert info.value.msg == "delegate liar for network net-a printed no result"


async def test_plugin_cni_error_is_relayed(bin_dir: Path) -> None:
    err = '{"cniVersion":"1.0.0","code":11,"msg":"busy, try later","details":"lock held"}'
    plugins.write_script_plugin(bin_dir, "busy", f"cat >/dev/null\nprintf '%s' '{err}'\nexit 1")
    with pytest.raises(errors.CniError) as info:
        await _runner(bin_dir).add(_plan("busy"), container_id=CID, netns="/x")
    assert (info.value.code, info.value.msg, info.value.details) == (
        11,
        "net-a: busy, try later",
        "lock held",
    )


async def test_plugin_crash_reports_status_and_stderr(
    bin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins.write_script_plugin(bin_dir, "crash", "echo 'boom: no bridge' >&2\nexit 3")
    with pytest.raises(errors.CniError) as info:
        await _runner(bin_dir).delete(_plan("crash"), prev_result=None, container_id=CID, netns="")
    assert info.value.code == errors.DELEGATE_FAILED
    assert "exited with status 3" in info.value.msg
    assert "boom: no bridge" in info.value.msg
    assert "boom: no bridge" in caplog.text


async def test_stdout_over_cap_is_refused(bin_dir: Path) -> None:
    plugins.write_script_plugin(bin_dir, "chatty", "head -c 3000000 /dev/zero")
    with pytest.raises(errors.CniError) as info:
        await _runner(bin_dir).add(_plan("chatty"), container_id=CID, netns="/x")
    assert info.value.code == errors.DELEGATE_FAILED
    assert "more than" in info.value.msg


@pytest.mark.parametrize(
    "plugin_type",
    ["../bin/rec", "/usr/lib/cni/bridge", "..", ".", "sub/rec", "", "-rec", "genie", "nope", 7],
)
async def test_plugin_type_must_be_a_bare_name_in_cni_path(
    bin_dir: Path, record_dir: Path, plugin_type: Any
) -> None:
    plugins.recording_plugin(bin_dir, "rec", record_dir=record_dir)
    plugins.recording_plugin(bin_dir, "genie", record_dir=record_dir)
    (bin_dir / "sub").mkdir()
    plugins.recording_plugin(bin_dir / "sub", "rec", record_dir=record_dir)
    plan = _plan("rec")
    plan = ev.PlannedDelegate(
        index=0,
        network="net-a",
        ifname="eth0",
        cni_version="1.0.0",
        plugins=({**plan.plugins[0], "type": plugin_type},),
    )
    with pytest.raises(errors.CniError) as info:
        await _runner(bin_dir).add(plan, container_id=CID, netns="/x")
    assert info.value.code == errors.INVALID_NETWORK_CONFIG
    assert plugins.recorded(record_dir, "rec") == []
    assert plugins.recorded(record_dir, "genie") == []


def test_non_executable_and_directory_are_not_plugins(bin_dir: Path) -> None:
    (bin_dir / "plain").write_text("#!/bin/sh\n")
    (bin_dir / "adir").mkdir()
    runner = _runner(bin_dir)
    for name in ("plain", "adir"):
        with pytest.raises(errors.CniError) as info:
            runner.resolve(name, network="n")
        assert f"plugin type {name!r} not found in {bin_dir}" in info.value.msg


def test_first_cni_path_dir_wins(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    plugins.write_script_plugin(a, "p", "exit 0")
    plugins.write_script_plugin(b, "p", "exit 0")
    plugins.write_script_plugin(b, "q", "exit 0")
    runner = delegates.DelegateRunner(cni_path=[a, b])
    assert runner.resolve("p", network="n") == a / "p"
    assert runner.resolve("q", network="n") == b / "q"


async def test_concurrency_is_bounded(bin_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    plugins.write_script_plugin(
        bin_dir,
        "slow",
        f"""
cat >/dev/null
echo start >> {log}
sleep 0.3
echo end >> {log}
printf '%s' '{{"cniVersion":"1.0.0"}}'
""",
    )
    runner = _runner(bin_dir, max_concurrency=2)
    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(lambda: runner.add(_plan("slow"), container_id=CID, netns="/x"))
    lines = log.read_text().split()
    running = peak = 0
    for line in lines:
        running += 1 if line == "start" else -1
        peak = max(peak, running)
    assert len(lines) == 8
    assert peak == 2
