"""The audit commands on a real log: table and JSON output, filters, state, replay --verify."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from genie import cli
from genie.audit import render, verify
from genie.domain import codec
from genie.domain import events as ev
from genie.domain import state as st
from genie.store import migrations, reader, recorder, replay
from tests.store import helpers

REPO = Path(__file__).parents[2]
A, B, C = "a" * 64, "b" * 64, "c" * 64


async def _build(db: Path) -> float:
    """Pod a attached (2 networks), pod b attached then deleted, pod c rolled back."""
    async with await recorder.EventStore.open(db, snapshot_every=5) as store:
        await store.append(A, helpers.attach_events("pod-a", 5), expected_version=0)
        await store.append(B, helpers.attach_events("pod-b", 6), expected_version=0)
        await asyncio.sleep(0.02)
        boundary = datetime.datetime.now(tz=datetime.UTC).timestamp()
        await asyncio.sleep(0.02)
        await store.append(B, helpers.detach_events(), expected_version=4)
        await store.append(
            C,
            [
                helpers.add_requested("pod-c", 2),
                helpers.delegate_added(0, "10.210.0.7/24"),
                ev.DelegateFailed(index=1, code=7, msg="no bridge"),
                ev.DelegateDeleted(index=0),
                ev.DelegateDeleted(index=1),
                ev.AddRolledBack(reason="network tenant-b failed"),
            ],
            expected_version=0,
        )
    return boundary


@pytest.fixture
def log(tmp_path: Path) -> tuple[Path, float]:
    db = tmp_path / "events.db"
    return db, asyncio.run(_build(db))


def _genie(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genie.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _json_lines(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert cli.main(list(args)) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_events_table_has_every_event_in_aligned_columns(log: tuple[Path, float]) -> None:
    db, _ = log
    done = _genie("events", "--db", str(db))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == list(render.EVENT_HEADERS)
    assert len(lines) == 1 + 4 + 8 + 6
    starts = [lines[0].index(h) for h in render.EVENT_HEADERS]
    for line in lines[1:]:
        for start in starts[1:]:
            if len(line) > start:  # trailing empty cells are stripped
                assert line[start - 2 : start] == "  ", line  # columns start at their header
    added = [line for line in lines if "DelegateAdded" in line and "ns/pod-a" in line]
    assert len(added) == 2
    assert added[1].split()[4:7] == ["tenant-b", "eth1", "10.211.0.5/24"]
    deleted = [line for line in lines if "DelegateDeleted" in line and "ns/pod-b" in line]
    assert deleted[0].split()[4:7] == ["tenant-a", "eth0", "10.210.0.6/24"]
    failed = next(line for line in lines if "DelegateFailed" in line)
    assert "error 7: no bridge" in failed


def test_events_json_lines_parse(
    log: tuple[Path, float], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = log
    rows = _json_lines(capsys, "events", "--db", str(db), "--json")
    assert [r["seq"] for r in rows] == list(range(1, 19))
    first = rows[0]
    assert first["event"] == "AddRequested"
    assert first["container"] == A
    assert first["pod"] == "ns/pod-a"
    assert first["networks"] == ["tenant-a", "tenant-b"]
    completed = next(r for r in rows if r["event"] == "AddCompleted")
    assert completed["ips"] == ["10.210.0.5/24"]
    assert isinstance(completed["data"], dict)


def test_events_filters(log: tuple[Path, float], capsys: pytest.CaptureFixture[str]) -> None:
    db, boundary = log
    by_container = _json_lines(capsys, "events", "--db", str(db), "--json", "--container", B)
    assert {r["container"] for r in by_container} == {B} and len(by_container) == 8
    by_prefix = _json_lines(capsys, "events", "--db", str(db), "--json", "--container", "ccc")
    assert {r["container"] for r in by_prefix} == {C} and len(by_prefix) == 6
    by_pod = _json_lines(capsys, "events", "--db", str(db), "--json", "--pod", "ns/pod-a")
    assert {r["container"] for r in by_pod} == {A} and len(by_pod) == 4
    since = datetime.datetime.fromtimestamp(boundary, tz=datetime.UTC).isoformat()
    recent = _json_lines(capsys, "events", "--db", str(db), "--json", "--since", since)
    assert [r["event"] for r in recent][:4] == [
        "DelRequested",
        "DelegateDeleted",
        "DelegateDeleted",
        "DelCompleted",
    ]
    assert len(recent) == 4 + 6
    # context from before --since: the pod, network and released IPs of pod b's delegates
    assert recent[1]["pod"] == "ns/pod-b"
    assert recent[1]["networks"] == ["tenant-a"]
    assert recent[1]["ips"] == ["10.210.0.6/24"]
    both = _json_lines(
        capsys, "events", "--db", str(db), "--json", "--since", since, "--pod", "ns/pod-b"
    )
    assert len(both) == 4


def test_state_shows_live_attachments(
    log: tuple[Path, float], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = log
    assert cli.main(["state", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == list(render.STATE_HEADERS)
    assert len(lines) == 2
    assert lines[1].split()[:6] == [
        "ns/pod-a",
        A[:12],
        "attached",
        "tenant-a,tenant-b",
        "eth0,eth1",
        "10.210.0.5/24,10.211.0.5/24",
    ]
    for flag in ([], ["--full"]):
        assert cli.main(["state", "--db", str(db), "--json", *flag]) == 0
        body = json.loads(capsys.readouterr().out)
        assert body["last_seq"] == 18
        assert [a["container"] for a in body["attachments"]] == [A]
        assert body["attachments"][0]["ips"] == ["10.210.0.5/24", "10.211.0.5/24"]


def test_replay_verify_passes_on_a_clean_log(log: tuple[Path, float]) -> None:
    db, _ = log
    done = _genie("replay", "--db", str(db), "--verify")
    assert done.returncode == 0, done.stderr
    assert "replay verified: 18 events" in done.stdout


def _wrong_phase(att: st.Attachment) -> st.Attachment:
    fields = {name: getattr(att, name) for name in st.Attachment.__dataclass_fields__}
    return st.Attachment(**{**fields, "phase": "deleting"})


def _tamper_snapshot(
    db: Path, change: Callable[[st.Attachment], st.Attachment] = _wrong_phase
) -> int:
    """Test-only: add a snapshot (where there is none) with pod a's attachment `change`d
    (by default: a wrong phase)."""
    taken = {seq for (seq,) in helpers.rows(db, "SELECT seq FROM snapshots")}
    at = max(set(range(5, 19)) - taken)
    good = asyncio.run(_state_at(db, at))
    bad = st.NodeState(
        attachments={**good.attachments, A: change(good.attachments[A])},
        last_seq=at,
    )
    helpers.execute(
        db,
        "INSERT INTO snapshots (seq, fold_version, created_at, state) VALUES (?, ?, 0, ?)",
        (at, replay.FOLD_VERSION, codec.encode_state(bad)),
    )
    return at


async def _state_at(db: Path, seq: int) -> st.NodeState:
    async with await reader.EventLog.open(db) as log:
        return await replay.rebuild(log, until_seq=seq)


def test_replay_verify_reports_a_wrong_snapshot(log: tuple[Path, float]) -> None:
    db, _ = log
    at = _tamper_snapshot(db)
    done = _genie("replay", "--db", str(db), "--verify")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"genie: replay mismatch: snapshot at seq {at}:")
    assert f"['{A}']['phase']: snapshot 'deleting' != replay 'attached'" in done.stderr


def test_replay_verify_names_the_element_inside_tuples(log: tuple[Path, float]) -> None:
    db, _ = log

    def wrong_ifname(att: st.Attachment) -> st.Attachment:  # delegates and plugins are tuples
        second = att.delegates[1]
        plan = dataclasses.replace(second.plan, ifname="eth9")
        return dataclasses.replace(
            att, delegates=(att.delegates[0], dataclasses.replace(second, plan=plan))
        )

    at = _tamper_snapshot(db, wrong_ifname)
    done = _genie("replay", "--db", str(db), "--verify")
    assert done.returncode == 1
    assert done.stderr == (
        f"genie: replay mismatch: snapshot at seq {at}: state['attachments']['{A}']"
        "['delegates'][1]['plan']['ifname']: snapshot 'eth9' != replay 'eth1'\n"
    )


def test_first_difference_descends_tuples_lists_mappings_and_dataclasses() -> None:
    pod = ev.PodRef(namespace="ns", name="web", uid="u")
    same = {"k": [(1, {"x": pod})]}
    assert verify.first_difference(same, {"k": [(1, {"x": pod})]}) == ""
    assert (
        verify.first_difference((1, (2, 3)), (1, (2, 4))) == "state[1][1]: snapshot 3 != replay 4"
    )
    assert verify.first_difference([1, (2, 3)], (1, [2, 3])) == ""  # a list is a tuple here
    moved = {"k": [(1, {"x": dataclasses.replace(pod, name="db")})]}
    assert verify.first_difference(same, moved) == (
        "state['k'][0][1]['x'].name: snapshot 'web' != replay 'db'"
    )
    assert verify.first_difference((1, 2), (1, 2, 3)) == (
        "state: 2 items in the snapshot, 3 in the replay"
    )
    assert verify.first_difference(pod, {"name": "web"}).startswith("state: snapshot PodRef(")


def test_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.db"
    for command in ("events", "state", "replay"):
        assert cli.main([command, "--db", str(missing)]) == 2
        err = capsys.readouterr().err
        assert err == f"genie: no event log at {missing}\n"
    assert not missing.exists()
    newer = tmp_path / "newer.db"
    migrations.migrate(newer)
    helpers.execute(newer, f"PRAGMA user_version = {migrations.latest() + 1}")
    done = _genie("migrate", "--db", str(newer))
    assert done.returncode == 2
    assert done.stderr.startswith("genie: ") and done.stderr.count("\n") == 1
    assert "newer than" in done.stderr
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"hello" * 1000)
    assert cli.main(["events", "--db", str(garbage)]) == 2
    assert "not a readable genie event log" in capsys.readouterr().err
    assert cli.main(["events", "--db", str(newer), "--since", "yesterday"]) == 2
    assert "ISO 8601" in capsys.readouterr().err


def test_migrate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "new.db"
    assert cli.main(["migrate", "--db", str(db)]) == 0
    assert f"schema version 0 -> {migrations.latest()}" in capsys.readouterr().out
    assert cli.main(["migrate", "--db", str(db)]) == 0
    assert "up to date" in capsys.readouterr().out
