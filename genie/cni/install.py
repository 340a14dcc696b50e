"""`genie install-cni`: put the shim and genie's conflist where the container runtime looks.

The shim is copied with its shebang pointing at a real interpreter and SOCKET_PATH rewritten,
after checking that this interpreter really runs it. With `--host-root DIR` (an init
container with the host's `/` mounted at DIR) the interpreter is the host's: it is looked up
and run inside DIR (chroot), because kubelet runs the shim on the host, not in the container.
Both files are written atomically (temp file + rename), the conflist only after the shim
checked out, and a second run changes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import selectors
import signal
import stat
import subprocess
import sys
import tempfile
import time
from typing import Any, Final

from genie.cni import versions

SHIM_NAME: Final = "genie"
CONFLIST_NAME: Final = "00-genie.conflist"
DEFAULT_SOCKET: Final = "/run/genie/genie.sock"
SHIM_SOURCE: Final = pathlib.Path(__file__).with_name("shim.py")
# The oldest Python the shim runs on: `-> tuple[int, bytes]` in shim.py is evaluated when the
# function is defined, and subscripting builtin types needs 3.9 (PEP 585); 3.8 and older fail
# with "TypeError: 'type' object is not subscriptable" (checked with CPython 3.6 to 3.13).
SHIM_MIN_PYTHON: Final = "3.9"
_SOCKET_LINE: Final = f'SOCKET_PATH = "{DEFAULT_SOCKET}"'
_MAX_SHEBANG: Final = 250  # the kernel truncates longer shebang lines
_CHECK_TIMEOUT: Final = 20.0
_MAX_CHECK_OUTPUT: Final = 64 * 1024  # of stdout and of stderr: a VERSION answer is ~100 bytes
_MAX_SYMLINKS: Final = 40  # as the kernel (ELOOP)
_CHECK_PATH: Final = "/usr/sbin:/usr/bin:/sbin:/bin"
_CHROOT_FAILED: Final = 125  # coreutils chroot's exit status when chroot(2) itself fails


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


def _check_shebang_path(python: str) -> None:
    if not pathlib.Path(python).is_absolute():
        raise InstallError(f"--python must be an absolute path, not {python!r}")
    if any(c.isspace() for c in python) or "\0" in python or len(python) > _MAX_SHEBANG:
        raise InstallError(f"--python {python!r} cannot be used in a shebang line")


def _check_python(python: str) -> None:
    _check_shebang_path(python)
    if not os.access(python, os.X_OK) or not pathlib.Path(python).is_file():
        raise InstallError(f"--python {python} is not an executable file")


class _CheckFailedError(Exception):
    """The shim's VERSION check did not give the expected answer; the message says why."""

    def __init__(self, why: str, *, status: int | None = None) -> None:
        super().__init__(why)
        self.status = status


def _run_bounded(argv: list[str], *, data: bytes) -> tuple[int, bytes, bytes]:
    """(exit status, stdout, stderr) of `argv` fed `data`, run in its own session with a fixed
    environment; _CheckFailedError when it cannot start, takes too long or says too much."""
    env = {"CNI_COMMAND": "VERSION", "PATH": _CHECK_PATH}
    try:
        proc = subprocess.Popen(
            argv,
            bufsize=0,  # stdin unbuffered: a write to a process that exited fails right here
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd="/",
            start_new_session=True,
        )
    except OSError as exc:
        raise _CheckFailedError(str(exc)) from exc
    with proc:
        try:
            return _collect(proc, data=data)
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _collect(proc: subprocess.Popen[bytes], *, data: bytes) -> tuple[int, bytes, bytes]:
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(data)  # a few bytes: fits in the pipe, never blocks
    except BrokenPipeError:  # it exited without reading
        pass
    finally:
        proc.stdin.close()
    outputs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    deadline = time.monotonic() + _CHECK_TIMEOUT
    with selectors.DefaultSelector() as selector:
        for fd in outputs:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise _CheckFailedError(f"no answer within {_CHECK_TIMEOUT:.0f} s")
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                outputs[key.fd] += chunk
                if len(outputs[key.fd]) > _MAX_CHECK_OUTPUT:
                    raise _CheckFailedError(f"more than {_MAX_CHECK_OUTPUT} bytes of output")
    try:
        status = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        raise _CheckFailedError(f"did not exit within {_CHECK_TIMEOUT:.0f} s") from None
    return status, bytes(outputs[proc.stdout.fileno()]), bytes(outputs[proc.stderr.fileno()])


def _check_version_answer(argv: list[str]) -> None:
    """Run `argv` (the shim, one way or another) as CNI VERSION; _CheckFailedError unless it gives
    exactly the VERSION answer genie's shim gives."""
    status, out, err = _run_bounded(argv, data=b'{"cniVersion":"1.1.0"}')
    try:
        answer = json.loads(out)
    except ValueError:
        answer = None
    expected = {"cniVersion": versions.LATEST, "supportedVersions": list(versions.SUPPORTED)}
    if status != 0 or answer != expected:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        why = lines[-1][:200] if lines else f"exit {status}, output {out[:80]!r}"
        raise _CheckFailedError(why, status=status)


def _verify(path: pathlib.Path, *, python: str) -> None:
    """Execute the freshly written shim (through its shebang) and check its VERSION answer."""
    try:
        _check_version_answer([str(path)])
    except _CheckFailedError as exc:
        raise InstallError(
            f"the shim does not run with {python}: {exc} (it needs python3 >= {SHIM_MIN_PYTHON})"
        ) from exc


