"""SIGKILL a writer mid-run: the log holds whole appends only, and replays cleanly."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from genie.store import recorder
from tests.store import helpers

REPO = Path(__file__).parents[2]


async def _reopened_last_seq(db: Path) -> int:
    async with await recorder.EventStore.open(db) as store:  # loads snapshot + tail
        return store.state.last_seq


def _run_and_kill(db: Path, *, tag: str, after: int) -> set[str]:
    """Start the writer, SIGKILL it once `after` appends are committed; the committed ids."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.store.crash_writer", str(db), tag],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    committed: set[str] = set()
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while len(committed) < after and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            committed.add(line.split()[1])
        os.kill(proc.pid, signal.SIGKILL)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    committed.update(line.split()[1] for line in rest.splitlines() if line.startswith("committed"))
    assert proc.returncode == -signal.SIGKILL, err
    assert len(committed) >= after, err
    return committed


def test_sigkill_between_batches_leaves_only_whole_appends(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    committed = set()
    for round_ in range(3):  # later writers continue the killed log, then die too
        committed |= _run_and_kill(db, tag=f"r{round_}", after=800)

    per_stream: dict[str, list[tuple[int, str, str]]] = collections.defaultdict(list)
    for stream, version, kind, payload in helpers.rows(
        db, "SELECT stream, version, kind, payload FROM events ORDER BY seq"
    ):
        per_stream[stream].append((version, kind, payload))
    found: set[str] = set()
    for stream, events in per_stream.items():
        assert [v for v, _, _ in events] == list(range(1, len(events) + 1)), stream
        assert events[0][1] == "AddRequested"
        parts: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
        for _, kind, payload in events[1:]:
            assert kind == "AnnotationPublished"
            marks = json.loads(payload)["annotations"]
            parts[marks["append"]].append((int(marks["part"]), int(marks["of"])))
        for append_id, got in parts.items():
            of = got[0][1]
            assert [p for p, _ in got] == list(range(1, of + 1)), f"torn append {append_id}"
        found |= set(parts)
    assert committed <= found  # every append that returned is in the log

    assert asyncio.run(_reopened_last_seq(db)) == sum(len(e) for e in per_stream.values())
    verify = subprocess.run(
        [sys.executable, "-m", "genie.cli", "replay", "--db", str(db), "--verify"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    assert "replay verified" in verify.stdout
