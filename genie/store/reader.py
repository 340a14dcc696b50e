"""Reading the log: events in chunks (bounded memory), stream heads and snapshots.

`EventLog` is the read side shared by the agent's store (its own connection beside the writer)
and the audit CLI (a `mode=ro` connection that can never create, migrate or write the file).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import aiosqlite

from genie.domain import codec
from genie.domain import events as ev
from genie.domain import state as st
from genie.store import errors, migrations, sqlite

CHUNK: Final = 8192  # rows per query: few thread hops, some 10 MiB at most in memory
_COLUMNS: Final = "seq, stream, version, kind, recorded_at, payload"
MAX_PARAMS: Final = 500  # host parameters per IN (...) list
_STREAM_END: Final = "\U0010ffff"


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int
    fold_version: int
    created_at: float
    state: st.NodeState


def decode_rows(path: Path, rows: Sequence[Any]) -> list[ev.Recorded]:
    """Rows of `_COLUMNS` as Recorded events; unknown or damaged payloads are store errors."""
    try:
        return codec.decode_records(rows)
    except codec.UnknownEventKindError as exc:
        raise errors.UnknownEventKindError(f"{path}: {exc}") from exc
    except codec.UndecodableEventError as exc:
        raise errors.UndecodableEventError(f"{path}: {exc}") from exc


class EventLog:
    """Read access to one log file."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> Self:
        """Read-only: a missing file, a foreign file or a schema other than this genie's fails."""
        conn = await sqlite.connect(path, readonly=True)
        log = cls(conn, path)
        try:
            found = await log._fetch_int("PRAGMA user_version")
            known = migrations.latest()
            if found > known:
                raise errors.SchemaTooNewError(path, found, known)
            if found < known:
                raise errors.SchemaTooOldError(path, found, known)
        except BaseException:
            await conn.close()
            raise
        return log

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with sqlite.translated(self.path):
            return list(await self._conn.execute_fetchall(sql, params))

    async def _fetch_int(self, sql: str, params: Sequence[Any] = ()) -> int:
        rows = await self._fetch(sql, params)
        return int(rows[0][0] or 0) if rows else 0

    async def chunks(
        self,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        stream: str | None = None,
        stream_prefix: str | None = None,
        since: float | None = None,
        chunk: int = CHUNK,
    ) -> AsyncIterator[list[ev.Recorded]]:
        """Events in global order, `chunk` at a time (keyset pagination: no long read txn)."""
        where = ["seq > ?"]
        extra: list[Any] = []
        if until_seq is not None:
            where.append("seq <= ?")
            extra.append(until_seq)
        if stream is not None:
            where.append("stream = ?")
            extra.append(stream)
        if stream_prefix is not None:
            where.append("stream >= ? AND stream < ?")
            extra += [stream_prefix, stream_prefix + _STREAM_END]
        if since is not None:
            where.append("recorded_at >= ?")
            extra.append(since)
        sql = f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"  # noqa: S608
        last = after_seq
        while True:
            rows = await self._fetch(sql, [last, *extra, chunk])
            if rows:
                yield decode_rows(self.path, rows)
            if len(rows) < chunk:
                return
            last = rows[-1][0]

    async def read(
        self,
        *,
        after_seq: int = 0,
        stream: str | None = None,
        stream_prefix: str | None = None,
        since: float | None = None,
    ) -> AsyncIterator[ev.Recorded]:
        """Events one by one in global order, fetched in chunks."""
        async for part in self.chunks(
            after_seq=after_seq, stream=stream, stream_prefix=stream_prefix, since=since
        ):
            for rec in part:
                yield rec

    async def last_seq(self) -> int:
        return await self._fetch_int("SELECT max(seq) FROM events")

    async def count(self) -> int:
        return await self._fetch_int("SELECT count(*) FROM events")

    async def stream_heads(self, streams: Collection[str]) -> dict[str, int]:
        """The last version of each stream (0 for one never seen), in few queries."""
        heads = dict.fromkeys(streams, 0)
        names = list(heads)
        for start in range(0, len(names), MAX_PARAMS):
            part = names[start : start + MAX_PARAMS]
            marks = ",".join("?" * len(part))
            sql = (
                f"SELECT stream, max(version) FROM events WHERE stream IN ({marks})"  # noqa: S608
                " GROUP BY stream"
            )
            for name, version in await self._fetch(sql, part):
                heads[name] = int(version)
        return heads

    async def stream_head(self, stream: str) -> int:
        return (await self.stream_heads([stream]))[stream]

    async def last_of_kind(self, stream: str, *, kind: str, before_seq: int) -> ev.Recorded | None:
        """The stream's latest `kind` event before `before_seq` (context for audit output)."""
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND kind = ? AND seq < ?"  # noqa: S608
            " ORDER BY seq DESC LIMIT 1",
            [stream, kind, before_seq],
        )
        return decode_rows(self.path, rows)[0] if rows else None

    async def snapshot_seqs(self, *, fold_version: int) -> list[int]:
        rows = await self._fetch(
            "SELECT seq FROM snapshots WHERE fold_version = ? ORDER BY seq", [fold_version]
        )
        return [int(r[0]) for r in rows]

    async def snapshot(self, *, fold_version: int, at_seq: int | None = None) -> Snapshot | None:
        """The snapshot at `at_seq`, or the latest one, made by fold `fold_version`."""
        sql = "SELECT seq, fold_version, created_at, state FROM snapshots WHERE fold_version = ?"
        params: list[Any] = [fold_version]
        if at_seq is not None:
            sql += " AND seq = ?"
            params.append(at_seq)
        rows = await self._fetch(sql + " ORDER BY seq DESC LIMIT 1", params)
        if not rows:
            return None
        seq, version, created_at, payload = rows[0]
        try:
            state = codec.decode_state(payload)
        except codec.UndecodableEventError as exc:
            raise errors.UndecodableEventError(f"{self.path}: snapshot {seq}: {exc}") from exc
        if state.last_seq != seq:
            raise errors.UndecodableEventError(
                f"{self.path}: snapshot {seq} claims to end at seq {state.last_seq}"
            )
        return Snapshot(int(seq), int(version), float(created_at), state)
