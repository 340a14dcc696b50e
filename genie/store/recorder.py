"""The agent's event store: one writer task that group-commits appends, and the live state.

Every append is validated against the fold and the stream's head before it is written, then
waits until the transaction holding it is durably committed (WAL, synchronous=FULL). Appends
that arrive while a commit is in flight are written together in the next transaction, so
throughput grows with concurrency while each caller still gets its own durable answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import anyio.to_thread
import msgspec

from genie.domain import codec
from genie.domain import events as ev
from genie.domain import state as st
from genie.store import errors, migrations, reader, replay, sqlite

MAX_BATCH_APPENDS: Final = 2000
# expected_version for "this stream has no live attachment" (new, or ended earlier): what an
# ADD checks, without a separate look-up of the stream's head before appending.
NOT_LIVE: Final = -1
_INSERT: Final = (
    "INSERT INTO events (seq, stream, version, kind, recorded_at, payload)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_SNAPSHOT: Final = (
    "INSERT INTO snapshots (seq, fold_version, created_at, state) VALUES (?, ?, ?, ?)"
)

Row = tuple[int, str, int, str, float, str]
T = TypeVar("T")


@dataclasses.dataclass(slots=True)
class _Append:
    stream: str
    events: tuple[ev.Event, ...]
    expected_version: int
    future: asyncio.Future[list[ev.Recorded]]


@dataclasses.dataclass(slots=True)
class _Batch:
    """What one transaction will write, built before anything touches the file."""

    rows: list[Row] = dataclasses.field(default_factory=list)
    changed: dict[str, st.Attachment | None] = dataclasses.field(default_factory=dict)
    heads: dict[str, int] = dataclasses.field(default_factory=dict)
    outcomes: list[tuple[_Append, list[ev.Recorded] | Exception]] = dataclasses.field(
        default_factory=list
    )


class EventStore:
    """Append-only attachment log plus its projection. Open with `await EventStore.open(path)`."""

    def __init__(
        self,
        *,
        path: Path,
        writer: sqlite3.Connection,
        executor: concurrent.futures.ThreadPoolExecutor,
        log: reader.EventLog,
        loaded: replay.Loaded,
        snapshot_every: int,
    ) -> None:
        self.path = path
        self._writer = writer  # used only in `executor`'s one thread
        self._executor = executor
        self._log = log
        self._live: dict[str, st.Attachment] = dict(loaded.state.attachments)
        self._last_seq = loaded.state.last_seq
        self._cached: st.NodeState | None = loaded.state
        self._since_snapshot = loaded.tail
        self._snapshot_every = snapshot_every
        self._queue: asyncio.Queue[_Append | None] = asyncio.Queue()
        self._closed = False
        self._task = asyncio.create_task(self._run(), name=f"genie-store-writer {path}")

    @classmethod
    async def open(
        cls, path: Path, *, snapshot_every: int = 10_000, migrate: bool = True
    ) -> EventStore:
        """Open (and with `migrate`, create or migrate) the log, and load the state from it."""
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be at least 1")
        if migrate:
            await anyio.to_thread.run_sync(migrations.migrate, path)
        log = await reader.EventLog.open(path)  # checks the schema before the writer opens
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="genie-store")
        loop = asyncio.get_running_loop()
        try:
            writer = await loop.run_in_executor(executor, _connect_writer, path)
            try:
                loaded = await replay.load(log)
            except BaseException:
                await loop.run_in_executor(executor, writer.close)
                raise
        except BaseException:
            executor.shutdown(wait=False)
            await log.close()
            raise
        return cls(
            path=path,
            writer=writer,
            executor=executor,
            log=log,
            loaded=loaded,
            snapshot_every=snapshot_every,
        )

    @property
    def log(self) -> reader.EventLog:
        """The read side (its own connection): `read`, snapshots, heads."""
        return self._log

    @property
    def state(self) -> st.NodeState:
        """The live attachments as of the last commit (a copy only when it changed)."""
        if self._cached is None:
            self._cached = st.NodeState(attachments=dict(self._live), last_seq=self._last_seq)
        return self._cached

    @property
    def live_count(self) -> int:
        """How many sandboxes have live attachments as of the last commit (no copy)."""
        return len(self._live)

    async def stream_head(self, stream: str) -> int:
        """The stream's last version: from the state when live, else from the log (0: never)."""
        att = self._live.get(stream)
        if att is not None:
            return att.version
        return await self._log.stream_head(stream)

    async def read(
        self, *, after_seq: int = 0, stream: str | None = None, since: float | None = None
    ) -> AsyncIterator[ev.Recorded]:
        """Committed events in global order, fetched in chunks (bounded memory)."""
        async for rec in self._log.read(after_seq=after_seq, stream=stream, since=since):
            yield rec

    async def append(
        self, stream: str, events: Sequence[ev.Event], *, expected_version: int
    ) -> list[ev.Recorded]:
        """Write `events` after version `expected_version` of `stream`; return once durable.

        Raises ConcurrencyError when the stream is elsewhere and InvalidTransitionError when
        the fold rejects an event; in both cases nothing of this append is written. If the
        caller is cancelled before its batch starts, nothing is written either.
        """
        if self._closed:
            raise errors.StoreClosedError
        if not events:
            return []
        future: asyncio.Future[list[ev.Recorded]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Append(stream, tuple(events), expected_version, future))
        return await future

    async def close(self) -> None:
        """Write everything already queued, then close the connections."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)
        try:
            await asyncio.shield(self._task)
        finally:
            try:
                await self._in_writer(self._writer.close)
            finally:
                self._executor.shutdown(wait=False)
                await self._log.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the writer task ------------------------------------------------------------------

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` in the writer thread: one thread hop per call, whatever it does."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(fn, *args)
        )

    async def _run(self) -> None:
        stop = False
        while not stop:
            item = await self._queue.get()
            batch: list[_Append] = []
            while True:
                if item is None:
                    stop = True
                    break
                batch.append(item)
                if len(batch) >= MAX_BATCH_APPENDS or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._commit(batch)

    async def _commit(self, appends: list[_Append]) -> None:
        appends = [a for a in appends if not a.future.done()]  # cancelled callers
        if not appends:
            return
        try:
            batch = await self._plan(appends)
            if batch.rows:
                await self._write(batch)
        except Exception as exc:
            for item in appends:
                if not item.future.done():
                    failure = errors.StoreError(f"{self.path}: commit failed: {exc}")
                    failure.__cause__ = exc
                    item.future.set_exception(failure)
            return
        for name, att in batch.changed.items():
            if att is None:
                self._live.pop(name, None)
            else:
                self._live[name] = att
        if batch.rows:
            self._last_seq = batch.rows[-1][0]
            self._cached = None
        for item, outcome in batch.outcomes:
            if item.future.done():
                continue
            if isinstance(outcome, Exception):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)

    async def _plan(self, appends: list[_Append]) -> _Batch:
        batch = _Batch()
        unknown = {a.stream for a in appends if a.stream not in self._live}
        if unknown:
            batch.heads.update(
                await self._in_writer(_stream_heads, self._writer, self.path, unknown)
            )
        now = time.time()
        seq = self._last_seq
        for item in appends:
            name = item.stream
            head = batch.heads[name] if name in batch.heads else self._live[name].version
            if item.expected_version == NOT_LIVE:
                live = batch.changed[name] if name in batch.changed else self._live.get(name)
                stale = live is not None
            else:
                stale = item.expected_version != head
            if stale:
                error = errors.ConcurrencyError(name, expected=item.expected_version, actual=head)
                batch.outcomes.append((item, error))
                continue
            att = batch.changed[name] if name in batch.changed else self._live.get(name)
            try:
                records, rows, att = _validate(item, att, seq=seq, version=head, now=now)
            except (st.InvalidTransitionError, errors.StoreError) as exc:
                batch.outcomes.append((item, exc))
                continue
            seq += len(records)
            batch.heads[name] = head + len(records)
            batch.changed[name] = att
            batch.rows += rows
            batch.outcomes.append((item, records))
        return batch

    async def _write(self, batch: _Batch) -> None:
        snapshot = self._snapshot_row(batch)
        await self._in_writer(
            _write_rows,
            self._writer,
            self.path,
            batch.rows,
            snapshot,
            self._last_seq,
        )
        if snapshot is not None:
            self._since_snapshot = 0
        else:
            self._since_snapshot += len(batch.rows)

    def _snapshot_row(self, batch: _Batch) -> tuple[int, int, float, bytes] | None:
        if self._since_snapshot + len(batch.rows) < self._snapshot_every:
            return None
        live = dict(self._live)
        for name, att in batch.changed.items():
            if att is None:
                live.pop(name, None)
            else:
                live[name] = att
        last_seq = batch.rows[-1][0]
        state = st.NodeState(attachments=live, last_seq=last_seq)
        return (last_seq, replay.FOLD_VERSION, time.time(), codec.encode_state(state))


def _validate(
    item: _Append, att: st.Attachment | None, *, seq: int, version: int, now: float
) -> tuple[list[ev.Recorded], list[Row], st.Attachment | None]:
    """The append's records and rows, and the attachment after them; raises if invalid."""
    records: list[ev.Recorded] = []
    rows: list[Row] = []
    for event in item.events:
        kind = getattr(event, "kind", None)
        if not isinstance(kind, str) or ev.EVENT_TYPES.get(kind) is not type(event):
            raise errors.UnknownEventKindError(f"not a genie event: {event!r}")
        seq += 1
        version += 1
        rec = ev.Recorded(seq, item.stream, version, now, event)
        att = st.evolve(att, rec)
        try:
            payload = codec.encode_event(event).decode()
        except (TypeError, msgspec.EncodeError) as exc:
            raise errors.StoreError(
                f"{kind} of container {item.stream} does not encode: {exc}"
            ) from exc
        records.append(rec)
        rows.append((seq, item.stream, version, kind, now, payload))
    return records, rows, att


