"""NetworkAttachmentDefinition resolution (genie.k8s.nads) against a real apiserver.

Multus rules: the pod's namespace unless `ns/name`; empty spec.config = the net-dir network
of that name; spec.config a conf or conflist; unknown or unusable = UnknownNetworkError
naming the NAD; updates and deletions are seen through the watch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from genie.k8s import client as k8s_client
from genie.k8s import nads, watch
from genie.networks import registry as reg
from genie.services import plan
from tests.k8s import kube as kube_mod

pytestmark = [pytest.mark.k8s, pytest.mark.anyio]

FAST = watch.Backoff(base=0.05, cap=0.5)


def bridge(name: str, bridge_name: str = "gbr0") -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": bridge_name}


@pytest.fixture
def registry(net_dir: Path) -> reg.NetworkRegistry:
    (net_dir / "10-file-net.conf").write_text(json.dumps(bridge("file-net", "gbr-file")))
    return reg.NetworkRegistry(net_dir)


async def test_resolution_rules(
    kube: kube_mod.Kube,
    agent_client: k8s_client.Client,
    registry: reg.NetworkRegistry,
) -> None:
    ns_a = await kube.create_namespace()
    ns_b = await kube.create_namespace()
    await kube.create_nad(namespace=ns_a, name="tenant", config=bridge("tenant", "gbr-a"))
    await kube.create_nad(namespace=ns_b, name="tenant", config=bridge("tenant", "gbr-b"))
    await kube.create_nad(namespace=ns_a, name="file-net", config=None)
    await kube.create_nad(namespace=ns_a, name="blank", config="  ")
    await kube.create_nad(namespace=ns_a, name="no-file", config=None)
    await kube.create_nad(namespace=ns_a, name="bad-json", config="{not json")
    await kube.create_nad(
        namespace=ns_a,
        name="chain",
        config={
            "cniVersion": "1.0.0",
            "plugins": [{"type": "bridge", "bridge": "gbr-c"}, {"type": "tuning"}],
        },
    )
    await kube.create_nad(
        namespace=ns_a, name="loop", config={"cniVersion": "1.0.0", "type": "genie"}
    )
    await kube.create_nad(namespace=ns_a, name="huge", config="x" * (nads.MAX_CONFIG_BYTES + 1))
    d = nads.AttachmentDefinitions(agent_client, registry=registry, backoff=FAST)
    async with kube_mod.background(d.run):
        await kube_mod.eventually(d.ready)
        # the pod's namespace...
        assert d.resolve(namespace=ns_a, name="tenant").plugins[0]["bridge"] == "gbr-a"
        assert d.resolve(namespace=ns_b, name="tenant").plugins[0]["bridge"] == "gbr-b"
        # ...unless the request names one
        assert d.resolve(namespace=ns_a, name=f"{ns_b}/tenant").plugins[0]["bridge"] == "gbr-b"
        # empty config: the net-dir network of that name
        from_file = d.resolve(namespace=ns_a, name="file-net")
        assert from_file.plugins[0]["bridge"] == "gbr-file"
        assert from_file.source.name == "10-file-net.conf"
        with pytest.raises(nads.UnknownAttachmentError, match=f"{ns_a}/blank"):
            d.resolve(namespace=ns_a, name="blank")  # blank = empty: no net-dir file "blank"
        # a conflist without a name takes the NAD's
        chain = d.resolve(namespace=ns_a, name="chain")
        assert chain.name == "chain"
        assert [p["type"] for p in chain.plugins] == ["bridge", "tuning"]
        cases = {
            "no-file": "no spec.config and no network",
            "bad-json": "not JSON",
            "loop": "genie itself",
            "huge": "larger than",
            "missing": "not found",
        }
        for name, why in cases.items():
            with pytest.raises(reg.UnknownNetworkError, match=why) as info:
                d.resolve(namespace=ns_a, name=name)
            assert f"{ns_a}/{name}" in str(info.value)
        # what genie.services.plan calls: (namespace, name) positionally
        resolver: plan.AttachmentDefinitions = d  # mypy checks the signature
        assert resolver(ns_a, "tenant") == d.resolve(namespace=ns_a, name="tenant")
        # a NAD of the same name in another namespace is not used
        with pytest.raises(nads.UnknownAttachmentError):
            d.resolve(namespace=ns_b, name="chain")
        assert d.gets == 0


async def test_updates_and_deletes_are_seen(
    kube: kube_mod.Kube,
    agent_client: k8s_client.Client,
    registry: reg.NetworkRegistry,
    namespace: str,
) -> None:
    d = nads.AttachmentDefinitions(agent_client, registry=registry, backoff=FAST)
    async with kube_mod.background(d.run):
        await kube_mod.eventually(d.ready)
        await kube.create_nad(namespace=namespace, name="n", config=bridge("n", "gbr-1"))

        def bridge_of() -> str | None:
            try:
                return str(d.resolve(namespace=namespace, name="n").plugins[0]["bridge"])
            except reg.UnknownNetworkError:
                return None

        await kube_mod.eventually(lambda: bridge_of() == "gbr-1", what="created NAD")
        await kube.update_nad(namespace=namespace, name="n", config=bridge("n", "gbr-2"))
        await kube_mod.eventually(lambda: bridge_of() == "gbr-2", what="updated NAD")
        await kube.delete_nad(namespace=namespace, name="n")
        await kube_mod.eventually(lambda: bridge_of() is None, what="deleted NAD")


async def test_get_finds_a_nad_created_a_moment_before(
    kube: kube_mod.Kube,
    agent_client: k8s_client.Client,
    registry: reg.NetworkRegistry,
    namespace: str,
) -> None:
    d = nads.AttachmentDefinitions(agent_client, registry=registry, backoff=FAST, get_wait=0)
    async with kube_mod.background(d.run):
        await kube_mod.eventually(d.ready)
        await kube.create_nad(namespace=namespace, name="fresh", config=bridge("fresh"))
        config = await d.get(namespace=namespace, name="fresh")
        assert config.name == "fresh"
        with pytest.raises(nads.UnknownAttachmentError, match="not found"):
            await d.get(namespace=namespace, name="absent")
        assert d.gets >= 1
