"""`genie install-cni`: put the shim and genie's conflist where the container runtime looks.

The shim is copied with its shebang pointing at a real interpreter and SOCKET_PATH rewritten,
after checking that this interpreter really runs it. Both files are written atomically
(temp file + rename) and a second run changes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from typing import Any, Final

from genie.cni import versions

SHIM_NAME: Final = "genie"
CONFLIST_NAME: Final = "00-genie.conflist"
DEFAULT_SOCKET: Final = "/run/genie/genie.sock"
SHIM_SOURCE: Final = pathlib.Path(__file__).with_name("shim.py")
_SOCKET_LINE: Final = f'SOCKET_PATH = "{DEFAULT_SOCKET}"'
_MAX_SHEBANG: Final = 250  # the kernel truncates longer shebang lines
_CHECK_TIMEOUT: Final = 20.0


class InstallError(Exception):
    """Installation cannot proceed; the message is one line for the operator."""


SYSTEM_PYTHON = "/usr/bin/python3"


def default_python() -> str:
    """The host's own python3 when there is one, else the interpreter running genie.

    The shim runs on the host once per pod operation and needs only the stdlib, so the
    quickest-starting interpreter wins: Debian's starts ~2 ms faster than a pyenv build, and a
    venv's python is followed through its symlinks to the base interpreter.
    """
    if os.access(SYSTEM_PYTHON, os.X_OK):
        return SYSTEM_PYTHON
    return os.path.realpath(sys.executable)


def shim_text(*, socket: str, python: str) -> str:
    """The shim's source with its shebang and socket path set for this node."""
    source = SHIM_SOURCE.read_text(encoding="utf-8")
    if source.count(_SOCKET_LINE) != 1:
        raise InstallError(f"{SHIM_SOURCE} has no single line {_SOCKET_LINE!r}")
    lines = source.split("\n")
    if lines[0].startswith("#!"):
        lines = lines[1:]
    body = "\n".join(lines).replace(_SOCKET_LINE, f"SOCKET_PATH = {json.dumps(socket)}")
    return f"#!{python} -IS\n{body}"


def conflist(*, socket: str) -> dict[str, Any]:
    """genie's network configuration list (1.0.0 for older libcni, 1.1.0 offered beside it)."""
    return {
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": "genie",
        "plugins": [{"type": "genie", "socket": socket}],
    }


def conflist_text(*, socket: str) -> str:
    return json.dumps(conflist(socket=socket), indent=2) + "\n"


def _check_python(python: str) -> None:
    if not pathlib.Path(python).is_absolute():
        raise InstallError(f"--python must be an absolute path, not {python!r}")
    if any(c.isspace() for c in python) or len(python) > _MAX_SHEBANG:
        raise InstallError(f"--python {python!r} cannot be used in a shebang line")
    if not os.access(python, os.X_OK) or not pathlib.Path(python).is_file():
        raise InstallError(f"--python {python} is not an executable file")


def _verify(path: pathlib.Path, *, python: str) -> None:
    """Execute the freshly written shim (through its shebang) and check its VERSION answer."""
    env = {"CNI_COMMAND": "VERSION", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    try:
        done = subprocess.run(
            [str(path)],
            input=b'{"cniVersion":"1.1.0"}',
            env=env,
            capture_output=True,
            timeout=_CHECK_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"the shim does not run with {python}: {exc}") from exc
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        answer = None
    expected = {"cniVersion": versions.LATEST, "supportedVersions": list(versions.SUPPORTED)}
    if done.returncode != 0 or answer != expected:
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()
        why = err[-1] if err else f"exit {done.returncode}, output {done.stdout[:80]!r}"
        raise InstallError(f"the shim does not run with {python}: {why}")


def _write_atomic(target: pathlib.Path, data: bytes, *, mode: int, python: str = "") -> None:
    """Write `data` to `target` via a temp file in the same dir; verify it first if `python`."""
    if target.is_file() and target.read_bytes() == data and (target.stat().st_mode & 0o777) == mode:
        if python:
            _verify(target, python=python)
        return
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    tmp = pathlib.Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        if python:
            _verify(tmp, python=python)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def install(
    *, bin_dir: pathlib.Path, conf_dir: pathlib.Path, socket: str, python: str
) -> tuple[pathlib.Path, pathlib.Path]:
    """Install the shim and the conflist; returns their paths. InstallError on any problem."""
    if not bin_dir.is_dir():
        raise InstallError(f"CNI bin dir {bin_dir} does not exist")
    if not socket.startswith("/") or "\0" in socket:
        raise InstallError(f"--socket must be an absolute path, not {socket!r}")
    _check_python(python)
    try:
        conf_dir.mkdir(parents=True, exist_ok=True)
        shim = bin_dir / SHIM_NAME
        _write_atomic(
            shim, shim_text(socket=socket, python=python).encode(), mode=0o755, python=python
        )
        conf = conf_dir / CONFLIST_NAME
        _write_atomic(conf, conflist_text(socket=socket).encode(), mode=0o644)
    except OSError as exc:
        raise InstallError(f"cannot install: {exc}") from exc
    return shim, conf


def uninstall(*, bin_dir: pathlib.Path, conf_dir: pathlib.Path) -> list[pathlib.Path]:
    """Remove the shim and the conflist; files already gone are fine. Returns what was removed."""
    removed = []
    for path in (conf_dir / CONFLIST_NAME, bin_dir / SHIM_NAME):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise InstallError(f"cannot remove {path}: {exc}") from exc
        removed.append(path)
    return removed


def run(args: argparse.Namespace) -> int:
    bin_dir = pathlib.Path(args.bin_dir)
    conf_dir = pathlib.Path(args.conf_dir)
    try:
        if args.uninstall:
            for path in uninstall(bin_dir=bin_dir, conf_dir=conf_dir):
                print(f"removed {path}")
            return 0
        python = args.python or default_python()
        shim, conf = install(bin_dir=bin_dir, conf_dir=conf_dir, socket=args.socket, python=python)
    except InstallError as exc:
        print(f"genie install-cni: {exc}", file=sys.stderr)
        return 2
    print(f"installed {shim} (python {python}, socket {args.socket}) and {conf}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "install-cni", help="install the genie CNI shim and conflist", description=__doc__
    )
    parser.add_argument("--bin-dir", required=True, help="CNI plugin dir (e.g. /opt/cni/bin)")
    parser.add_argument("--conf-dir", required=True, help="CNI config dir (e.g. /etc/cni/net.d)")
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help="the agent's unix socket")
    parser.add_argument("--python", default="", help="interpreter for the shim's shebang")
    parser.add_argument("--uninstall", action="store_true", help="remove both files")
    parser.set_defaults(func=run)
