"""A directory of config files, re-read only where files changed: the net dir, the pods dir.

Each `refresh()` lists the directory and stats the candidate files (following symlinks, as
ConfigMap mounts use them); a file is parsed again only when its (mtime, size, inode, device)
changed. Cheap enough to run on every lookup, so no watcher task is needed.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger("genie.files")

T = TypeVar("T")
_Version = tuple[int, int, int, int]


class WatchedDir(Generic[T]):
    def __init__(
        self, path: Path, *, accept: Callable[[str], bool], load: Callable[[Path], T], what: str
    ) -> None:
        self.path = path
        self._accept = accept
        self._load = load
        self._what = what
        self._files: dict[str, tuple[_Version, T]] = {}
        self._dir_error_logged = False

    def refresh(self) -> bool:
        """Re-read changed files; True when anything was added, changed or removed."""
        seen = self._scan()
        if seen.keys() == self._files.keys() and all(
            self._files[f][0] == v for f, v in seen.items()
        ):
            return False
        files: dict[str, tuple[_Version, T]] = {}
        for fname, version in seen.items():
            old = self._files.get(fname)
            files[fname] = (
                old if old and old[0] == version else (version, self._load(self.path / fname))
            )
        self._files = files
        return True

    def items(self) -> list[tuple[str, T]]:
        """(file name, loaded value) in file-name order, as of the last refresh."""
        return [(fname, self._files[fname][1]) for fname in sorted(self._files)]

    def _scan(self) -> dict[str, _Version]:
        try:
            names = [entry.name for entry in self.path.iterdir()]
        except OSError as exc:
            if not self._dir_error_logged:
                log.error("cannot list %s %s: %s", self._what, self.path, exc)
                self._dir_error_logged = True
            return {}
        self._dir_error_logged = False
        seen: dict[str, _Version] = {}
        for fname in names:
            if not self._accept(fname):
                continue
            try:
                st = (self.path / fname).stat()
            except OSError:
                continue  # vanished between listdir and stat, or a dangling link
            if stat.S_ISREG(st.st_mode):
                seen[fname] = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)
        return seen