def resolve_in_root(root: pathlib.Path, path: str) -> pathlib.Path | None:
    """Where `path` is under `root` for a process chrooted to `root` (symlinks, absolute ones
    too, followed inside `root`); None when a component is missing or symlinks loop."""
    pending = [part for part in pathlib.PurePosixPath(path).parts if part != "/"]
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        here = root.joinpath(*resolved, part)
        try:
            mode = here.lstat().st_mode
            target = pathlib.PurePosixPath(here.readlink()) if stat.S_ISLNK(mode) else None
        except OSError:
            return None
        if target is None:
            resolved.append(part)
            continue
        hops += 1
        if hops > _MAX_SYMLINKS:
            return None
        if target.is_absolute():
            resolved = []
        pending = [p for p in target.parts if p != "/"] + pending
    return root.joinpath(*resolved)


def _check_host_python(root: pathlib.Path, *, python: str, text: str) -> None:
    """The host's `python` (a path as the host sees it) exists under `root` and runs `text`."""

    def fail(why: str) -> InstallError:
        return InstallError(
            f"the host has no usable Python for the CNI shim: {why} (kubelet runs the shim on "
            f"the host; install python3 >= {SHIM_MIN_PYTHON} there or pass --python)"
        )

    if not root.is_dir():
        raise InstallError(f"--host-root {root} is not a directory")
    found = resolve_in_root(root, python)
    if found is None:
        raise fail(f"{python} not found under {root}")
    if not found.is_file() or not os.access(found, os.X_OK):
        raise fail(f"{python} under {root} is not an executable file")
    try:
        _check_version_answer(["chroot", str(root), python, "-IS", "-c", text])
    except _CheckFailedError as exc:
        if exc.status == _CHROOT_FAILED:
            raise InstallError(
                f"cannot chroot into --host-root {root} (it needs CAP_SYS_CHROOT): {exc}"
            ) from exc
        raise fail(f"{python} under {root} does not run the shim: {exc}") from exc


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
    *,
    bin_dir: pathlib.Path,
    conf_dir: pathlib.Path,
    socket: str,
    python: str,
    host_root: pathlib.Path | None = None,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Install the shim and the conflist; returns their paths. InstallError on any problem.

    With `host_root`, `python` is a path on the host mounted at `host_root`; it is checked
    there (chroot) before anything is written, since this process cannot exec it directly.
    """
    if not bin_dir.is_dir():
        raise InstallError(f"CNI bin dir {bin_dir} does not exist")
    if not socket.startswith("/") or "\0" in socket:
        raise InstallError(f"--socket must be an absolute path, not {socket!r}")
    if host_root is None:
        _check_python(python)
    else:
        _check_shebang_path(python)
    text = shim_text(socket=socket, python=python)
    if host_root is not None:
        _check_host_python(host_root, python=python, text=text)
    try:
        shim = bin_dir / SHIM_NAME
        verify_with = python if host_root is None else ""
        _write_atomic(shim, text.encode(), mode=0o755, python=verify_with)
        conf_dir.mkdir(parents=True, exist_ok=True)  # only now: a failed check creates nothing
        conf = conf_dir / CONFLIST_NAME
        _write_atomic(conf, conflist_text(socket=socket).encode(), mode=0o644)
    except OSError as exc:
        raise InstallError(f"cannot install: {exc}") from exc
    return shim, conf


def uninstall(*, bin_dir: pathlib.Path, conf_dir: pathlib.Path) -> list[pathlib.Path]:
    """Remove the shim and the conflist; files already gone are fine. Returns what was removed.

    The conflist goes first: once it is gone the runtime stops choosing genie for new pods.
    """
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
    host_root = pathlib.Path(args.host_root) if args.host_root else None
    try:
        if args.uninstall:
            for path in uninstall(bin_dir=bin_dir, conf_dir=conf_dir):
                print(f"removed {path}")
            return 0
        python = args.python or (SYSTEM_PYTHON if host_root else default_python())
        shim, conf = install(
            bin_dir=bin_dir,
            conf_dir=conf_dir,
            socket=args.socket,
            python=python,
            host_root=host_root,
        )
    except InstallError as exc:
        print(f"genie install-cni: {exc}", file=sys.stderr)
        return 2
    where = f" under {host_root}" if host_root else ""
    print(f"installed {shim} (python {python}{where}, socket {args.socket}) and {conf}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "install-cni", help="install the genie CNI shim and conflist", description=__doc__
    )
    parser.add_argument("--bin-dir", required=True, help="CNI plugin dir (e.g. /opt/cni/bin)")
    parser.add_argument("--conf-dir", required=True, help="CNI config dir (e.g. /etc/cni/net.d)")
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help="the agent's unix socket")
    parser.add_argument(
        "--python",
        default="",
        help="interpreter for the shim's shebang, as the host sees it (default: "
        f"{SYSTEM_PYTHON} with --host-root, else the host's python3 or this one)",
    )
    parser.add_argument(
        "--host-root",
        default="",
        help="the host's / as mounted here (an init container): --python is checked and run "
        "there (chroot), since kubelet runs the shim on the host",
    )
    parser.add_argument("--uninstall", action="store_true", help="remove both files")
    parser.set_defaults(func=run)
