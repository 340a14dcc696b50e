"""select_networks: the CNI-Genie and Multus annotation rules, every error, and a property test."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genie.cni import errors
from genie.networks import selection as sel
from genie.networks.selection import NetworkRequest as Req

GENIE = sel.GENIE_ANNOTATION
MULTUS = sel.MULTUS_ANNOTATION


def select(
    annotations: Mapping[str, str], *, default: str | None = "default-net", primary: str = "eth0"
) -> tuple[sel.NetworkRequest, ...]:
    return sel.select_networks(
        annotations, default_network=default, primary_ifname=primary, pod="ns/pod-1"
    )


def error(annotations: Mapping[str, str], **kw: Any) -> errors.CniError:
    with pytest.raises(errors.CniError) as info:
        select(annotations, **kw)
    return info.value


def ifnames(requests: tuple[sel.NetworkRequest, ...]) -> list[tuple[str, str]]:
    return [(r.name, r.ifname) for r in requests]


# --- neither annotation ---------------------------------------------------------------------


def test_default_network_alone() -> None:
    assert select({}) == (Req(name="default-net", namespace=None, ifname="eth0"),)
    assert select({"other": "x", GENIE: "  "}) == (
        Req(name="default-net", namespace=None, ifname="eth0"),
    )


def test_no_annotation_and_no_default_is_error_7() -> None:
    err = error({}, default=None)
    assert err.code == errors.INVALID_NETWORK_CONFIG
    assert err.msg == "pod ns/pod-1: no networks requested and no default network"


# --- CNI-Genie ---------------------------------------------------------------------------------


def test_genie_order_and_interface_names() -> None:
    assert ifnames(select({GENIE: "a,b, c"})) == [("a", "eth0"), ("b", "eth1"), ("c", "eth2")]


def test_genie_wins_over_multus_and_needs_no_default() -> None:
    requests = select({GENIE: "a", MULTUS: "b"}, default=None)
    assert requests == (Req(name="a", namespace=None, ifname="eth0"),)


def test_genie_explicit_names_are_skipped_by_auto_names() -> None:
    assert ifnames(select({GENIE: "a,b@eth1,c,d@eth3,e"})) == [
        ("a", "eth0"),
        ("b", "eth1"),
        ("c", "eth2"),
        ("d", "eth3"),
        ("e", "eth4"),
    ]


def test_genie_first_entry_may_name_its_own_interface() -> None:
    assert ifnames(select({GENIE: "a@data,b"})) == [("a", "data"), ("b", "eth1")]
    assert ifnames(select({GENIE: "a@eth1,b,c"})) == [("a", "eth1"), ("b", "eth2"), ("c", "eth3")]


def test_genie_prefix_follows_the_primary_ifname() -> None:
    assert ifnames(select({GENIE: "a,b,c"}, primary="net0")) == [
        ("a", "net0"),
        ("b", "net1"),
        ("c", "net2"),
    ]
    assert ifnames(select({GENIE: "a,b"}, primary="eth1")) == [("a", "eth1"), ("b", "eth2")]


def test_genie_same_network_twice_gives_two_interfaces() -> None:
    assert ifnames(select({GENIE: "a,a"})) == [("a", "eth0"), ("a", "eth1")]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("a,,b", "empty entry"),
        ("a,", "empty entry"),
        ("a@eth1,b@eth1", "'eth1' requested twice"),
        ("a b", "invalid network name 'a b'"),
        ("-a", "invalid network name '-a'"),
        ("a/b", "invalid network name 'a/b'"),
        ("a@", "invalid interface name ''"),
        ("a@eth/1", "invalid interface name 'eth/1'"),
        ("a@eth:1", "invalid interface name 'eth:1'"),
        ("a@..", "invalid interface name '..'"),
        ("a@.", "invalid interface name '.'"),
        ("a@abcdefghijklmnop", "invalid interface name 'abcdefghijklmnop'"),
        ("a@x@y", "invalid interface name 'x@y'"),
        (",".join(["a"] * 33), "more than 32"),
    ],
)
def test_genie_errors(value: str, needle: str) -> None:
    err = error({GENIE: value})
    assert err.code == errors.INVALID_NETWORK_CONFIG
    assert err.msg.startswith("pod ns/pod-1: ")
    assert needle in err.msg


def test_genie_duplicate_explicit_primary() -> None:
    err = error({GENIE: "a,b@eth0"})
    assert "'eth0' requested twice" in err.msg


def test_genie_32_networks_allowed() -> None:
    assert len(select({GENIE: ",".join(["a"] * 32)})) == 32


def test_derived_name_too_long() -> None:
    err = error({GENIE: "a,b"}, primary="abcdefghijklmno")
    assert "derived interface name" in err.msg


def test_invalid_primary_ifname_is_invalid_env() -> None:
    assert error({}, primary="").code == errors.INVALID_ENV
    assert error({}, primary="a/b").code == errors.INVALID_ENV


def test_annotation_size_limit() -> None:
    err = error({GENIE: "a" + " " * sel.MAX_ANNOTATION_BYTES})
    assert "larger than" in err.msg
    err = error({MULTUS: "é" * (sel.MAX_ANNOTATION_BYTES // 2 + 1)})
    assert "larger than" in err.msg


# --- Multus text ---------------------------------------------------------------------------


def test_multus_text() -> None:
    assert select({MULTUS: "a, other/b@data, c"}) == (
        Req(name="default-net", namespace=None, ifname="eth0"),
        Req(name="a", namespace=None, ifname="net1", attachment_definition=True),
        Req(name="b", namespace="other", ifname="data", attachment_definition=True),
        Req(name="c", namespace=None, ifname="net3", attachment_definition=True),
    )


def test_multus_needs_a_default_network() -> None:
    err = error({MULTUS: "a"}, default=None)
    assert err.code == errors.INVALID_NETWORK_CONFIG
    assert MULTUS in err.msg
    assert "default network" in err.msg


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("a,,b", "empty entry"),
        ("a/b/c", "invalid network name 'b/c'"),
        ("Bad_NS/a", "invalid namespace 'Bad_NS'"),
        ("/a", "invalid namespace ''"),
        ("ns/", "invalid network name ''"),
        ("a@eth0", "'eth0' requested twice"),
        ("a@net2,b", "'net2' requested twice"),
        ("a@x@y", "invalid interface name 'x@y'"),
        ("a@b c", "invalid interface name 'b c'"),
        (",".join(["a"] * 32), "more than 32"),
    ],
)
def test_multus_text_errors(value: str, needle: str) -> None:
    err = error({MULTUS: value})
    assert err.code == errors.INVALID_NETWORK_CONFIG
    assert err.msg.startswith("pod ns/pod-1: ")
    assert needle in err.msg


# --- Multus JSON ---------------------------------------------------------------------------


def test_multus_json_full() -> None:
    value = json.dumps(
        [
            {
                "name": "a",
                "namespace": "tenants",
                "interface": "data0",
                "ips": ["10.1.0.5/24", "fd00::5"],
                "mac": "c2:00:00:00:00:01",
                "default-route": ["10.1.0.1"],
                "cni-args": {"foo": "bar"},
            },
            {"name": "b"},
        ]
    )
    requests = select({MULTUS: value})
    assert requests[0] == Req(name="default-net", namespace=None, ifname="eth0")
    a = requests[1]
    assert (a.name, a.namespace, a.ifname) == ("a", "tenants", "data0")
    assert a.ips == ("10.1.0.5/24", "fd00::5")
    assert a.mac == "c2:00:00:00:00:01"
    assert a.default_route == ("10.1.0.1",)
    assert a.attachment_definition and not requests[0].attachment_definition
    assert a.cni_args == {"foo": "bar"}
    assert requests[2] == Req(name="b", namespace=None, ifname="net2", attachment_definition=True)


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ("[{]", "not valid JSON"),
        ('{"name": "a"}', "JSON list"),
        ("[1]", "entry 0 is not an object"),
        ("[{}]", "invalid network name None"),
        ('[{"name": 5}]', "invalid network name 5"),
        ('[{"name": "a", "namespace": 3}]', "invalid namespace 3"),
        ('[{"name": "a", "namespace": "A"}]', "invalid namespace 'A'"),
        ('[{"name": "a", "interface": "x/y"}]', "invalid interface name 'x/y'"),
        ('[{"name": "a", "interface": 1}]', "invalid interface name 1"),
        ('[{"name": "a", "ips": "10.0.0.1"}]', "ips must be a list of strings"),
        ('[{"name": "a", "ips": [1]}]', "ips must be a list of strings"),
        ('[{"name": "a", "ips": ["10.0.0.256"]}]', "invalid IP address '10.0.0.256'"),
        ('[{"name": "a", "ips": ["10.0.0.1/33"]}]', "invalid IP address '10.0.0.1/33'"),
        ('[{"name": "a", "mac": "zz:00:00:00:00:00"}]', "invalid MAC address"),
        ('[{"name": "a", "mac": 5}]', "invalid MAC address 5"),
        ('[{"name": "a", "default-route": ["10.0.0.1/24"]}]', "invalid default-route"),
        ('[{"name": "a", "cni-args": []}]', "cni-args must be an object"),
        ('[{"name": "a", "interface": "eth0"}]', "'eth0' requested twice"),
        (json.dumps([{"name": "a"}] * 32), "more than 32"),
    ],
)
def test_multus_json_errors(doc: str, needle: str) -> None:
    err = error({MULTUS: doc})
    assert err.code == errors.INVALID_NETWORK_CONFIG
    assert err.msg.startswith("pod ns/pod-1: ")
    assert needle in err.msg


def test_valid_helpers() -> None:
    assert sel.valid_mac("c2-00-00-00-00-01")
    assert not sel.valid_mac("c2:00-00:00:00:01")
    assert sel.valid_ip("fd00::1/64")
    assert not sel.valid_ip("fd00::1/64", cidr=False)
    assert sel.valid_ifname("a" * 15)
    assert not sel.valid_ifname("a" * 16)
    assert not sel.valid_ifname("a\tb")


# --- property: valid requests or CniError, nothing else ----------------------------------------

_pieces = st.sampled_from(
    ["a", "b", "net-1", "@", ",", "/", "eth", "0", "1", "@eth1", "ns/", " ", "..", ":", "é", ""]
)
_texts = st.one_of(
    st.text(max_size=60),
    st.lists(_pieces, max_size=12).map("".join),
)
_json_item = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.sampled_from(["a", "b", "c-1"]), st.text(max_size=5), st.integers()),
        "namespace": st.one_of(st.none(), st.sampled_from(["ns", "NS"]), st.integers()),
        "interface": st.one_of(st.sampled_from(["", "eth0", "net1", "x/y"]), st.text(max_size=4)),
        "ips": st.one_of(
            st.lists(st.sampled_from(["10.0.0.1", "10.0.0.1/24", "x", "::1"]), max_size=3),
            st.text(max_size=3),
        ),
        "mac": st.one_of(st.none(), st.sampled_from(["c2:00:00:00:00:01", "zz"])),
        "default-route": st.lists(st.sampled_from(["10.0.0.1", "bad"]), max_size=2),
        "cni-args": st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.integers())),
    },
)
_json_texts = st.lists(st.one_of(_json_item, st.integers(), st.text(max_size=3)), max_size=4).map(
    json.dumps
)
_annotations = st.dictionaries(
    st.sampled_from([GENIE, MULTUS, "other"]),
    st.one_of(_texts, _json_texts),
    max_size=3,
)


def _assert_valid(requests: tuple[sel.NetworkRequest, ...], primary: str) -> None:
    assert 1 <= len(requests) <= sel.MAX_NETWORKS
    names = [r.ifname for r in requests]
    assert len(set(names)) == len(names)
    for r in requests:
        assert isinstance(r, sel.NetworkRequest)
        assert sel.valid_network_name(r.name)
        assert sel.valid_ifname(r.ifname)
        assert r.namespace is None or sel.valid_namespace(r.namespace)
        assert all(sel.valid_ip(ip) for ip in r.ips)
        assert r.mac is None or sel.valid_mac(r.mac)


@settings(max_examples=400, deadline=None)
@given(
    annotations=_annotations,
    default=st.one_of(st.none(), st.sampled_from(["default-net", "bad name"])),
    primary=st.sampled_from(["eth0", "net5", "x", "", "abcdefghijklmno"]),
)
def test_property_valid_requests_or_cni_error(
    annotations: dict[str, str], default: str | None, primary: str
) -> None:
    try:
        requests = sel.select_networks(
            annotations, default_network=default, primary_ifname=primary, pod="ns/p"
        )
    except errors.CniError as exc:
        assert exc.code in {errors.INVALID_NETWORK_CONFIG, errors.INVALID_ENV}
        assert exc.msg.startswith("pod ns/p: ")
        return
    _assert_valid(requests, primary)
