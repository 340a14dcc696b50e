"""The delegate networks found in the CNI net dir, by name, kept current without a restart.

Every lookup does a cheap scan of the directory (names and stat data) and re-parses only
files whose (mtime, size, inode) changed, so an operator adding, editing or deleting a
network config is seen by the next pod without any watcher task. genie's own conflist
(a plugin of type `genie`) lives in the same directory and is never offered as a delegate.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from genie import watched_dir

log = logging.getLogger("genie.networks")

MAX_CONFIG_BYTES: Final = 1 << 20
EXTENSIONS: Final = (".conf", ".conflist", ".json")
# libcni: a config without cniVersion is read by the plugins as 0.1.0
DEFAULT_CNI_VERSION: Final = "0.1.0"


@dataclasses.dataclass(frozen=True, slots=True)
class NetworkConfig:
    """One network as its file describes it: a chain of plugins (one for a plain .conf)."""

    name: str
    cni_version: str
    plugins: tuple[Mapping[str, Any], ...]
    parallel: bool
    source: Path


class UnknownNetworkError(LookupError):
    """No valid network config by that name is in the net dir."""

    def __init__(self, name: str, net_dir: Path) -> None:
        super().__init__(f"network {name!r} not found in {net_dir}")
        self.name = name
        self.net_dir = net_dir


class InvalidConfigError(ValueError):
    """A file in the net dir is not a usable network config (the message says why)."""


class NetworkRegistry:
    """Delegate network configs of a net dir, keyed by network name."""

    def __init__(self, net_dir: Path, *, self_type: str = "genie") -> None:
        self._dir = net_dir
        self._self_type = self_type
        # None: an invalid file, or genie's own config
        self._files: watched_dir.WatchedDir[NetworkConfig | None] = watched_dir.WatchedDir(
            net_dir, accept=_candidate, load=self._load, what="net dir"
        )
        self._by_name: dict[str, NetworkConfig] = {}
        self._warned_duplicates: set[tuple[str, str]] = set()

    @property
    def net_dir(self) -> Path:
        return self._dir

    def get(self, name: str) -> NetworkConfig:
        """The network called `name`, as the files are now; UnknownNetworkError if none."""
        self._refresh()
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownNetworkError(name, self._dir) from None

    def names(self) -> tuple[str, ...]:
        """Names of every valid delegate network, sorted."""
        self._refresh()
        return tuple(sorted(self._by_name))

    # --- scanning -------------------------------------------------------------------------

    def _refresh(self) -> None:
        if self._files.refresh():
            self._reindex()

    def _load(self, path: Path) -> NetworkConfig | None:
        try:
            config = parse_file(path)
        except InvalidConfigError as exc:
            log.error("ignoring network config %s: %s", path, exc)
            return None
        if any(p.get("type") == self._self_type for p in config.plugins):
            log.debug("ignoring %s: it is genie's own config", path)
            return None
        return config

    def _reindex(self) -> None:
        by_name: dict[str, NetworkConfig] = {}
        duplicates: set[tuple[str, str]] = set()
        for fname, config in self._files.items():
            if config is None:
                continue
            first = by_name.get(config.name)
            if first is None:
                by_name[config.name] = config
                continue
            duplicates.add((config.name, fname))
            if (config.name, fname) not in self._warned_duplicates:
                log.warning(
                    "network %r in %s is also defined in %s, which wins (first in file order)",
                    config.name,
                    self._dir / fname,
                    first.source,
                )
        self._warned_duplicates = duplicates
        self._by_name = by_name


def _candidate(fname: str) -> bool:
    """Config files only: no hidden, editor backup or temporary files."""
    return not fname.startswith((".", "~", "#")) and fname.endswith(EXTENSIONS)


def parse_file(path: Path) -> NetworkConfig:
    """Read and validate one config file; InvalidConfigError says what is wrong with it."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise InvalidConfigError(f"cannot read: {exc}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise InvalidConfigError(f"larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidConfigError(f"not JSON: {exc}") from exc
    return parse_config(doc, source=path)


def parse_config(doc: Any, *, source: Path) -> NetworkConfig:
    """Validate a decoded .conf (one plugin) or .conflist (a chain) document."""
    if not isinstance(doc, dict):
        raise InvalidConfigError("not a JSON object")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidConfigError("no network name")
    version = doc.get("cniVersion", DEFAULT_CNI_VERSION)
    if not isinstance(version, str) or not version:
        raise InvalidConfigError("cniVersion is not a string")
    parallel = doc.get("parallel", True)
    if not isinstance(parallel, bool):
        raise InvalidConfigError("parallel is not a boolean")
    if "plugins" in doc:
        plugins = doc["plugins"]
        if not isinstance(plugins, list) or not plugins:
            raise InvalidConfigError("a conflist needs a non-empty plugins list")
    else:
        plugins = [doc]
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict):
            raise InvalidConfigError(f"plugin {i} is not a JSON object")
        kind = plugin.get("type")
        if not isinstance(kind, str) or not kind:
            raise InvalidConfigError(f"plugin {i} has no type")
    return NetworkConfig(
        name=name,
        cni_version=version,
        plugins=tuple(plugins),
        parallel=parallel,
        source=source,
    )
