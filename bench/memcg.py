"""A memory cgroup around the agent, so a benchmark can read the peak of agent + delegates.

The DaemonSet's memory limit applies to the container's cgroup: the agent and every plugin
process it execs, page cache included. VmHWM of the agent alone misses the plugins. This
makes a child of the bench's own memory cgroup (v1 or v2), starts the agent in it (its
plugins are born there too) and reads the cgroup's peak usage. Nothing here is needed by genie.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


class MemoryCgroup:
    def __init__(self, path: Path, *, v2: bool) -> None:
        self.path = path
        self.v2 = v2

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        """Processes this one starts inside the block are born in the group (and stay)."""
        own = (self.path.parent / "cgroup.procs", str(os.getpid()))
        (self.path / "cgroup.procs").write_text(own[1])
        try:
            yield
        finally:
            own[0].write_text(own[1])

    def peak_mib(self) -> float:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        return int((self.path / name).read_text()) / 2**20

    def page_cache_mib(self) -> float:
        """Page cache charged now (file-backed, reclaimable before the OOM killer acts)."""
        key = "file" if self.v2 else "total_cache"
        for line in (self.path / "memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value) / 2**20
        return 0.0


def _own_memory_cgroup() -> tuple[Path, bool] | None:
    """This process's memory cgroup dir and whether it is cgroup v2."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(","):
            return ROOT / "memory" / rel.lstrip("/"), False
    for line in lines:
        if line.startswith("0::") and (ROOT / "cgroup.controllers").exists():
            return ROOT / line[3:].lstrip("/"), True
    return None


@contextlib.contextmanager
def child(name: str) -> Iterator[MemoryCgroup | None]:
    """A fresh child memory cgroup, or None where none can be made (then say so)."""
    own = _own_memory_cgroup()
    if own is None:
        yield None
        return
    parent, v2 = own
    path = parent / f"{name}-{os.getpid()}"
    try:
        path.mkdir()
    except OSError:
        yield None
        return
    if v2 and not (path / "memory.peak").exists():  # memory not delegated to children here
        path.rmdir()
        yield None
        return
    try:
        yield MemoryCgroup(path, v2=v2)
    finally:
        with contextlib.suppress(OSError):  # its processes are gone by now
            for pid in (path / "cgroup.procs").read_text().split():
                (parent / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            path.rmdir()
