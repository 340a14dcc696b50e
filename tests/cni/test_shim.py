"""The shim as the runtime runs it: an executable given CNI env and stdin, talking to a socket."""

from __future__ import annotations

import ast
import json
import os
import pathlib
import socket
import subprocess
import time
from typing import Any

import anyio
import pytest
from aiohttp import web

from genie.cni import errors, shim, versions, wire
from tests.cni import conftest

pytestmark = pytest.mark.anyio

CONF = {"cniVersion": "1.0.0", "name": "genie", "type": "genie", "socket": "/x"}
STDIN = json.dumps(CONF).encode()


def runtime_env(command: str, **extra: str) -> dict[str, str]:
    """What containerd passes: its own environment plus the CNI variables."""
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "0123456789abcdef",
        "CNI_NETNS": "/var/run/netns/cni-0123",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u-1",
        "CNI_PATH": "/opt/cni/bin",
    }
    env.update(extra)
    return env


async def run_shim(
    path: pathlib.Path, env: dict[str, str], stdin: bytes = STDIN
) -> tuple[int, bytes, bytes]:
    done = await anyio.run_process([str(path)], input=stdin, env=env, check=False)
    return done.returncode, done.stdout, done.stderr


def error_of(stdout: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(stdout)
    assert set(parsed) == {"cniVersion", "code", "msg"}
    return parsed


def test_shim_imports_only_posix_sys_socket() -> None:
    tree = ast.parse(pathlib.Path(shim.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported == {"posix", "sys", "_socket"}


def test_shim_limits_match_wire() -> None:
    assert shim.MAX_STDIN == wire.MAX_STDIN
    assert shim.MAX_REPLY_BODY == wire.MAX_REPLY_BODY
    assert shim.SOCKET_PATH == "/run/genie/genie.sock"


@pytest.mark.parametrize(
    "text",
    ["plain", 'quote " and \\ backslash', "ctl \x00\x01\n\t\x1f\x7f", "é ü 日本 😀", "\udcff"],
)
def test_json_string_escapes(text: str) -> None:
    encoded = shim.json_string(text)
    assert encoded.isascii()
    assert json.loads(encoded) == text


def test_request_version_sniffing() -> None:
    assert shim.request_version(b'{"cniVersion" : "0.4.0", "name": "x"}') == "0.4.0"
    assert shim.request_version(b'{"name":"x","cniVersion":"1.0.0"}') == "1.0.0"
    assert shim.request_version(b'{"cniVersion":"9.9.9"}') == versions.LATEST
    assert shim.request_version(b"") == versions.LATEST
    assert shim.request_version(b'{"cniVersion": 1}') == versions.LATEST


async def test_version_answered_locally(installed: conftest.Installed) -> None:
    code, out, _ = await run_shim(installed.shim, {"CNI_COMMAND": "VERSION"}, b"")
    assert code == 0
    assert json.loads(out) == wire.version_result()
    assert json.loads(out)["supportedVersions"] == list(versions.SUPPORTED)
    assert not installed.socket.exists()


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
async def test_agent_unreachable_no_socket(installed: conftest.Installed, command: str) -> None:
    conf = json.dumps(CONF | {"cniVersion": "0.4.0"}).encode()
    code, out, err = await run_shim(installed.shim, runtime_env(command), conf)
    assert code == 1, err
    body = error_of(out)
    assert body["code"] == errors.TRY_AGAIN_LATER
    assert body["cniVersion"] == "0.4.0"
    assert str(installed.socket) in body["msg"]
    assert "No such file or directory" in body["msg"]


async def test_agent_unreachable_refused(installed: conftest.Installed) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(installed.socket))  # bound, never listening: connect is refused
        code, out, _ = await run_shim(installed.shim, runtime_env("DEL"))
    assert code == 1
    body = error_of(out)
    assert body["code"] == errors.TRY_AGAIN_LATER
    assert str(installed.socket) in body["msg"]
    assert "refused" in body["msg"]


async def test_agent_unreachable_connect_timeout(installed: conftest.Installed) -> None:
    """A listener that never accepts, with a full backlog: connect blocks until the timeout."""
    held = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(installed.socket))
        listener.listen(0)
        try:
            for _ in range(64):
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                held.append(client)
                client.setblocking(False)
                try:
                    client.connect(str(installed.socket))
                except BlockingIOError:
                    break
            started = time.monotonic()
            code, out, _ = await run_shim(installed.shim, runtime_env("ADD"))
            elapsed = time.monotonic() - started
        finally:
            for client in held:
                client.close()
    assert code == 1
    body = error_of(out)
    assert (body["code"], "timed out" in body["msg"]) == (errors.TRY_AGAIN_LATER, True), body
    assert 1.5 < elapsed < 10


async def test_genie_socket_env_overrides(
    installed: conftest.Installed, short_dir: pathlib.Path
) -> None:
    other = short_dir / "other.sock"
    env = runtime_env("ADD", GENIE_SOCKET=str(other))
    code, out, _ = await run_shim(installed.shim, env)
    assert code == 1
    assert str(other) in error_of(out)["msg"]


async def test_request_framing_on_the_wire(
    installed: conftest.Installed, server: conftest.Server
) -> None:
    server.reply = wire.encode_reply(wire.CniReply(0, b""))
    env = runtime_env("ADD", CNI_EXTRA_THING="a=b;c", NOT_CNI="secret", cni_lower="x")
    stdin = STDIN + b"\n  trailing bytes are passed unchanged \x00\xff"
    code, out, err = await run_shim(installed.shim, env, stdin)
    assert (code, out) == (0, b""), err
    (seen,) = server.seen
    assert seen.request_line == "POST /v1/cni HTTP/1.1"
    assert seen.headers["content-type"] == "application/octet-stream"
    assert seen.headers["connection"] == "close"
    assert int(seen.headers["content-length"]) == len(seen.body)
    cni_env = {k: v for k, v in env.items() if k.startswith("CNI_")}
    assert seen.body == wire.encode_request(cni_env, stdin)


async def test_non_utf8_env_is_relayed_as_bytes(
    installed: conftest.Installed, server: conftest.Server
) -> None:
    server.reply = wire.encode_reply(wire.CniReply(0, b""))
    env = runtime_env("ADD", CNI_ARGS="A=\udcff")  # subprocess sends the byte 0xff
    await run_shim(installed.shim, env)
    (seen,) = server.seen
    assert b"CNI_ARGS=A=\xff\0" in seen.body
    with pytest.raises(errors.CniError) as info:
        wire.decode_request(seen.body)
    assert info.value.code == errors.DECODE_FAILURE


@pytest.mark.parametrize("exit_code", [0, 1, 7, 100])
async def test_body_and_exit_code_relayed(
    installed: conftest.Installed, server: conftest.Server, exit_code: int
) -> None:
    body = b'{\n  "cniVersion": "1.0.0",\n  "ips": [{"address": "10.1.0.5/24"}]\n}'
    server.reply = wire.encode_reply(wire.CniReply(exit_code, body))
    code, out, _ = await run_shim(installed.shim, runtime_env("ADD"))
    assert (code, out) == (exit_code, body)


async def test_big_stdin_is_capped(installed: conftest.Installed, server: conftest.Server) -> None:
    server.reply = wire.encode_reply(wire.CniReply(0, b""))
    big = installed.root / "big.json"
    big.write_bytes(b"{" + b" " * (3 * wire.MAX_STDIN) + b"}")
    with big.open("rb") as stdin:  # a file, not a pipe: the shim stops reading early
        done = await anyio.run_process(
            [str(installed.shim)], stdin=stdin, env=runtime_env("ADD"), check=False
        )
    assert done.returncode == 0
    (seen,) = server.seen
    sent_stdin = seen.body.split(b"\0\0", 1)[1]
    assert len(sent_stdin) == wire.MAX_STDIN + 1  # one over: the agent names the limit
    with pytest.raises(errors.CniError) as info:
        wire.decode_request(seen.body)
    assert "exceeds" in info.value.msg


async def test_closed_without_reply(installed: conftest.Installed, server: conftest.Server) -> None:
    server.reply = None
    code, out, _ = await run_shim(installed.shim, runtime_env("DEL"))
    assert code == 1
    body = error_of(out)
    assert body["code"] == errors.TRY_AGAIN_LATER
    assert "closed without a reply" in body["msg"]
    assert str(installed.socket) in body["msg"]


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", "HTTP status"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", "X-CNI-Exit-Code"),
        (b"HTTP/1.1 200 OK\r\nX-CNI-Exit-Code: abc\r\n\r\n", "invalid literal"),
        (b"HTTP/1.1 200 OK\r\nX-CNI-Exit-Code: 0\r\nContent-Length: 99\r\n\r\n{}", "Content-"),
        (b"HTTP/1.1 200 OK\r\nX-CNI-Exit-Code: 0\r\nTransfer-Encoding: chunked\r\n\r\n", "Trans"),
        (b"HTTP/1.1 200 OK\r\nX-CNI-Exit-Code: 0\r\n", "no end of HTTP headers"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "HTTP status"),
    ],
)
async def test_malformed_reply(
    installed: conftest.Installed, server: conftest.Server, reply: bytes, words: str
) -> None:
    server.reply = reply
    code, out, _ = await run_shim(installed.shim, runtime_env("ADD"))
    assert code == 1
    body = error_of(out)
    assert body["code"] == errors.TRY_AGAIN_LATER
    assert "malformed reply" in body["msg"]
    assert words in body["msg"]


