"""`python -m bench` (via bench/run): pick benchmarks from the registry, run, report.

To add a benchmark: write `bench/<name>.py` with
`def run(*, quick: bool, workdir: Path) -> list[report.Measurement]` and add one line below.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from bench import report

REGISTRY: Final[dict[str, str]] = {
    "store": "bench.store",  # event store: durable append throughput, replay, start-up
    "cni": "bench.cni",  # ADD/DEL through the shim vs the same delegates exec'd directly
    "burst": "bench.burst",  # 250 concurrent ADDs (node after reboot): failures, peak RSS, p99
    "k8s": "bench.k8s",  # ADD with the pod cached vs a GET per call; API requests per pod
}


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", metavar="NAME", help=f"all, {', '.join(REGISTRY)}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (CI, make bench)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results here")
    args = parser.parse_args(argv)
    names = list(REGISTRY) if "all" in args.names else args.names
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    results: list[report.Measurement] = []
    for name in names:
        module = importlib.import_module(REGISTRY[name])
        started = time.perf_counter()
        print(f"== {name}{' (quick)' if args.quick else ''}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix=f"genie-bench-{name}-") as workdir:
            results += module.run(quick=args.quick, workdir=Path(workdir))
        print(f"== {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    report.print_table(results)
    if args.json is not None:
        report.write_json(args.json, results, argv=argv)
    return 1 if any(m.ok is False for m in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
