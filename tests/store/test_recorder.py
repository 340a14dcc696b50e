"""EventStore against a real SQLite file: group commit, optimistic concurrency, validation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from genie.domain import events as ev
from genie.domain import state as st
from genie.store import errors, reader, recorder, replay
from tests.store import helpers

pytestmark = pytest.mark.anyio


async def _lifecycle(store: recorder.EventStore, stream: str, octet: int) -> None:
    version = await store.stream_head(stream)
    for event in helpers.attach_events(f"pod-{octet}", octet % 250):
        (rec,) = await store.append(stream, [event], expected_version=version)
        version = rec.version


async def test_200_concurrent_appenders_all_commit_with_contiguous_versions(
    tmp_path: Path,
) -> None:
    db = tmp_path / "events.db"
    async with await recorder.EventStore.open(db, snapshot_every=100) as store:
        await asyncio.gather(*(_lifecycle(store, f"c{i:03d}", i) for i in range(200)))
        live = store.state
    assert len(live.attachments) == 200
    assert all(a.phase is st.Phase.ATTACHED for a in live.attachments.values())
    assert live.last_seq == 800
    versions: dict[str, list[int]] = {}
    for stream, version in helpers.rows(db, "SELECT stream, version FROM events ORDER BY seq"):
        versions.setdefault(stream, []).append(version)
    assert len(versions) == 200
    assert all(v == [1, 2, 3, 4] for v in versions.values())
    assert [r[0] for r in helpers.rows(db, "SELECT seq FROM events ORDER BY seq")] == list(
        range(1, 801)
    )
    async with await recorder.EventStore.open(db) as reopened:
        assert reopened.state == live


async def test_conflicting_expected_version_is_rejected_and_others_in_the_batch_commit(
    tmp_path: Path,
) -> None:
    db = tmp_path / "events.db"
    async with await recorder.EventStore.open(db) as store:
        await store.append("a", [helpers.add_requested("a")], expected_version=0)
        racers = [
            store.append("a", [ev.DelegateAdded(index=0, result={})], expected_version=1)
            for _ in range(10)
        ]
        others = [
            store.append(f"o{i}", [helpers.add_requested(f"o{i}")], expected_version=0)
            for i in range(10)
        ]
        outcomes = await asyncio.gather(*racers, *others, return_exceptions=True)
        won = [o for o in outcomes[:10] if not isinstance(o, BaseException)]
        lost = [o for o in outcomes[:10] if isinstance(o, BaseException)]
        assert len(won) == 1
        assert len(lost) == 9
        assert all(isinstance(e, errors.ConcurrencyError) for e in lost)
        assert all(not isinstance(o, BaseException) for o in outcomes[10:])
        with pytest.raises(errors.ConcurrencyError, match="at version 2"):
            await store.append("a", [ev.DelegateAdded(index=1, result={})], expected_version=5)
        with pytest.raises(errors.ConcurrencyError):
            await store.append("never", [helpers.add_requested("x")], expected_version=3)
    assert helpers.rows(db, "SELECT count(*) FROM events WHERE stream = 'a'") == [(2,)]
    assert helpers.rows(db, "SELECT count(*) FROM events") == [(12,)]


async def test_invalid_transition_writes_nothing_of_that_append(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    async with await recorder.EventStore.open(db) as store:
        await store.append("a", [helpers.add_requested("a", 1)], expected_version=0)
        bad: list[ev.Event] = [ev.DelegateAdded(index=0, result={}), ev.DelCompleted()]  # held
        good = store.append("b", [helpers.add_requested("b")], expected_version=0)
        outcome = await asyncio.gather(
            store.append("a", bad, expected_version=1), good, return_exceptions=True
        )
        assert isinstance(outcome[0], st.InvalidTransitionError)
        assert not isinstance(outcome[1], BaseException)
        with pytest.raises(st.InvalidTransitionError):
            await store.append("fresh", [ev.DelCompleted()], expected_version=0)
        assert store.state.attachments["a"].version == 1
        assert await store.stream_head("a") == 1
    assert helpers.rows(db, "SELECT stream, version, kind FROM events ORDER BY seq") == [
        ("a", 1, "AddRequested"),
        ("b", 1, "AddRequested"),
    ]


async def test_ended_streams_keep_their_head_and_can_start_again(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    async with await recorder.EventStore.open(db) as store:
        await store.append("a", helpers.attach_events("a", 5), expected_version=0)
        await store.append("a", helpers.detach_events(), expected_version=4)
        assert "a" not in store.state.attachments
        assert await store.stream_head("a") == 8
        with pytest.raises(errors.ConcurrencyError):
            await store.append("a", [helpers.add_requested("a")], expected_version=0)
        (rec,) = await store.append("a", [helpers.add_requested("a")], expected_version=8)
        assert rec.version == 9


async def test_snapshots_every_n_events_and_start_up_from_snapshot_plus_tail(
    tmp_path: Path,
) -> None:
    db = tmp_path / "events.db"
    async with await recorder.EventStore.open(db, snapshot_every=10) as store:
        for i in range(12):
            await store.append(f"s{i}", helpers.attach_events(f"p{i}", i), expected_version=0)
        expected = store.state
    snapshots = helpers.rows(db, "SELECT seq FROM snapshots ORDER BY seq")
    assert [s for (s,) in snapshots] == [12, 24, 36, 48]  # every append crossing 10 events
    async with await reader.EventLog.open(db) as log:
        loaded = await replay.load(log)
        assert loaded.snapshot_seq == 48
        assert loaded.tail == 0
        assert loaded.state == expected == await replay.rebuild(log)
    async with await recorder.EventStore.open(db, snapshot_every=10) as store:
        assert store.state == expected


async def test_close_drains_queued_appends(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    store = await recorder.EventStore.open(db)
    tasks = [
        asyncio.create_task(store.append(f"q{i}", [helpers.add_requested("q")], expected_version=0))
        for i in range(50)
    ]
    await asyncio.sleep(0)  # every task has queued its append
    await store.close()
    assert all(t.done() and not t.exception() for t in tasks)
    assert helpers.rows(db, "SELECT count(*) FROM events") == [(50,)]
    with pytest.raises(errors.StoreClosedError):
        await store.append("late", [helpers.add_requested("late")], expected_version=0)


async def test_read_filters_and_chunks(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    async with await recorder.EventStore.open(db) as store:
        await store.append("a", helpers.attach_events("a", 1), expected_version=0)
        boundary = time.time()
        await asyncio.sleep(0.01)
        await store.append("b", helpers.attach_events("b", 2), expected_version=0)
        everything = [r async for r in store.read()]
        assert [r.seq for r in everything] == list(range(1, 9))
        assert [r.seq for r in [r async for r in store.read(after_seq=6)]] == [7, 8]
        assert {r.stream for r in [r async for r in store.read(stream="b")]} == {"b"}
        assert {r.stream for r in [r async for r in store.read(since=boundary)]} == {"b"}
        parts = [len(p) async for p in store.log.chunks(chunk=3)]
        assert parts == [3, 3, 2]
        assert everything[1].event == helpers.attach_events("a", 1)[1]