async def test_huge_reply_is_capped(installed: conftest.Installed, server: conftest.Server) -> None:
    server.reply = wire.encode_reply(wire.CniReply(0, b"x" * (8 * wire.MAX_REPLY_BODY)))
    code, out, _ = await run_shim(installed.shim, runtime_env("ADD"))
    assert code == 1
    assert len(out) < 1000
    body = error_of(out)
    assert body["code"] == errors.TRY_AGAIN_LATER
    assert "larger than" in body["msg"]


async def test_against_aiohttp(installed: conftest.Installed) -> None:
    """A real aiohttp server using wire's decode and reply helpers, as the agent does."""
    got: list[wire.CniRequest] = []

    async def cni(request: web.Request) -> web.Response:
        try:
            req = wire.decode_request(await request.read())
        except errors.CniError as err:
            reply = wire.reply_for_error(err, None)
        else:
            got.append(req)
            if req.command == "ADD":
                reply = wire.reply_ok({"cniVersion": req.cni_version, "ips": []})
            else:
                reply = wire.reply_for_error(
                    errors.CniError(errors.UNKNOWN_CONTAINER, "no such container"),
                    req.cni_version,
                )
        return web.Response(body=reply.body, headers=reply.headers())

    app = web.Application()
    app.router.add_post(wire.PATH, cni)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.UnixSite(runner, str(installed.socket)).start()
        code, out, _ = await run_shim(installed.shim, runtime_env("ADD"))
        assert (code, json.loads(out)) == (0, {"cniVersion": "1.0.0", "ips": []})
        conf = json.dumps(CONF | {"cniVersion": "0.3.1"}).encode()
        code, out, _ = await run_shim(installed.shim, runtime_env("CHECK"), conf)
        assert code == 1
        assert json.loads(out) == {"cniVersion": "0.3.1", "code": 3, "msg": "no such container"}
        code, out, _ = await run_shim(installed.shim, runtime_env("ADD", CNI_IFNAME="a:b"))
        assert (code, json.loads(out)["code"]) == (1, errors.INVALID_ENV)
    finally:
        await runner.cleanup()
    assert [r.command for r in got] == ["ADD", "CHECK"]
    assert got[0].arg("K8S_POD_NAME") == "web-0"


def test_startup_time(installed: conftest.Installed) -> None:
    """Not an assertion on speed: prints the shim's VERSION cost next to bare python -I -S."""

    def timed(cmd: list[str]) -> float:
        env = {"CNI_COMMAND": "VERSION", "PATH": os.environ.get("PATH", "")}
        started = time.perf_counter()
        for _ in range(20):
            subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=True)
        return (time.perf_counter() - started) / 20 * 1000

    python = installed.shim.read_text().split("\n", 1)[0][2:].split()[0]
    bare = timed([python, "-I", "-S", "-c", "pass"])
    version = timed([str(installed.shim)])
    print(f"\nshim VERSION: {version:.1f} ms/run; {python} -I -S -c pass: {bare:.1f} ms/run")
    assert version > 0
