"""`genie migrate|events|state|replay`: the operator's and auditor's view of the event log.

Everything here except `migrate` opens the file read-only (`mode=ro`): auditing can never
create, migrate or change a log.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

from genie.audit import render, timeline, verify
from genie.domain import events as ev
from genie.store import errors, migrations, reader, replay

DEFAULT_DB: Final = Path("/var/lib/genie/events.db")
EXIT_MISMATCH: Final = 1
EXIT_ERROR: Final = 2


def register(subparsers: Any) -> None:
    def add(name: str, helptext: str, func: Callable[[argparse.Namespace], int]) -> Any:
        parser = subparsers.add_parser(name, help=helptext, description=helptext)
        parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="event log file")
        parser.set_defaults(func=func)
        return parser

    add("migrate", "create the event log or bring its schema up to date", _migrate)
    events = add("events", "every attach/detach in the log: time, pod, network, IPs", _events)
    events.add_argument("--container", help="container ID (or a prefix of it)")
    events.add_argument("--pod", metavar="NS/NAME", help="only this pod's sandboxes")
    events.add_argument("--since", metavar="ISO8601", help="only events at or after this time")
    events.add_argument("--json", action="store_true", help="JSON lines")
    state = add("state", "current attachments, as the agent sees them after a restart", _state)
    state.add_argument("--json", action="store_true", help="one JSON document")
    state.add_argument("--full", action="store_true", help="fold from event 1, ignore snapshots")
    replay_cmd = add("replay", "rebuild the state from event 1", _replay)
    replay_cmd.add_argument(
        "--verify", action="store_true", help="compare with every snapshot; exit 1 on a mismatch"
    )


def _fail(message: str) -> int:
    print(f"genie: {message}", file=sys.stderr)
    return EXIT_ERROR


def _guarded(work: Callable[[], int]) -> int:
    try:
        return work()
    except (errors.StoreError, ValueError) as exc:
        return _fail(str(exc))
    except BrokenPipeError:  # `genie events | head`
        sys.stderr.close()
        return 0


def _run(coro: Callable[[], Coroutine[Any, Any, int]]) -> int:
    return _guarded(lambda: asyncio.run(coro()))


def _migrate(args: argparse.Namespace) -> int:
    def work() -> int:
        start, end = migrations.migrate(args.db)
        if start == end:
            print(f"{args.db}: schema version {end}, up to date")
        else:
            print(f"{args.db}: schema version {start} -> {end}")
        return 0

    return _guarded(work)


def _pod_filter(text: str | None) -> str | None:
    if text is None:
        return None
    namespace, _, name = text.partition("/")
    if not namespace or not name:
        raise ValueError(f"--pod {text!r} is not NAMESPACE/NAME")
    return text


def _events(args: argparse.Namespace) -> int:
    async def work() -> int:
        since = render.parse_since(args.since) if args.since is not None else None
        pod = _pod_filter(args.pod)
        async with await reader.EventLog.open(args.db) as log:
            context = timeline.Timeline()
            table = None if args.json else render.Table(sys.stdout, render.EVENT_HEADERS)
            async for rec in log.read(stream_prefix=args.container, since=since):
                if context.needs_context(rec):
                    await _backfill(log, context, rec)
                row = context.observe(rec)
                if pod is not None and row.pod != pod:
                    continue
                if table is None:
                    print(render.event_json(row))
                else:
                    table.add(render.event_cells(row))
            if table is not None:
                table.flush()
        return 0

    return _run(work)


async def _backfill(log: reader.EventLog, context: timeline.Timeline, rec: ev.Recorded) -> None:
    """Feed the stream's events since its last AddRequested (skipped by --since)."""
    start = await log.last_of_kind(rec.stream, kind=ev.AddRequested.kind, before_seq=rec.seq)
    if start is None:
        return
    async for part in log.chunks(after_seq=start.seq - 1, until_seq=rec.seq - 1, stream=rec.stream):
        for earlier in part:
            context.observe(earlier)


def _state(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with await reader.EventLog.open(args.db) as log:
            if args.full:
                state = await replay.rebuild(log)
            else:
                state = (await replay.load(log)).state
        if args.json:
            print(render.state_json(state))
        else:
            render.state_table(sys.stdout, state)
        return 0

    return _run(work)


def _replay(args: argparse.Namespace) -> int:
    async def work() -> int:
        started = time.perf_counter()
        async with await reader.EventLog.open(args.db) as log:
            if not args.verify:
                state = await replay.rebuild(log)
                print(
                    f"replayed to seq {state.last_seq}: {len(state.attachments)} live"
                    f" attachments ({time.perf_counter() - started:.2f} s)"
                )
                return 0
            outcome = await verify.verify(log)
        if outcome.difference:
            print(f"genie: replay mismatch: {outcome.difference}", file=sys.stderr)
            return EXIT_MISMATCH
        print(
            f"replay verified: {outcome.events} events, {outcome.snapshots} snapshots match,"
            f" {len(outcome.state.attachments)} live attachments at seq {outcome.state.last_seq}"
            f" ({time.perf_counter() - started:.2f} s)"
        )
        return 0

    return _run(work)
