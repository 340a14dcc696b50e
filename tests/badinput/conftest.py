"""One simulated node per test module (the agent start-up is the slow part), networks net-a
and net-b, and the pod `good` that `kit.still_serving` adds and deletes after every case."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e import node as e2e_node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e_node.Node]:
    with e2e_node.running_node(tmp_path_factory.mktemp("badinput")) as n:
        n.bridge("net-a", octet=211, default_route=True)
        n.bridge("net-b", octet=212)
        n.pod("good", {"cni": "net-a,net-b"})
        yield n
