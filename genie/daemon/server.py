"""The agent's HTTP face: CNI requests on a root-only unix socket, health and readiness.

The socket lives in a 0700 directory and is itself 0600; on top of that every connection's
peer credentials (SO_PEERCRED) must be root or the agent's own user. There is no TCP control
API: metrics, when enabled, are served read-only by `metrics_http`.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec
from aiohttp import web

from genie.cni import errors, versions, wire

log = logging.getLogger("genie.server")

MAX_BODY: Final = 2 * 1024 * 1024  # wire.decode_request enforces the finer limits
BODY_TIMEOUT: Final = 10.0  # seconds a client may take to send its request body
# seconds a connection may sit without a complete request (aiohttp's own default is an hour:
# a client that connects and never sends would hold its connection and file descriptor)
IDLE_TIMEOUT: Final = 10.0
_PEERCRED: Final = struct.Struct("3i")

Handler = Callable[[wire.CniRequest], Awaitable[dict[str, Any] | None]]
# Told (command, CNI error code) of each request refused before it reached `handle`: one that
# did not decode (command "unknown" unless CNI_COMMAND is a known one) or came in the drain.
Refused = Callable[[str, int], None]
_AioHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PeerRefusedError(Exception):
    """A process that is neither root nor the agent's user connected to the socket."""


def peer_uid(request: web.Request) -> int:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None:
        raise PeerRefusedError("no socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _pid, uid, _gid = _PEERCRED.unpack(creds)
    return int(uid)


def build_app(
    *,
    handle: Handler,
    ready: Callable[[], bool],
    draining: Callable[[], bool],
    refused: Refused | None = None,
    allowed_uids: frozenset[int] = frozenset({0, os.geteuid()}),
) -> web.Application:
    """The aiohttp application; `handle` runs one decoded CNI request."""

    def refuse(body: bytes, err: errors.CniError) -> None:
        if refused is not None:
            refused(wire.request_command(body), err.code)

    @web.middleware
    async def root_peers_only(request: web.Request, handler: _AioHandler) -> web.StreamResponse:
        try:
            uid = peer_uid(request)
        except (OSError, PeerRefusedError):
            uid = -1
        if uid not in allowed_uids:
            log.warning("refused %s %s from uid %s", request.method, request.path, uid)
            return web.Response(status=403, text="forbidden\n")
        return await handler(request)

    async def cni(request: web.Request) -> web.Response:
        cni_version = versions.LATEST
        body = b""
        dispatched = False
        try:
            with anyio.fail_after(BODY_TIMEOUT):
                body = await request.read()
            cni_version = wire.request_version(body)  # for an error reply if decoding fails
            req = wire.decode_request(body)
            cni_version = req.cni_version or versions.LATEST
            if draining():
                raise errors.CniError(
                    errors.TRY_AGAIN_LATER, "genie agent is shutting down; try again later"
                )
            dispatched = True  # from here on `handle` counts it
            result = await handle(req)
        except TimeoutError:
            return web.Response(status=408, text="request body too slow\n")
        except web.HTTPRequestEntityTooLarge:
            err = errors.CniError(errors.DECODE_FAILURE, f"request larger than {MAX_BODY} bytes")
            refuse(body, err)
            return _reply(1, err.to_json(cni_version))
        except errors.CniError as err:
            log.error("CNI request failed (code %d): %s", err.code, err.msg)
            if not dispatched:
                refuse(body, err)
            return _reply(1, err.to_json(cni_version))
        return _reply(0, result)

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        if ready() and not draining():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    app = web.Application(client_max_size=MAX_BODY, middlewares=[root_peers_only])
    app.router.add_post(wire.PATH, cni)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def _reply(exit_code: int, body: dict[str, Any] | None) -> web.Response:
    payload = msgspec.json.encode(body) if body is not None else b""
    return web.Response(
        body=payload,
        content_type="application/json",
        headers={wire.EXIT_CODE_HEADER: str(exit_code)},
    )


def prepare_socket_dir(path: Path) -> None:
    """Create the socket's directory 0700 and remove a stale socket (never another file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket; refusing to replace it")
    path.unlink()
