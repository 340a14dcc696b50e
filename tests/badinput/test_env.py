"""What the runtime hands the shim: stdin and CNI_* variables, each wrong in every usual way.

All through the installed shim and the running agent. Each case: the spec's error code, a
message saying what is wrong, no stored state or event changed, and the agent keeps serving.
"""

from __future__ import annotations

import json

import pytest

from genie.cni import errors, wire
from tests.badinput import kit
from tests.e2e import node as e2e_node

pytestmark = pytest.mark.netns

BAD_STDIN = {
    "empty": (b"", "needs the network configuration"),
    "whitespace": (b" \n\t ", "needs the network configuration"),
    "not json": (b"this is not json", "not JSON"),
    "truncated": (b'{"cniVersion": "1.0.0", "name": ', "not JSON"),
    "list": (b'["cniVersion", "1.0.0"]', "must be a JSON object"),
    "string": (b'"1.0.0"', "must be a JSON object"),
    "not utf-8": (b'{"cniVersion": "1.0.0", "name": "\xff\xfe"}', "not UTF-8"),
    "NaN": (b'{"cniVersion": "1.0.0", "mtu": NaN}', "not JSON"),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    "nul bytes": (b"\0\0\0\0", "not JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_STDIN))
def test_malformed_stdin_is_a_decode_failure(node: e2e_node.Node, case: str) -> None:
    stdin, needle = BAD_STDIN[case]
    sandbox = node.sandbox("good")
    with kit.refused_without_trace(node):
        err = kit.error(kit.shim(node, env=kit.cni_env(node, sandbox), stdin=stdin))
    assert err["code"] == errors.DECODE_FAILURE and needle in err["msg"], err


def test_stdin_over_one_mib_is_refused(node: e2e_node.Node) -> None:
    sandbox = node.sandbox("good")
    pad = "x" * (wire.MAX_STDIN + 10)
    stdin = kit.good_stdin(node, padding=pad)
    with kit.refused_without_trace(node):
        err = kit.error(kit.shim(node, env=kit.cni_env(node, sandbox), stdin=stdin))
    assert err["code"] == errors.DECODE_FAILURE, err
    assert f"limit of {wire.MAX_STDIN} bytes" in err["msg"], err


DROP = "<drop>"  # the variable is not set at all
# (variable changes, expected code, words the message must hold)
BAD_ENV: dict[str, tuple[dict[str, str], int, str]] = {
    "no CNI_COMMAND": ({"CNI_COMMAND": DROP}, 4, "CNI_COMMAND is missing"),
    "empty CNI_COMMAND": ({"CNI_COMMAND": ""}, 4, "CNI_COMMAND is missing"),
    "unknown CNI_COMMAND": ({"CNI_COMMAND": "DESTROY"}, 4, "unknown CNI_COMMAND 'DESTROY'"),
    "lower-case command": ({"CNI_COMMAND": "add"}, 4, "unknown CNI_COMMAND 'add'"),
    "no CNI_CONTAINERID": ({"CNI_CONTAINERID": DROP}, 4, "CNI_CONTAINERID is missing"),
    "empty CNI_CONTAINERID": ({"CNI_CONTAINERID": ""}, 4, "CNI_CONTAINERID is missing"),
    "no CNI_NETNS": ({"CNI_NETNS": DROP}, 4, "CNI_NETNS is missing"),
    "empty CNI_NETNS": ({"CNI_NETNS": ""}, 4, "CNI_NETNS is missing"),
    "no CNI_IFNAME": ({"CNI_IFNAME": DROP}, 4, "CNI_IFNAME is missing"),
    "empty CNI_IFNAME": ({"CNI_IFNAME": ""}, 4, "CNI_IFNAME is missing"),
    "ifname 16 bytes": ({"CNI_IFNAME": "e" * 16}, 4, "not a valid interface name"),
    "ifname with /": ({"CNI_IFNAME": "eth/0"}, 4, "'eth/0' is not a valid interface name"),
    "ifname ..": ({"CNI_IFNAME": ".."}, 4, "not a valid interface name"),
    "ifname with space": ({"CNI_IFNAME": "eth 0"}, 4, "not a valid interface name"),
    "ifname with colon": ({"CNI_IFNAME": "eth0:1"}, 4, "not a valid interface name"),
    "container ../": ({"CNI_CONTAINERID": "../../etc/passwd"}, 4, "CNI_CONTAINERID"),
    "container with /": ({"CNI_CONTAINERID": "abc/def"}, 4, "CNI_CONTAINERID"),
    "container absolute": ({"CNI_CONTAINERID": "/var/lib/genie"}, 4, "CNI_CONTAINERID"),
    "container hidden": ({"CNI_CONTAINERID": ".abc"}, 4, "CNI_CONTAINERID"),
    "container newline": ({"CNI_CONTAINERID": "abc\ndef"}, 4, "CNI_CONTAINERID"),
    "container too long": ({"CNI_CONTAINERID": "a" * 300}, 4, "at most 256"),
    "netns missing": ({"CNI_NETNS": "/run/netns/genie-t-gone-0000"}, 4, "does not exist"),
    "netns relative": ({"CNI_NETNS": "run/netns/x"}, 4, "not an absolute path"),
    "CNI_ARGS no =": ({"CNI_ARGS": "K8S_POD_NAME"}, 4, "is not KEY=VALUE"),
    "CNI_ARGS empty key": ({"CNI_ARGS": "=x"}, 4, "is not KEY=VALUE"),
    "unknown CNI_ lowercase": ({"CNI_path": "/x"}, 4, "is not CNI_[A-Z_]+"),
    "entry over 4 KiB": ({"CNI_ARGS": "A=" + "b" * 5000}, 4, "longer than 4096 bytes"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENV))
def test_bad_environment_is_an_invalid_env_error(node: e2e_node.Node, case: str) -> None:
    changes, code, needle = BAD_ENV[case]
    sandbox = node.sandbox("good")
    env = kit.cni_env(node, sandbox, **{k: None if v == DROP else v for k, v in changes.items()})
    with kit.refused_without_trace(node):
        err = kit.error(kit.shim(node, env=env, stdin=kit.good_stdin(node)))
    assert err["code"] == code and needle in err["msg"] + err.get("details", ""), err


@pytest.mark.parametrize("command", ["DEL", "CHECK"])
def test_other_commands_check_their_variables_too(node: e2e_node.Node, command: str) -> None:
    sandbox = node.sandbox("good")
    env = kit.cni_env(node, sandbox, command, CNI_CONTAINERID="../x")
    with kit.refused_without_trace(node):
        err = kit.error(kit.shim(node, env=env, stdin=kit.good_stdin(node)))
    assert err["code"] == errors.INVALID_ENV and "CNI_CONTAINERID" in err["msg"], err


@pytest.mark.parametrize(
    ("version", "needle"),
    [
        ("9.9.9", "unsupported cniVersion '9.9.9'"),
        ("0.2.0", "unsupported cniVersion '0.2.0'"),
        ("", "has no cniVersion"),
        (None, "has no cniVersion"),
        (1.0, "unsupported cniVersion 1.0"),
    ],
)
def test_unsupported_cni_version(node: e2e_node.Node, version: object, needle: str) -> None:
    sandbox = node.sandbox("good")
    conf = json.loads(kit.good_stdin(node))
    if version is None:
        del conf["cniVersion"]
    else:
        conf["cniVersion"] = version
    with kit.refused_without_trace(node):
        reply = kit.shim(node, env=kit.cni_env(node, sandbox), stdin=json.dumps(conf).encode())
        err = kit.error(reply)
    assert err["code"] == errors.INCOMPATIBLE_VERSION and needle in err["msg"], err
    assert "1.1.0" in err.get("details", ""), err  # it says what would have worked


def test_netns_that_is_not_a_namespace_is_refused(node: e2e_node.Node) -> None:
    """An existing path that is no netns: every delegate (and its DEL) would fail on it."""
    sandbox = node.sandbox("good")
    not_netns = node.root / "not-a-netns"
    not_netns.write_text("")
    env = kit.cni_env(node, sandbox, CNI_NETNS=str(not_netns))
    with kit.refused_without_trace(node):
        err = kit.error(kit.shim(node, env=env, stdin=kit.good_stdin(node)))
    assert err["code"] == errors.INVALID_ENV and "is not a network namespace" in err["msg"], err
    del_env = {**env, "CNI_COMMAND": "DEL"}
    assert kit.shim(node, env=del_env, stdin=kit.good_stdin(node)).exit_code == 0
