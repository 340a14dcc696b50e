"""Pod annotations wrong in every way genie parses them: CNI-Genie `cni`, Multus text and JSON.

Each is an ADD through the shim for a pod whose manifest carries the bad annotation: error 7
naming the pod (and the value where there is one), nothing recorded, nothing in the pod's
namespace, and the agent keeps serving.
"""

from __future__ import annotations

import pytest

from genie.cni import errors
from genie.networks import selection
from tests.badinput import kit
from tests.e2e import node as e2e_node
from tests.e2e import truth

pytestmark = pytest.mark.netns

GENIE = selection.GENIE_ANNOTATION
MULTUS = selection.MULTUS_ANNOTATION
TOO_MANY = ",".join(["net-a"] * (selection.MAX_NETWORKS + 1))

# case -> (annotation key, value, words the message must hold besides the pod's name)
CASES: dict[str, tuple[str, str, str]] = {
    "cni empty entry": (GENIE, "net-a,,net-b", "empty entry"),
    "cni only commas": (GENIE, ",", "empty entry"),
    "cni trailing comma": (GENIE, "net-a,", "empty entry"),
    "cni unknown network": (GENIE, "net-a,nope", "'nope'"),
    "cni bad name": (GENIE, "net a", "invalid network name 'net a'"),
    "cni shell text": (GENIE, "net-a;rm -rf /", "invalid network name"),
    "cni path name": (GENIE, "../net-a", "invalid network name '../net-a'"),
    "cni empty ifname": (GENIE, "net-a@", "invalid interface name ''"),
    "cni ifname slash": (GENIE, "net-a@a/b", "invalid interface name 'a/b'"),
    "cni ifname too long": (GENIE, "net-a@" + "x" * 16, "invalid interface name"),
    "cni double @": (GENIE, "net-a@x@y", "invalid interface name"),
    "cni same ifname": (GENIE, "net-a@eth0,net-b@eth0", "'eth0' requested twice"),
    "cni too many": (GENIE, TOO_MANY, f"more than {selection.MAX_NETWORKS}"),
    "multus empty entry": (MULTUS, "net-b,,net-a", "empty entry"),
    "multus bad namespace": (MULTUS, "Bad_NS/net-b", "invalid namespace 'Bad_NS'"),
    "multus empty name": (MULTUS, "default/", "invalid network name ''"),
    "multus empty ifname": (MULTUS, "net-b@", "invalid interface name ''"),
    "multus unknown": (MULTUS, "ghost", "'ghost'"),
    "multus too many": (MULTUS, TOO_MANY, f"more than {selection.MAX_NETWORKS}"),
    "json truncated": (MULTUS, '[{"name": "net-b"', "not valid JSON"),
    "json object": (MULTUS, '{"name": "net-b"}', "must be a JSON list"),
    "json not objects": (MULTUS, "[1, 2]", "entry 0 is not an object"),
    "json name number": (MULTUS, '[{"name": 5}]', "invalid network name 5"),
    "json no name": (MULTUS, '[{"interface": "x"}]', "invalid network name None"),
    "json bad namespace": (MULTUS, '[{"name": "net-b", "namespace": "A B"}]', "namespace"),
    "json bad interface": (MULTUS, '[{"name": "net-b", "interface": "a/b"}]', "'a/b'"),
    "json ips not list": (MULTUS, '[{"name": "net-b", "ips": "10.0.0.1"}]', "ips must be"),
    "json bad ip": (MULTUS, '[{"name": "net-b", "ips": ["10.0.0.300/24"]}]', "10.0.0.300"),
    "json bad mac": (MULTUS, '[{"name": "net-b", "mac": "zz:zz"}]', "invalid MAC"),
    "json bad gateway": (MULTUS, '[{"name": "net-b", "default-route": ["x"]}]', "gateway"),
    "json cni-args list": (MULTUS, '[{"name": "net-b", "cni-args": [1]}]', "cni-args"),
    "json deep nesting": (MULTUS, "[" * 30_000 + "]" * 30_000, "not valid JSON"),
    "json same ifname": (
        MULTUS,
        '[{"name": "net-b", "interface": "x"}, {"name": "net-a", "interface": "x"}]',
        "'x' requested twice",
    ),
    "cni over 64 KiB": (GENIE, "net-a," * 12_000 + "net-b", "larger than 65536 bytes"),
    "multus over 64 KiB": (MULTUS, "[" + " " * 70_000 + "]", "larger than 65536 bytes"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_annotation_is_a_config_error_naming_the_pod(node: e2e_node.Node, case: str) -> None:
    key, value, needle = CASES[case]
    pod = f"bad-{sorted(CASES).index(case)}"
    node.pod(pod, {key: value})
    sandbox = node.sandbox(pod)
    with kit.refused_without_trace(node):
        err = kit.error(node.cni("ADD", sandbox))
        assert truth.links(sandbox.netns) == ["lo"]
    assert err["code"] == errors.INVALID_NETWORK_CONFIG, err
    assert f"pod default/{pod}" in err["msg"] and needle in err["msg"], err
    assert len(err["msg"]) < 4096, "a huge annotation must not be echoed back whole"
    # kubelet's DEL after the failed ADD: nothing was recorded, so it simply succeeds
    assert node.cni("DEL", sandbox).exit_code == 0


def test_empty_annotations_fall_back_to_the_default_network(node: e2e_node.Node) -> None:
    """Not an error: an empty annotation asks for nothing special (documented behaviour)."""
    node.pod("blank", {GENIE: "  ", MULTUS: ""})
    sandbox = node.sandbox("blank")
    assert node.cni("ADD", sandbox).exit_code == 0
    assert list(truth.addresses(sandbox.netns)) == ["eth0"]
    assert node.cni("DEL", sandbox).exit_code == 0
    assert node.allocations() == {}
