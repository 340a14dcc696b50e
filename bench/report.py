"""Benchmark results: one Measurement per number, printed as a table and written as JSON."""

from __future__ import annotations

import dataclasses
import json
import operator
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

_OPS: Final[dict[str, Callable[[float, float], bool]]] = {
    ">=": operator.ge,
    "<=": operator.le,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Measurement:
    bench: str  # the registry name, e.g. "store"
    name: str  # what was measured, e.g. "append, 100 appenders"
    value: float
    unit: str
    target: str = ""  # e.g. ">= 20000" (empty: reported, not judged)
    detail: str = ""

    @property
    def ok(self) -> bool | None:
        if not self.target:
            return None
        op, _, limit = self.target.partition(" ")
        return _OPS[op](self.value, float(limit))


def _verdict(m: Measurement) -> str:
    return {None: "", True: "ok", False: "MISSED"}[m.ok]


def print_table(results: Sequence[Measurement], out: TextIO = sys.stdout) -> None:
    rows = [("BENCH", "MEASUREMENT", "VALUE", "UNIT", "TARGET", "", "DETAIL")]
    rows += [
        (m.bench, m.name, f"{m.value:,.2f}", m.unit, m.target, _verdict(m), m.detail)
        for m in results
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            c.rjust(w) if i == 2 else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.write("  ".join(cells).rstrip() + "\n")


def write_json(path: Path, results: Sequence[Measurement], *, argv: Sequence[str]) -> None:
    body: dict[str, Any] = {
        "command": ["bench/run", *argv],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": _cpus(),
        },
        "results": [{**dataclasses.asdict(m), "ok": m.ok} for m in results],
    }
    path.write_text(json.dumps(body, indent=2) + "\n")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
