"""Opening the log file the same way everywhere, and turning sqlite3 failures into store errors."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import aiosqlite
import anyio

from genie.store import errors

# WAL lets the CLI and the agent's reader run beside the writer; FULL makes each commit durable
# (the WAL is fsynced at every commit), which is what "committed before the reply" promises.
WRITER_PRAGMAS: Final = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=5000",
)
READER_PRAGMAS: Final = ("PRAGMA busy_timeout=5000",)

_CORRUPT_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def translate(path: Path, exc: sqlite3.Error) -> errors.StoreError:
    """The store error that says what went wrong with `path` in one line."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code in _CORRUPT_CODES:
        return errors.CorruptDatabaseError(path, str(exc))
    return errors.StoreError(f"{path}: {exc}")


@contextlib.contextmanager
def translated(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise translate(path, exc) from exc


def readonly_uri(path: Path) -> str:
    """`mode=ro`: SQLite never creates, migrates or writes the file through this."""
    return path.resolve().as_uri() + "?mode=ro"


def connect_sync(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        if not path.exists():
            raise errors.MissingDatabaseError(path)
        return sqlite3.connect(readonly_uri(path), uri=True, isolation_level=None)
    return sqlite3.connect(path, isolation_level=None)


async def connect(path: Path, *, readonly: bool) -> aiosqlite.Connection:
    """An aiosqlite connection in autocommit mode (transactions are explicit BEGINs)."""
    if not await anyio.Path(path).exists():
        raise errors.MissingDatabaseError(path)
    kwargs: dict[str, Any] = {"isolation_level": None}
    target: str | Path = path
    if readonly:
        target, kwargs["uri"] = readonly_uri(path), True
    with translated(path):
        conn = await aiosqlite.connect(target, **kwargs)
        try:
            for pragma in READER_PRAGMAS if readonly else WRITER_PRAGMAS:
                await conn.execute(pragma)
        except BaseException:
            await conn.close()
            raise
    return conn
