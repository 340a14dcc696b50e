"""Store benchmark: durable group-commit throughput, full replay and start-up of a big log.

Targets: >= 20,000 events/s appended durably by 100 concurrent appenders; a full replay of
1,000,000 events in <= 10 s and <= 200 MiB peak RSS; start-up (snapshot + tail) <= 1 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import eventgen, report
from genie.store import recorder

NAME = "store"
REPO = Path(__file__).resolve().parent.parent


async def _appenders(db: Path, *, concurrency: int, total: int) -> float:
    """events/s for `total` single-event appends by `concurrency` tasks, each durable."""
    rng = random.Random(concurrency)
    work = [eventgen.lifecycle(i, rng) for i in range(total // 9 + 1)]
    streams = [f"{rng.getrandbits(128):032x}{i:032x}" for i in range(len(work))]
    todo = iter(zip(streams, work, strict=True))
    done = 0

    async def appender(store: recorder.EventStore) -> None:
        nonlocal done
        for stream, events in todo:
            version = 0
            for event in events:
                if done >= total:
                    return
                records = await store.append(stream, [event], expected_version=version)
                version = records[-1].version
                done += 1

    async with await recorder.EventStore.open(db) as store:
        started = time.perf_counter()
        await asyncio.gather(*(appender(store) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return done / elapsed


async def _extend(db: Path, events: int) -> None:
    """Append about `events` more events as whole life cycles (100 appenders), no snapshot."""
    rng = random.Random(events)
    per_pod = len(eventgen.lifecycle(0, rng))
    todo = iter(
        (f"{rng.getrandbits(128):032x}{i:032x}", eventgen.lifecycle(i, rng))
        for i in range(events // per_pod)
    )

    async def appender(store: recorder.EventStore) -> None:
        for stream, lifecycle in todo:
            await store.append(stream, lifecycle, expected_version=0)

    async with await recorder.EventStore.open(db, snapshot_every=eventgen.SNAPSHOT_EVERY) as store:
        await asyncio.gather(*(appender(store) for _ in range(100)))


def _child(what: str, db: Path) -> tuple[dict[str, Any], float]:
    """Run bench.store_probe in a fresh process: its JSON and its own peak RSS (MiB)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.store_probe", what, str(db)],
        stdout=subprocess.PIPE,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd=REPO,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result, float(result["peak_rss_mib"])


def _generate(db: Path, events: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bench.eventgen", str(db), str(events)],
        check=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd=REPO,
    )
    return time.perf_counter() - started


def run(*, quick: bool, workdir: Path) -> list[report.Measurement]:
    results: list[report.Measurement] = []
    sizes = {1: 2_000, 10: 10_000, 100: 30_000} if quick else {1: 5_000, 10: 30_000, 100: 100_000}
    for concurrency, total in sizes.items():
        rate = asyncio.run(
            _appenders(workdir / f"append-{concurrency}.db", concurrency=concurrency, total=total)
        )
        results.append(
            report.Measurement(
                NAME,
                f"append, {concurrency} appenders",
                rate,
                "events/s",
                target=">= 20000" if concurrency == 100 else "",
                detail=f"{total} single-event appends, WAL synchronous=FULL",
            )
        )
        print(f"   append x{concurrency}: {rate:,.0f} events/s", file=sys.stderr, flush=True)

    events = 100_000 if quick else 1_000_000
    log = workdir / f"log-{events}.db"
    took = _generate(log, events)
    size_mib = log.stat().st_size / 2**20
    print(f"   generated {events} events in {took:.1f} s", file=sys.stderr, flush=True)

    replayed, rss = _child("replay", log)
    if replayed["events"] != events:
        raise RuntimeError(f"replay folded {replayed['events']} events, expected {events}")
    scale = f"{events:,} events, {size_mib:.0f} MiB file, {replayed['live']} live"
    results.append(
        report.Measurement(
            NAME,
            "full replay",
            replayed["seconds"],
            "s",
            target="<= 10" if not quick else "<= 1",
            detail=scale,
        )
    )
    results.append(
        report.Measurement(
            NAME, "full replay peak RSS", rss, "MiB", target="<= 200", detail="fresh process"
        )
    )

    results.append(_startup(log, "start-up (open: snapshot + tail)"))
    # the worst case: the longest tail the agent leaves behind its last snapshot
    asyncio.run(_extend(log, eventgen.SNAPSHOT_EVERY - 1))
    results.append(_startup(log, "start-up, longest tail"))
    return results


def _startup(log: Path, label: str) -> report.Measurement:
    runs = [_child("startup", log) for _ in range(3)]
    seconds = [r["seconds"] for r, _ in runs]
    first = runs[0][0]
    return report.Measurement(
        NAME,
        label,
        statistics.median(seconds),
        "s",
        target="<= 1",
        detail=(
            f"median of 3, {first['events']:,} events, snapshot at {first['snapshot_seq']:,},"
            f" tail {first['tail']:,}, peak RSS {max(r for _, r in runs):.0f} MiB"
        ),
    )