def _connect_writer(path: Path) -> sqlite3.Connection:
    with sqlite.translated(path):
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            for pragma in sqlite.WRITER_PRAGMAS:
                conn.execute(pragma)
        except BaseException:
            conn.close()
            raise
    return conn


def _stream_heads(conn: sqlite3.Connection, path: Path, streams: set[str]) -> dict[str, int]:
    """Writer thread: the last version of each stream (0: never seen)."""
    heads = dict.fromkeys(streams, 0)
    names = list(heads)
    with sqlite.translated(path):
        for start in range(0, len(names), reader.MAX_PARAMS):
            part = names[start : start + reader.MAX_PARAMS]
            marks = ",".join("?" * len(part))
            sql = (
                f"SELECT stream, max(version) FROM events WHERE stream IN ({marks})"  # noqa: S608
                " GROUP BY stream"
            )
            for name, version in conn.execute(sql, part):
                heads[name] = int(version)
    return heads


def _write_rows(
    conn: sqlite3.Connection,
    path: Path,
    rows: list[Row],
    snapshot: tuple[int, int, float, bytes] | None,
    last_seq: int,
) -> None:
    """Writer thread: one transaction, committed (and fsynced) before it returns."""
    with sqlite.translated(path):
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
            if found != last_seq:
                raise errors.StoreError(
                    f"{path}: another process wrote to the log (seq {found}, expected {last_seq})"
                )
            conn.executemany(_INSERT, rows)
            if snapshot is not None:
                conn.execute(_INSERT_SNAPSHOT, snapshot)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
