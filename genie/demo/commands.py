"""`genie demo`: registers the command; the scenario itself lives in genie.demo.scenario."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="show multi-network pods end to end on this machine (needs root)"
    )
    parser.set_defaults(func=run)


def run(_args: argparse.Namespace) -> int:
    from genie.demo import scenario  # heavy-ish imports only when the demo runs

    try:
        return scenario.run()
    except KeyboardInterrupt:
        print("interrupted; cleaned up")
        return 130
