"""`genie agent`: parse the flags, configure logging, run the agent until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from genie.daemon import config as agent_config


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "agent", help="run the node agent (CNI socket, delegates, event log)"
    )
    agent_config.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = agent_config.load(args)
    except agent_config.ConfigError as exc:
        print(f"genie: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import anyio  # keep `genie --help` light

    from genie.daemon import agent
    from genie.k8s import client as k8s_client
    from genie.store import errors as store_errors

    try:
        return anyio.run(agent.Agent(cfg).serve)
    except (agent_config.ConfigError, k8s_client.ConfigError, store_errors.StoreError) as exc:
        logging.getLogger("genie.agent").error("cannot start: %s", exc)
        print(f"genie: {exc}", file=sys.stderr)
        return 2
