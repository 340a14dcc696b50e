"""Child process of the store benchmark: one replay or start-up, measured in a fresh process.

`python -m bench.store_probe replay|startup DB` prints one JSON line; the parent reads this
process's peak RSS from os.wait4, so nothing of the parent's (or the generator's) counts.
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


def main(argv: list[str]) -> None:
    what, db = argv[0], Path(argv[1])
    probe = {"replay": _replay, "startup": _startup}[what]
    print(json.dumps(asyncio.run(probe(db))))


if __name__ == "__main__":
    main(sys.argv[1:])
