"""Numbered SQL migrations applied in order, tracked with `PRAGMA user_version`.

The canonical files are `migrations/NNNN_name.sql` at the top of the repository; the package
reaches them as `genie/store/sql/` (a symlink in the source tree, copied as package data into
wheels), so an installed genie finds them through importlib.resources. Each migration runs in
one transaction together with its `user_version` bump: a crash leaves the old or the new schema.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import re
import sqlite3
from pathlib import Path
from typing import Final

from genie.store import errors, sqlite

_NAME: Final = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_MAX_SQL_BYTES: Final = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    number: int
    name: str
    sql: str


@functools.cache
def available() -> tuple[Migration, ...]:
    """Every migration shipped with this genie, numbered 1..N without gaps."""
    found: list[Migration] = []
    for entry in importlib.resources.files("genie.store").joinpath("sql").iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        sql = entry.read_bytes()[: _MAX_SQL_BYTES + 1]
        if len(sql) > _MAX_SQL_BYTES:
            raise errors.StoreError(f"migration {entry.name} is larger than {_MAX_SQL_BYTES} bytes")
        found.append(Migration(int(match.group(1)), entry.name, sql.decode()))
    found.sort(key=lambda m: m.number)
    if [m.number for m in found] != list(range(1, len(found) + 1)):
        names = ", ".join(m.name for m in found)
        raise errors.StoreError(f"migrations are not numbered 1..N without gaps: {names}")
    return tuple(found)


def latest() -> int:
    return len(available())


def user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def check_version(conn: sqlite3.Connection, path: Path, *, exact: bool) -> int:
    """The file's schema version; refuses newer ones (and older ones when `exact`)."""
    found = user_version(conn)
    known = latest()
    if found > known:
        raise errors.SchemaTooNewError(path, found, known)
    if exact and found < known:
        raise errors.SchemaTooOldError(path, found, known)
    return found


def _refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """A version-0 file with tables is someone else's database: genie does not move in."""
    row = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    if int(row[0]) != 0:
        raise errors.CorruptDatabaseError(path, "an SQLite file that genie did not create")


def migrate(path: Path, *, target: int | None = None) -> tuple[int, int]:
    """Bring `path` (created if missing) to `target` (default: latest); returns (from, to)."""
    known = latest()
    goal = known if target is None else target
    if not 0 <= goal <= known:
        raise errors.StoreError(f"no migration {goal}: this genie knows 1..{known}")
    with sqlite.translated(path):
        conn = sqlite.connect_sync(path)
        try:
            return _migrate(conn, path, goal)
        finally:
            conn.close()


def _migrate(conn: sqlite3.Connection, path: Path, goal: int) -> tuple[int, int]:
    start = check_version(conn, path, exact=False)  # reads the header: nothing touched yet
    if start == 0:
        _refuse_foreign(conn, path)
    if start >= goal:
        return start, start
    conn.execute("PRAGMA journal_mode=WAL")
    for migration in available()[start:goal]:
        script = (
            f"BEGIN IMMEDIATE;\n{migration.sql}\n"
            f"PRAGMA user_version = {migration.number};\nCOMMIT;\n"
        )
        try:
            conn.executescript(script)
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return start, goal
