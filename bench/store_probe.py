"""Child process of the store benchmark: one replay or start-up, measured in a fresh process.

`python -m bench.store_probe replay|startup DB` prints one JSON line with this process's own
peak RSS: VmHWM of /proc/self/status, which belongs to the memory map made at exec. (ru_maxrss
from getrusage or wait4 would not do: Linux carries the pre-exec high-water mark across exec,
and subprocess forks with vfork, so a child's ru_maxrss starts at the parent's RSS.)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from genie.store import reader, recorder, replay


async def _replay(db: Path) -> dict[str, Any]:
    async with await reader.EventLog.open(db) as log:
        started = time.perf_counter()
        state = await replay.rebuild(log)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "events": state.last_seq, "live": len(state.attachments)}


async def _startup(db: Path) -> dict[str, Any]:
    started = time.perf_counter()
    store = await recorder.EventStore.open(db)
    seconds = time.perf_counter() - started
    try:
        async with await reader.EventLog.open(db) as log:
            loaded = await replay.load(log)
        return {
            "seconds": seconds,
            "events": store.state.last_seq,
            "live": len(store.state.attachments),
            "snapshot_seq": loaded.snapshot_seq,
            "tail": loaded.tail,
        }
    finally:
        await store.close()


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv: list[str]) -> None:
    what, db = argv[0], Path(argv[1])
    probe = {"replay": _replay, "startup": _startup}[what]
    result = asyncio.run(probe(db))
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
