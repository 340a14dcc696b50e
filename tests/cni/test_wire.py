"""The shim<->agent request framing: decoding, every error class, round trips, properties."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genie.cni import errors, versions, wire

CONF = {"cniVersion": "1.0.0", "name": "genie", "plugins": [{"type": "genie"}]}


def env_for(command: str = "ADD", **extra: str) -> dict[str, str]:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "3f2a9c_x.y-z",
        "CNI_NETNS": "/var/run/netns/cni-1234",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0",
        "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v != "<unset>"}


def body_for(env: dict[str, str] | None = None, conf: Any = CONF) -> bytes:
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    return wire.encode_request(env if env is not None else env_for(), stdin)


def decode_error(body: bytes) -> errors.CniError:
    with pytest.raises(errors.CniError) as info:
        wire.decode_request(body)
    return info.value


def test_decode_add() -> None:
    stdin = json.dumps(CONF).encode()
    req = wire.decode_request(wire.encode_request(env_for(), stdin))
    assert req.command == "ADD"
    assert req.container_id == "3f2a9c_x.y-z"
    assert req.netns == "/var/run/netns/cni-1234"
    assert req.ifname == "eth0"
    assert req.args == (
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", "ns"),
        ("K8S_POD_NAME", "web-0"),
    )
    assert req.arg("K8S_POD_NAME") == "web-0"
    assert req.arg("K8S_POD_UID") is None
    assert req.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert req.config == CONF
    assert req.cni_version == "1.0.0"
    assert req.stdin == stdin
    assert req.getenv("CNI_IFNAME") == "eth0"
    assert dict(req.env) == env_for()


def test_framing_is_exactly_env_then_empty_entry_then_stdin() -> None:
    body = wire.encode_request({"CNI_COMMAND": "VERSION", "CNI_X": "a=b"}, b"\0raw")
    assert body == b"CNI_COMMAND=VERSION\0CNI_X=a=b\0\0\0raw"


def test_del_without_netns_and_repeated_args() -> None:
    env = env_for("DEL", CNI_NETNS="<unset>", CNI_ARGS="A=1;;B=x=y;A=2;")
    req = wire.decode_request(body_for(env))
    assert req.netns == ""
    assert req.args == (("A", "1"), ("B", "x=y"), ("A", "2"))
    assert req.arg("A") == "2"  # the last one wins, as in libcni


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_status_need_only_cni_path(command: str) -> None:
    env = {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"}
    conf = CONF | {"cniVersion": "1.1.0", "cni.dev/valid-attachments": []}
    req = wire.decode_request(body_for(env, conf))
    assert (req.command, req.container_id, req.ifname, req.path) == (
        command,
        "",
        "",
        ("/opt/cni/bin",),
    )


def test_version_needs_nothing() -> None:
    req = wire.decode_request(wire.encode_request({"CNI_COMMAND": "VERSION"}, b""))
    assert (req.command, req.config, req.cni_version) == ("VERSION", {}, versions.LATEST)
    req = wire.decode_request(body_for({"CNI_COMMAND": "VERSION"}, {"cniVersion": "0.2.0"}))
    assert req.cni_version == versions.LATEST
    req = wire.decode_request(body_for({"CNI_COMMAND": "VERSION"}, {"cniVersion": "0.4.0"}))
    assert req.cni_version == "0.4.0"


@pytest.mark.parametrize("version", versions.SUPPORTED)
def test_every_supported_version_decodes(version: str) -> None:
    assert wire.decode_request(body_for(conf=CONF | {"cniVersion": version})).cni_version == version


INVALID_ENV_CASES = [
    ({"CNI_COMMAND": "<unset>"}, "CNI_COMMAND"),
    ({"CNI_COMMAND": ""}, "CNI_COMMAND"),
    ({"CNI_COMMAND": "add"}, "unknown CNI_COMMAND"),
    ({"CNI_COMMAND": "REMOVE"}, "unknown CNI_COMMAND"),
    ({"CNI_CONTAINERID": "<unset>"}, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": ""}, "CNI_CONTAINERID"),
    ({"CNI_NETNS": "<unset>"}, "CNI_NETNS"),
    ({"CNI_IFNAME": ""}, "CNI_IFNAME"),
    ({"CNI_CONTAINERID": "-abc"}, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "abc/def"}, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "abc\n"}, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "a" * 257}, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "ünicode"}, "CNI_CONTAINERID"),
    ({"CNI_IFNAME": "a" * 16}, "CNI_IFNAME"),
    ({"CNI_IFNAME": "ééééééééé"}, "CNI_IFNAME"),  # 9 characters, 18 bytes
    ({"CNI_IFNAME": "."}, "CNI_IFNAME"),
    ({"CNI_IFNAME": ".."}, "CNI_IFNAME"),
    ({"CNI_IFNAME": "eth/0"}, "CNI_IFNAME"),
    ({"CNI_IFNAME": "eth:0"}, "CNI_IFNAME"),
    ({"CNI_IFNAME": "eth 0"}, "CNI_IFNAME"),
    ({"CNI_IFNAME": "eth\t0"}, "CNI_IFNAME"),
    ({"CNI_NETNS": "var/run/netns/x"}, "CNI_NETNS"),
    ({"CNI_ARGS": "A=1;B"}, "CNI_ARGS"),
    ({"CNI_ARGS": "=1"}, "CNI_ARGS"),
    ({"CNI_lower": "x"}, "CNI_[A-Z_]+"),
    ({"CNI_X1": "x"}, "CNI_[A-Z_]+"),
    ({"HOME": "/root"}, "CNI_[A-Z_]+"),
]


@pytest.mark.parametrize(("change", "words"), INVALID_ENV_CASES)
def test_invalid_env(change: dict[str, str], words: str) -> None:
    err = decode_error(body_for(env_for(**change)))
    assert err.code == errors.INVALID_ENV
    assert words in err.msg


def test_del_and_gc_requirements() -> None:
    err = decode_error(body_for(env_for("DEL", CNI_IFNAME="<unset>")))
    assert (err.code, "CNI_IFNAME" in err.msg) == (errors.INVALID_ENV, True)
    err = decode_error(body_for({"CNI_COMMAND": "GC"}, CONF | {"cniVersion": "1.1.0"}))
    assert (err.code, "CNI_PATH" in err.msg) == (errors.INVALID_ENV, True)
    err = decode_error(body_for(env_for("CHECK", CNI_NETNS="")))
    assert (err.code, "CNI_NETNS" in err.msg) == (errors.INVALID_ENV, True)


def test_limits() -> None:
    many = env_for() | {"CNI_" + "X" * (i + 1): "v" for i in range(60)}
    assert decode_error(body_for(many)).code == errors.INVALID_ENV
    long_entry = env_for(CNI_ARGS="A=" + "x" * 4096)
    assert decode_error(body_for(long_entry)).code == errors.INVALID_ENV
    ok_entry = env_for(CNI_ARGS="A=" + "x" * (4096 - len("CNI_ARGS=A=")))
    assert wire.decode_request(body_for(ok_entry)).arg("A") == "x" * 4085
    huge_stdin = json.dumps(CONF | {"pad": "x" * wire.MAX_STDIN}).encode()
    err = decode_error(wire.encode_request(env_for(), huge_stdin))
    assert err.code == errors.DECODE_FAILURE
    assert "exceeds" in err.msg
    err = decode_error(b"\0" + b" " * (wire.MAX_BODY))
    assert (err.code, "exceeds" in err.msg) == (errors.DECODE_FAILURE, True)


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"", errors.DECODE_FAILURE, "end-of-environment"),
        (b"CNI_COMMAND=ADD", errors.DECODE_FAILURE, "end-of-environment"),
        (b"CNI_COMMAND\0\0{}", errors.DECODE_FAILURE, "no '='"),
        (b"CNI_COMMAND=ADD\0CNI_COMMAND=DEL\0\0{}", errors.INVALID_ENV, "twice"),
        (b"CNI_COMMAND=\xff\0\0{}", errors.DECODE_FAILURE, "UTF-8"),
    ],
)
def test_bad_framing(body: bytes, code: int, words: str) -> None:
    err = decode_error(body)
    assert (err.code, words in err.msg) == (code, True), err


@pytest.mark.parametrize(
    ("stdin", "code", "words"),
    [
        (b"", errors.DECODE_FAILURE, "stdin"),
        (b"  \n", errors.DECODE_FAILURE, "stdin"),
        (b"{", errors.DECODE_FAILURE, "not JSON"),
        (b"[1, 2]", errors.DECODE_FAILURE, "JSON object"),
        (b'"text"', errors.DECODE_FAILURE, "JSON object"),
        (b'{"cniVersion": NaN}', errors.DECODE_FAILURE, "not JSON"),
        (b"\xff\xfe{}", errors.DECODE_FAILURE, "UTF-8"),
        (b"[" * 100000 + b"]" * 100000, errors.DECODE_FAILURE, "not JSON"),
        (b'{"name": "x"}', errors.INCOMPATIBLE_VERSION, "no cniVersion"),
        (b'{"cniVersion": ""}', errors.INCOMPATIBLE_VERSION, "no cniVersion"),
        (b'{"cniVersion": "0.2.0"}', errors.INCOMPATIBLE_VERSION, "0.2.0"),
        (b'{"cniVersion": "1.2.0"}', errors.INCOMPATIBLE_VERSION, "1.2.0"),
        (b'{"cniVersion": 1}', errors.INCOMPATIBLE_VERSION, "1"),
    ],
)
def test_bad_stdin(stdin: bytes, code: int, words: str) -> None:
    err = decode_error(wire.encode_request(env_for(), stdin))
    assert (err.code, words in err.msg) == (code, True), err


def test_reply_helpers() -> None:
    err = errors.CniError(errors.UNKNOWN_CONTAINER, 'no "such" container', "details")
    reply = wire.reply_for_error(err, "0.4.0")
    exit_code, body = reply
    assert exit_code == 1
    assert json.loads(body) == {
        "cniVersion": "0.4.0",
        "code": 3,
        "msg": 'no "such" container',
        "details": "details",
    }
    assert json.loads(wire.reply_for_error(err, None).body)["cniVersion"] == versions.LATEST
    assert reply.headers() == {"X-CNI-Exit-Code": "1"}
    ok = wire.reply_ok({"cniVersion": "1.0.0", "ips": []})
    assert ok == (0, b'{"cniVersion":"1.0.0","ips":[]}')
    assert wire.reply_ok() == (0, b"")
    assert wire.decode_reply(wire.encode_reply(reply)) == reply
    assert wire.decode_reply(wire.encode_reply(ok)) == ok
    for raw in (
        b"HTTP/1.1 500 Oops\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-CNI-Exit-Code: 0\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"garbage",
    ):
        with pytest.raises(ValueError):
            wire.decode_reply(raw)


def test_version_result_matches_versions() -> None:
    assert wire.version_result() == {
        "cniVersion": "1.1.0",
        "supportedVersions": list(versions.SUPPORTED),
    }


def test_encode_refuses_unframeable() -> None:
    for env in ({"CNI_A=B": "x"}, {"CNI_A": "x\0y"}, {"": "x"}):
        with pytest.raises(ValueError):
            wire.encode_request(env, b"")


# --- properties -----------------------------------------------------------------------------


def _valid_or_cni_error(body: bytes) -> None:
    try:
        req = wire.decode_request(body)
    except errors.CniError as err:
        assert isinstance(err.code, int)
        assert err.msg
        return
    assert req.command in wire.COMMANDS
    assert req.cni_version in versions.SUPPORTED
    assert isinstance(req.config, dict)
    for name in wire.REQUIRED[req.command]:
        assert req.getenv(name)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash(body: bytes) -> None:
    _valid_or_cni_error(body)


_names = st.one_of(
    st.sampled_from(
        [
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_ARGS",
            "CNI_PATH",
            "CNI_X",
        ]
    ),
    st.text(
        st.characters(exclude_characters="=\0", exclude_categories=["Cs"]),
        min_size=1,
        max_size=12,
    ),
)
_values = st.one_of(
    st.sampled_from(
        [
            "ADD",
            "DEL",
            "CHECK",
            "GC",
            "STATUS",
            "VERSION",
            "eth0",
            "/run/netns/x",
            "abc",
            "A=1;B=2",
            "/opt/cni/bin",
            "",
        ]
    ),
    st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"]), max_size=40),
)
_stdins = st.one_of(
    st.sampled_from([b"", b"{}", json.dumps(CONF).encode(), b'{"cniVersion":"1.1.0"}', b"[]"]),
    st.binary(max_size=80),
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_names, _values, max_size=8), _stdins)
def test_arbitrary_env_never_crashes(env: dict[str, str], stdin: bytes) -> None:
    _valid_or_cni_error(wire.encode_request(env, stdin))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["ADD", "DEL", "CHECK"]),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,80}", fullmatch=True),
    st.from_regex(r"[a-z][a-z0-9_]{0,14}", fullmatch=True),
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Z_]{1,10}", fullmatch=True),
            st.from_regex(r"[a-z0-9.=-]{0,10}", fullmatch=True),
        ),
        max_size=4,
    ),
    st.sampled_from(versions.SUPPORTED),
)
def test_round_trip(
    command: str, container_id: str, ifname: str, args: list[tuple[str, str]], version: str
) -> None:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_IFNAME": ifname,
        "CNI_NETNS": "/run/netns/p",
        "CNI_ARGS": ";".join(f"{k}={v}" for k, v in args),
        "CNI_PATH": "/a:/b",
    }
    conf = {"cniVersion": version, "name": "n", "type": "genie"}
    stdin = json.dumps(conf).encode()
    req = wire.decode_request(wire.encode_request(env, stdin))
    assert (req.command, req.container_id, req.ifname, req.netns) == (
        command,
        container_id,
        ifname,
        "/run/netns/p",
    )
    assert req.args == tuple(args)
    assert req.path == ("/a", "/b")
    assert (req.config, req.cni_version, req.stdin) == (conf, version, stdin)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.binary(min_size=1, max_size=12).filter(lambda b: b"=" not in b and b"\0" not in b),
            st.binary(max_size=30).filter(lambda b: b"\0" not in b),
        ),
        max_size=6,
    ),
    _stdins,
)
def test_arbitrary_env_bytes_never_crash(entries: list[tuple[bytes, bytes]], stdin: bytes) -> None:
    """Built like the shim does from os.environb: raw bytes, maybe not UTF-8."""
    prefix = [(b"CNI_COMMAND", b"ADD"), (b"CNI_CONTAINERID", b"c"), (b"CNI_IFNAME", b"e")]
    body = b"".join(k + b"=" + v + b"\0" for k, v in prefix + entries) + b"\0" + stdin
    _valid_or_cni_error(body)


def test_request_version_best_effort() -> None:
    assert (
        wire.request_version(body_for(env_for(CNI_IFNAME="a:b"), CONF | {"cniVersion": "0.4.0"}))
        == "0.4.0"
    )
    assert wire.request_version(body_for(conf={"cniVersion": "0.2.0"})) == versions.LATEST
    assert wire.request_version(b"garbage") == versions.LATEST
    assert wire.request_version(b"CNI_X=1\0\0[1]") == versions.LATEST
    assert wire.request_version(b"\0\0" + b"[" * 100000) == versions.LATEST
