"""pytest fixtures over the netns kit, loaded for every test by tests/conftest.py `pytest_plugins`.

    node_netns       a fresh "node" namespace (str name), deleted at teardown
    in_node_netns    the same, with the test's thread inside it for the whole test, so the
                     CNI plugins the test (or the agent it runs) spawns run "on the node"
    pod_netns        one fresh pod namespace
    make_pod_netns   call it for more pod namespaces; all deleted at teardown
    networks         a NetworkFactory writing into `net_dir` with host-local state in `ipam_dir`
    net_dir, ipam_dir, cni_bin_dir

Tests using namespaces are skipped (not failed) when not run as root.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import cniconf
from tests.support import netns as nskit


def _require_root() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for network namespaces")


@pytest.fixture
def node_netns() -> Iterator[str]:
    _require_root()
    with nskit.temporary_netns() as name:
        yield name


@pytest.fixture
def in_node_netns(node_netns: str) -> Iterator[str]:
    with nskit.in_netns(node_netns):
        yield node_netns


@pytest.fixture
def make_pod_netns() -> Iterator[Callable[[], str]]:
    _require_root()
    created: list[str] = []

    def make() -> str:
        name = nskit.unique_name()
        nskit.create_netns(name)
        created.append(name)
        return name

    try:
        yield make
    finally:
        for name in created:
            nskit.delete_netns(name)


@pytest.fixture
def pod_netns(make_pod_netns: Callable[[], str]) -> str:
    return make_pod_netns()


@pytest.fixture
def net_dir(tmp_path: Path) -> Path:
    path = tmp_path / "net.d"
    path.mkdir()
    return path


@pytest.fixture
def ipam_dir(tmp_path: Path) -> Path:
    path = tmp_path / "ipam"
    path.mkdir()
    return path


@pytest.fixture
def cni_bin_dir() -> Path:
    if not (cniconf.CNI_BIN_DIR / "bridge").exists():
        pytest.skip(f"reference CNI plugins not installed in {cniconf.CNI_BIN_DIR}")
    return cniconf.CNI_BIN_DIR


@pytest.fixture
def networks(net_dir: Path, ipam_dir: Path) -> cniconf.NetworkFactory:
    return cniconf.NetworkFactory(net_dir, ipam_dir)
