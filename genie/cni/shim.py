#!/usr/bin/python3 -IS
"""The `genie` CNI plugin executable: relays one invocation to the node agent over its socket.

Stdlib only and imports only posix, sys and _socket (not even os, which costs ~2 ms
with -S): the runtime starts it once per pod and
network operation, so start-up time is the cost. `genie install-cni` copies this file into
the CNI bin dir and rewrites SOCKET_PATH. Framing: see genie/cni/wire.py.
"""

import _socket
import posix
import sys

SOCKET_PATH = "/run/genie/genie.sock"
SUPPORTED = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")  # = genie.cni.versions.SUPPORTED
LATEST = "1.1.0"
MAX_STDIN = 1 << 20  # the agent rejects more; we send at most one byte over so it can say so
MAX_REPLY_BODY = 1 << 20
MAX_REPLY_HEAD = 16384
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 240.0
TRY_AGAIN_LATER = 11


def json_string(text: str) -> str:
    """A JSON string literal for `text`: everything outside printable ASCII is \\u-escaped."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    out.append('"')
    return "".join(out)


def request_version(stdin: bytes) -> str:
    """The config's cniVersion found without a JSON parser; LATEST when unclear."""
    at = stdin.find(b'"cniVersion"')
    if at >= 0:
        rest = stdin[at + 12 : at + 64].lstrip(b" \t\r\n")
        if rest[:1] == b":":
            rest = rest[1:].lstrip(b" \t\r\n")
            end = rest.find(b'"', 1)
            if rest[:1] == b'"' and end > 0:
                version = rest[1:end].decode("ascii", "replace")
                if version in SUPPORTED:
                    return version
    return LATEST


def error_json(version: str, code: int, msg: str) -> bytes:
    text = f'{{"cniVersion":{json_string(version)},"code":{code},"msg":{json_string(msg)}}}'
    return text.encode("ascii")


def read_stdin() -> bytes:
    chunks = []
    size = 0
    while size <= MAX_STDIN:
        try:
            chunk = posix.read(0, MAX_STDIN + 1 - size)
        except OSError:  # no stdin at all
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def exchange(path: str, request: bytes) -> bytes:
    """Send `request`, return the raw reply; OSError (with a reason) when the agent fails."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        # A unix connect waits for room in the listen backlog only in blocking mode, and then
        # for at most SO_SNDTIMEO (a struct timeval: two C longs); EAGAIN means it ran out.
        seconds = int(CONNECT_TIMEOUT)
        usec = int((CONNECT_TIMEOUT - seconds) * 1000000)
        timeval = seconds.to_bytes(8, sys.byteorder) + usec.to_bytes(8, sys.byteorder)
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, timeval)
        except OSError:  # not a 64-bit timeval: fail fast instead of waiting
            sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(path)
        except BlockingIOError:
            raise TimeoutError(f"timed out after {CONNECT_TIMEOUT} s (backlog full)") from None
        sock.settimeout(READ_TIMEOUT)
        sock.sendall(request)
        chunks = []
        size = 0
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_REPLY_BODY + MAX_REPLY_HEAD:
                raise ValueError(f"reply larger than {MAX_REPLY_BODY + MAX_REPLY_HEAD} bytes")
        return b"".join(chunks)
    finally:
        sock.close()


def parse_reply(raw: bytes) -> tuple[int, bytes]:
    """(exit code, body) from a raw HTTP reply; ValueError naming what is wrong."""
    if not raw:
        raise ValueError("connection closed without a reply")
    end = raw.find(b"\r\n\r\n", 0, MAX_REPLY_HEAD)
    if end < 0:
        raise ValueError("no end of HTTP headers")
    lines = raw[:end].decode("latin-1").split("\r\n")
    body = raw[end + 4 :]
    status = lines[0].split(" ")
    if len(status) < 2 or not status[0].startswith("HTTP/1.") or status[1] != "200":
        raise ValueError(f"HTTP status {lines[0][:80]!r}")
    code = length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        if name == "x-cni-exit-code":
            code = int(value)
        elif name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            raise ValueError(f"unsupported Transfer-Encoding {value[:40]!r}")
    if code is None or not 0 <= code <= 255:
        raise ValueError("no valid X-CNI-Exit-Code header")
    if length is not None and length != len(body):
        raise ValueError(f"body of {len(body)} bytes but Content-Length {length}")
    return code, body


def write_out(data: bytes) -> None:
    while data:
        data = data[posix.write(1, data) :]


def main() -> int:
    env = posix.environ  # bytes -> bytes, as the kernel gave it
    if env.get(b"CNI_COMMAND") == b"VERSION":
        listed = ",".join(json_string(v) for v in SUPPORTED)
        answer = f'{{"cniVersion":{json_string(LATEST)},"supportedVersions":[{listed}]}}'
        write_out(answer.encode("ascii"))
        return 0
    override = env.get(b"GENIE_SOCKET")
    path = override.decode("utf-8", "replace") if override else SOCKET_PATH
    stdin = read_stdin()
    body = b"".join(k + b"=" + v + b"\0" for k, v in env.items() if k.startswith(b"CNI_"))
    body += b"\0" + stdin
    head = "POST /v1/cni HTTP/1.1\r\nHost: genie\r\nContent-Type: application/octet-stream\r\n"
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    try:
        raw = exchange(path, head.encode("ascii") + body)
    except OSError as exc:
        cause = exc.strerror or str(exc) or exc.__class__.__name__
        msg = f"genie agent unreachable at {path}: {cause}"
        write_out(error_json(request_version(stdin), TRY_AGAIN_LATER, msg))
        return 1
    except ValueError as exc:  # reply too big
        problem = str(exc)
    else:
        try:
            code, reply = parse_reply(raw)
        except ValueError as exc:
            problem = str(exc)
        else:
            write_out(reply)
            return code
    msg = f"genie agent at {path} gave a malformed reply: {problem}"
    write_out(error_json(request_version(stdin), TRY_AGAIN_LATER, msg))
    return 1


if __name__ == "__main__":
    sys.exit(main())
