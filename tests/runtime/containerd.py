"""A private containerd 1.6 for the tests: started inside a node netns, removed without a trace.

Everything containerd keeps lives under the test's root (content, snapshots, state, the
gRPC socket, runc's state, the pods' network namespaces, the CNI dirs it is told about);
pods go under a cgroup parent of their own. `close()` undoes it all even after a failure:
containerd is stopped, then any shim it left behind (found by *this* containerd's address
only) and the processes in this run's cgroups are killed, mounts under the root are
detached, leftover shim sockets and cgroups removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from tests.runtime import cri
from tests.support import processes

CRI_NAMESPACE: Final = "k8s.io"
SHIM: Final = "containerd-shim-runc-v2"
SHIM_SOCKET_DIR: Final = Path("/run/containerd/s")  # fixed in containerd 1.6, not per-root
CGROUP_ROOT: Final = Path("/sys/fs/cgroup")

CONFIG: Final = """\
version = 2
root = "{root}/lib"
state = "{root}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.overlayfs", "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{address}"
[ttrpc]
  address = "{address}.ttrpc"
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{root}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{cni_conf_dir}"
    max_conf_num = 1
"""


class ContainerdError(RuntimeError):
    """containerd did not start, or a ctr command failed."""


class Containerd:
    """One containerd process; `cri` is its CRI client once started."""

    def __init__(
        self,
        root: Path,
        *,
        netns: Path,
        cni_bin_dir: Path,
        cni_conf_dir: Path,
        sandbox_image: str,
    ) -> None:
        self.root = root
        self.netns = netns
        self.address = root / "containerd.sock"
        self.config_path = root / "config.toml"
        self.log_path = root / "containerd.log"
        self.cgroup_parent = f"/genie-t-{secrets.token_hex(4)}"
        self._config = CONFIG.format(
            root=root,
            address=self.address,
            sandbox_image=sandbox_image,
            cni_bin_dir=cni_bin_dir,
            cni_conf_dir=cni_conf_dir,
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._cri: cri.Client | None = None

    @property
    def cri(self) -> cri.Client:
        if self._cri is None:
            raise ContainerdError("containerd is not running")
        return self._cri

    def start(self, *, timeout: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    "nsenter",  # not `ip netns exec`: it remounts /sys, and runc then fails
                    f"--net={self.netns}",
                    "containerd",
                    "--config",
                    str(self.config_path),
                    "--log-level",
                    "info",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._cri = cri.Client(self.address)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise ContainerdError(f"containerd exited {self._proc.returncode}:\n{self.log()}")
            if self.address.exists():
                with contextlib.suppress(cri.CriError):
                    self._cri.version(timeout=1.0)
                    return
            if time.monotonic() > deadline:
                raise ContainerdError(
                    f"containerd not serving CRI after {timeout} s:\n{self.log()}"
                )
            time.sleep(0.05)

    def log(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def ctr(self, *args: str, timeout: float = 60.0) -> str:
        proc = subprocess.run(
            ["ctr", "--address", str(self.address), "--namespace", CRI_NAMESPACE, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise ContainerdError(f"ctr {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def import_image(self, tarball: Path, name: str, *, timeout: float = 30.0) -> None:
        """`ctr images import` (unpacked for the native snapshotter), then wait until the CRI
        plugin's image store, which follows containerd's events, knows `name`."""
        self.ctr("images", "import", "--snapshotter", "native", str(tarball))
        deadline = time.monotonic() + timeout
        while not self.cri.image_status(name).image.id:
            if time.monotonic() > deadline:
                raise ContainerdError(f"CRI does not see image {name} after {timeout} s")
            time.sleep(0.05)

    # -- teardown ---------------------------------------------------------------------
    def remove_all_sandboxes(self) -> list[str]:
        """Stop and remove every sandbox (kubelet's way: CNI DEL twice); the errors it met."""
        errors: list[str] = []
        try:
            sandboxes = self.cri.list_pod_sandboxes()
        except (cri.CriError, ContainerdError) as exc:
            return [str(exc)]
        for sandbox in sandboxes:
            for call in (self.cri.stop_pod_sandbox, self.cri.remove_pod_sandbox):
                try:
                    call(sandbox.id)
                except cri.CriError as exc:
                    errors.append(str(exc))
        return errors

    def close(self) -> None:
        """Stop containerd and remove whatever it left; safe to call more than once."""
        if self._cri is not None:
            self._cri.close()
            self._cri = None
        if self._proc is not None:
            processes.stop(self._proc)
            self._proc = None
        for shim, argv in self._shims():
            _kill_tree(shim)
            _remove_shim_socket(argv)
        self._kill_cgroup_members()
        detach_mounts_under(self.root)
        self._remove_cgroups()

    def shim_pids(self) -> list[int]:
        """Shims of this containerd still alive (one per sandbox not yet removed)."""
        return [pid for pid, _ in self._shims()]

    def _shims(self) -> list[tuple[int, list[str]]]:
        """Live shims started by this containerd (their `-address` is ours), with argv."""
        found = []
        for pid in _pids():
            argv = _cmdline(pid)
            if argv and Path(argv[0]).name == SHIM and _flag(argv, "-address") == str(self.address):
                found.append((pid, argv))
        return found

    def _cgroup_dirs(self) -> list[Path]:
        """This run's cgroup directories in every hierarchy, deepest first."""
        dirs: list[Path] = []
        for hierarchy in sorted(CGROUP_ROOT.iterdir()) if CGROUP_ROOT.is_dir() else []:
            top = hierarchy / self.cgroup_parent.lstrip("/")
            if top.is_dir():
                dirs += sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True)
                dirs.append(top)
        return dirs

    def _kill_cgroup_members(self) -> None:
        for directory in self._cgroup_dirs():
            with contextlib.suppress(OSError):
                for line in (directory / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(line), signal.SIGKILL)

    def _remove_cgroups(self) -> None:
        deadline = time.monotonic() + 5
        for directory in self._cgroup_dirs():
            while True:  # a killed process leaves its cgroup a moment later
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)


@contextlib.contextmanager
def running(
    root: Path, *, netns: Path, cni_bin_dir: Path, cni_conf_dir: Path, sandbox_image: str
) -> Iterator[Containerd]:
    daemon = Containerd(
        root,
        netns=netns,
        cni_bin_dir=cni_bin_dir,
        cni_conf_dir=cni_conf_dir,
        sandbox_image=sandbox_image,
    )
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.close()


# -- processes, mounts ----------------------------------------------------------------
def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == name:
            return argv[i + 1]
    return None


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _kill_tree(pid: int) -> None:
    """SIGKILL a shim and the container processes under it (children first)."""
    for child in _children(pid):
        _kill_tree(child)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _remove_shim_socket(argv: list[str]) -> None:
    """A killed shim leaves /run/containerd/s/<sha256(address/namespace/id)>; remove it."""
    address, namespace, ident = (_flag(argv, f) for f in ("-address", "-namespace", "-id"))
    if address and namespace and ident:
        name = hashlib.sha256(f"{address}/{namespace}/{ident}".encode()).hexdigest()
        with contextlib.suppress(OSError):
            (SHIM_SOCKET_DIR / name).unlink()


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root` in this mount namespace, in mount order."""
    prefix = str(root).rstrip("/")
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def detach_mounts_under(root: Path) -> None:
    """Lazily unmount everything below `root`, last mounted first (stacked mounts too)."""
    for _ in range(10):
        points = mounts_under(root)
        if not points:
            return
        for point in reversed(points):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=10, check=False)
