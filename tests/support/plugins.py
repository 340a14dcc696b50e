"""Tiny stand-in CNI plugins for failure tests: `#!/bin/sh` scripts in a test-owned CNI dir.

Real plugins cover the success paths; these cover what real plugins rarely do on demand:
hang, crash, print garbage, print a CNI error. Each script can record its environment and
stdin so a test checks exactly what the runner handed it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULT = {"cniVersion": "1.0.0", "interfaces": [], "ips": [], "routes": [], "dns": {}}


def write_script_plugin(directory: Path, name: str, body: str) -> Path:
    """Write an executable `#!/bin/sh` plugin `directory/name` whose script is `body`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body.strip() + "\n")
    path.chmod(0o755)
    return path


def recording_plugin(
    directory: Path, name: str, *, record_dir: Path, result: Any = None, exit_status: int = 0
) -> Path:
    """A plugin saving env and stdin as `record_dir/<name>.<n>.{env,stdin}`, printing `result`."""
    record_dir.mkdir(parents=True, exist_ok=True)
    out = json.dumps(RESULT if result is None else result)
    body = f"""
n=$(ls {record_dir} | grep -c '^{name}\\..*\\.env$')
env > {record_dir}/{name}.$n.env
cat > {record_dir}/{name}.$n.stdin
printf '%s' '{out}'
exit {exit_status}
"""
    return write_script_plugin(directory, name, body)


def recorded(record_dir: Path, name: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """What each call of a recording plugin saw, in call order: (environment, stdin config)."""
    calls: list[tuple[dict[str, str], dict[str, Any]]] = []
    n = 0
    while (record_dir / f"{name}.{n}.env").exists():
        env: dict[str, str] = {}
        for line in (record_dir / f"{name}.{n}.env").read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value
        calls.append((env, json.loads((record_dir / f"{name}.{n}.stdin").read_text())))
        n += 1
    return calls
