"""A writer for the crash test: appends marked multi-event batches until it is SIGKILLed.

Each append after a stream's AddRequested is n AnnotationPublished events carrying
{"append": id, "part": i, "of": n}, so a reader can tell a whole append from a torn one.
After each append returns (durably committed) it prints `committed <id>` and flushes.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from genie.domain import events as ev
from genie.store import recorder
from tests.store import helpers


async def _worker(store: recorder.EventStore, *, tag: str, worker: int, rng: random.Random) -> None:
    serial = 0
    while True:
        stream = f"{tag}-w{worker}-s{serial}"
        serial += 1
        (rec,) = await store.append(stream, [helpers.add_requested(stream)], expected_version=0)
        version = rec.version
        for _ in range(rng.randint(3, 10)):
            append_id = f"{stream}-v{version}"
            n = rng.randint(2, 8)
            batch = [
                ev.AnnotationPublished(
                    annotations={"append": append_id, "part": str(i), "of": str(n)}
                )
                for i in range(1, n + 1)
            ]
            records = await store.append(stream, batch, expected_version=version)
            version = records[-1].version
            sys.stdout.write(f"committed {append_id}\n")
            sys.stdout.flush()


async def main(db: Path, tag: str) -> None:
    rng = random.Random(7)
    async with await recorder.EventStore.open(db, snapshot_every=97) as store:
        await asyncio.gather(*(_worker(store, tag=tag, worker=w, rng=rng) for w in range(16)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
