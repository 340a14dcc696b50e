"""Raw bytes on the agent's unix socket (what no shim sends) and clients that never finish.

Garbage gets an HTTP error or a CNI error and changes nothing; silent, half-sent and slow
clients do not stop the agent serving others, and are dropped after a bounded time
(server.IDLE_TIMEOUT without a complete request, server.BODY_TIMEOUT for a body).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from genie.cni import errors, wire
from genie.daemon import server
from tests.badinput import kit
from tests.e2e import node as e2e_node

pytestmark = pytest.mark.netns

HTTP_GARBAGE = {
    "binary": (b"\x00\xff\xfe garbage \r\n\r\n", b" 400 "),
    # aiohttp reads this as HTTP/0.9: the empty body then is a CNI decode error (code 6)
    "no http version": (b"POST /v1/cni\r\nHost: g\r\n\r\n", b'"code":6'),
    "no host header": (b"POST /v1/cni HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b" 400 "),
    "bad content-length": (b"POST /v1/cni HTTP/1.1\r\nContent-Length: abc\r\n\r\n", b" 400 "),
    "negative length": (b"POST /v1/cni HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b" 400 "),
    "bad chunking": (
        b"POST /v1/cni HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n",
        b" 400 ",
    ),
    "header line too long": (b"GET /readyz HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", b" 4"),
    "unknown path": (b"POST /v1/exec HTTP/1.1\r\nHost: g\r\nContent-Length: 0\r\n\r\n", b" 404 "),
    "wrong method": (b"GET /v1/cni HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n", b" 405 "),
    "http/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b" 40"),
}


@pytest.mark.parametrize("case", sorted(HTTP_GARBAGE))
def test_http_garbage_gets_an_http_error(node: e2e_node.Node, case: str) -> None:
    data, status = HTTP_GARBAGE[case]
    with kit.refused_without_trace(node):
        reply = kit.raw_exchange(node, data)
    first_line, _, rest = reply.partition(b"\r\n")
    assert status in (first_line if status.startswith(b" ") else rest), reply[:300]


def _post(body: bytes, *, length: int | None = None) -> bytes:
    head = f"POST {wire.PATH} HTTP/1.1\r\nHost: genie\r\nConnection: close\r\n"
    head += f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    return head.encode() + body


CNI_GARBAGE = {
    "no framing": (b"not the framing at all", errors.DECODE_FAILURE),
    "env without =": (b"CNI_COMMAND\0\0{}", errors.DECODE_FAILURE),
    "env not utf-8": (b"CNI_COMMAND=\xff\0\0{}", errors.DECODE_FAILURE),
    "non-CNI variable": (b"LD_PRELOAD=/x.so\0CNI_COMMAND=STATUS\0\0{}", errors.INVALID_ENV),
    "variable twice": (b"CNI_COMMAND=ADD\0CNI_COMMAND=DEL\0\0{}", errors.INVALID_ENV),
    "65 variables": (
        b"".join(b"CNI_X" + bytes([65 + i // 26, 65 + i % 26]) + b"=1\0" for i in range(65))
        + b"\0{}",
        errors.INVALID_ENV,
    ),
    "body over 2 MiB": (b"CNI_COMMAND=ADD\0\0" + b" " * (3 << 20), errors.DECODE_FAILURE),
}


@pytest.mark.parametrize("case", sorted(CNI_GARBAGE))
def test_malformed_cni_bodies_get_cni_errors(node: e2e_node.Node, case: str) -> None:
    body, code = CNI_GARBAGE[case]
    with kit.refused_without_trace(node):
        reply = wire.decode_reply(kit.raw_exchange(node, _post(body)))
    assert reply.exit_code == 1
    err = json.loads(reply.body)
    assert err["code"] == code and err["msg"], err


@pytest.fixture
def silent_clients(node: e2e_node.Node) -> Iterator[list[socket.socket]]:
    """50 connections that send nothing, one stuck mid-headers, one stuck mid-body."""
    socks: list[socket.socket] = []
    try:
        for _ in range(50):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            socks.append(s)
            s.connect(str(node.socket))
        socks[-1].sendall(b"POST /v1/cni HTTP/1.1\r\nHost: gen")  # headers never finish
        socks[-2].sendall(_post(b"CNI_COMMAND=ADD\0", length=1000))  # body never finishes
        yield socks
    finally:
        for s in socks:
            s.close()


def test_clients_that_never_send_are_dropped_and_others_served(
    node: e2e_node.Node, silent_clients: list[socket.socket]
) -> None:
    started = time.monotonic()
    kit.still_serving(node)  # the agent serves others while they hang on
    assert time.monotonic() - started < server.IDLE_TIMEOUT, "serving took too long to judge"
    bound = max(server.IDLE_TIMEOUT, server.BODY_TIMEOUT) + 5.0
    replies: dict[int, bytes] = {}
    for i, s in enumerate(silent_clients):
        s.settimeout(max(0.1, started + bound - time.monotonic()))
        try:
            replies[i] = s.recv(4096)
        except TimeoutError:
            pytest.fail(f"connection {i} still held {bound:.0f} s after it opened")
    waited = time.monotonic() - started
    assert replies[len(silent_clients) - 2].startswith(b"HTTP/1.1 408"), replies
    closed = [i for i, r in replies.items() if r == b""]
    assert len(closed) == len(silent_clients) - 1, replies  # the silent and half-sent ones
    print(f"\nsilent clients dropped after {waited:.1f} s")
    assert node.state() == []  # nothing was recorded for them
    kit.still_serving(node)
