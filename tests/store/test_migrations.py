"""Schema migrations and refusing files genie must not touch (newer, foreign, corrupt)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from genie.store import errors, migrations, reader, recorder
from tests.store import helpers

pytestmark = pytest.mark.anyio


def _schema(db: Path) -> list[tuple[str, str, str]]:
    return helpers.rows(
        db, "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
    )


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    shipped = migrations.available()
    assert [m.number for m in shipped] == list(range(1, len(shipped) + 1))
    assert shipped[0].name == "0001_events.sql"
    repo_dir = Path(__file__).parents[2] / "migrations"
    assert sorted(p.name for p in repo_dir.glob("*.sql")) == [m.name for m in shipped]


def test_migrate_from_nothing_creates_the_file(tmp_path: Path) -> None:
    db = tmp_path / "sub-missing" / "events.db"
    db.parent.mkdir()
    assert migrations.migrate(db) == (0, migrations.latest())
    assert helpers.rows(db, "PRAGMA user_version") == [(migrations.latest(),)]
    assert helpers.rows(db, "PRAGMA journal_mode") == [("wal",)]
    names = {name for _, name, _ in _schema(db)}
    assert {"events", "snapshots", "events_no_update", "events_no_delete"} <= names
    assert migrations.migrate(db) == (migrations.latest(), migrations.latest())


@pytest.mark.parametrize("start", range(migrations.latest()))
def test_migrate_from_each_earlier_version(tmp_path: Path, start: int) -> None:
    fresh = tmp_path / "fresh.db"
    migrations.migrate(fresh)
    old = tmp_path / "old.db"
    if start == 0:  # an SQLite file at user_version 0 with no tables
        sqlite3.connect(old).close()
        helpers.execute(old, "PRAGMA user_version = 0")
        assert old.exists()
    else:
        migrations.migrate(old, target=start)
        assert helpers.rows(old, "PRAGMA user_version") == [(start,)]
    assert migrations.migrate(old) == (start, migrations.latest())
    assert _schema(old) == _schema(fresh)


def test_schema_newer_than_code_is_refused_and_untouched(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    migrations.migrate(db)
    helpers.execute(db, f"PRAGMA user_version = {migrations.latest() + 1}")
    helpers.execute(db, "PRAGMA journal_mode = DELETE")
    before = db.read_bytes()
    with pytest.raises(errors.SchemaTooNewError, match="newer than"):
        migrations.migrate(db)
    assert db.read_bytes() == before
    assert not (tmp_path / "events.db-wal").exists()


async def test_store_and_log_refuse_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    migrations.migrate(db)
    helpers.execute(db, f"PRAGMA user_version = {migrations.latest() + 1}")
    with pytest.raises(errors.SchemaTooNewError):
        await recorder.EventStore.open(db)
    with pytest.raises(errors.SchemaTooNewError):
        await recorder.EventStore.open(db, migrate=False)
    with pytest.raises(errors.SchemaTooNewError):
        await reader.EventLog.open(db)


@pytest.mark.parametrize(
    "content",
    [b"this is not a database, just text\n" * 200, b"SQLite format 3\x00" + b"\xff" * 5000],
    ids=["text", "damaged-header"],
)
async def test_corrupt_file_is_refused_and_untouched(tmp_path: Path, content: bytes) -> None:
    db = tmp_path / "events.db"
    db.write_bytes(content)
    with pytest.raises(errors.CorruptDatabaseError):
        migrations.migrate(db)
    with pytest.raises(errors.CorruptDatabaseError):
        await recorder.EventStore.open(db)
    with pytest.raises(errors.CorruptDatabaseError):
        await reader.EventLog.open(db)
    assert db.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["events.db"]


def test_someone_elses_sqlite_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    helpers.execute(db, "CREATE TABLE customers (id INTEGER)")
    before = db.read_bytes()
    with pytest.raises(errors.CorruptDatabaseError, match="did not create"):
        migrations.migrate(db)
    assert db.read_bytes() == before


async def test_missing_file_is_an_error_for_readers_and_unmigrated_opens(tmp_path: Path) -> None:
    db = tmp_path / "nothing.db"
    with pytest.raises(errors.MissingDatabaseError):
        await reader.EventLog.open(db)
    with pytest.raises(errors.MissingDatabaseError):
        await recorder.EventStore.open(db, migrate=False)
    assert not db.exists()


async def test_unmigrated_file_needs_migrate(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    sqlite3.connect(db).close()
    db.touch()
    with pytest.raises(errors.SchemaTooOldError, match="genie migrate"):
        await recorder.EventStore.open(db, migrate=False)


async def test_unknown_event_kind_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    async with await recorder.EventStore.open(db) as store:
        await store.append("a", [helpers.add_requested("a")], expected_version=0)
    helpers.execute(
        db,
        "INSERT INTO events (seq, stream, version, kind, recorded_at, payload)"
        " VALUES (2, 'a', 2, 'Teleported', 1.0, '{}')",
    )
    with pytest.raises(errors.UnknownEventKindError, match="Teleported"):
        await recorder.EventStore.open(db)
    async with await reader.EventLog.open(db) as log:
        with pytest.raises(errors.UnknownEventKindError):
            _ = [r async for r in log.read()]
    assert helpers.rows(db, "SELECT count(*) FROM events") == [(2,)]


async def test_undecodable_payload_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    migrations.migrate(db)
    helpers.execute(
        db,
        "INSERT INTO events (seq, stream, version, kind, recorded_at, payload)"
        " VALUES (1, 'a', 1, 'AddRequested', 1.0, '{\"pod\": 5}')",
    )
    with pytest.raises(errors.UndecodableEventError):
        await recorder.EventStore.open(db)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE events SET kind = 'DelCompleted'",
        "DELETE FROM events",
        "UPDATE snapshots SET state = '{}'",
        "DELETE FROM snapshots",
    ],
)
async def test_log_and_snapshots_are_append_only(tmp_path: Path, sql: str) -> None:
    db = tmp_path / "events.db"
    async with await recorder.EventStore.open(db, snapshot_every=1) as store:
        await store.append("a", [helpers.add_requested("a")], expected_version=0)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        helpers.execute(db, sql)
    assert helpers.rows(db, "SELECT count(*) FROM events") == [(1,)]
    assert helpers.rows(db, "SELECT count(*) FROM snapshots") == [(1,)]
