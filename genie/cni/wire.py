"""The framing between the shim and the agent: one HTTP POST carrying the CNI env and stdin.

Request body: every `CNI_*` environment variable as `NAME=VALUE\\0`, an empty entry (`\\0`),
then stdin unchanged. The shim builds it without parsing anything; the agent validates it
here against CNI spec 1.1 and the limits below. The reply is HTTP 200 with the plugin's exit
code in `X-CNI-Exit-Code` and the exact bytes the shim prints.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from genie.cni import errors, versions

PATH: Final = "/v1/cni"
CONTENT_TYPE: Final = "application/octet-stream"
EXIT_CODE_HEADER: Final = "X-CNI-Exit-Code"

MAX_STDIN: Final = 1 << 20  # the network configuration (with prevResult) on stdin
MAX_ENV_ENTRIES: Final = 64
MAX_ENV_ENTRY: Final = 4096  # bytes of NAME=VALUE
MAX_BODY: Final = MAX_STDIN + MAX_ENV_ENTRIES * (MAX_ENV_ENTRY + 1) + 1
MAX_REPLY_BODY: Final = 1 << 20  # the shim refuses bigger replies (same number in shim.py)

COMMANDS: Final = frozenset({"ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"})
REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}
MAX_CONTAINER_ID: Final = 256
MAX_IFNAME_BYTES: Final = 15

_NAME = re.compile(r"CNI_[A-Z_]+")
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


@dataclasses.dataclass(frozen=True, slots=True)
class CniRequest:
    """One decoded, validated plugin invocation. Absent optional variables are ""."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: tuple[tuple[str, str], ...]  # CNI_ARGS, in order
    path: tuple[str, ...]  # CNI_PATH directories
    config: Mapping[str, Any] = dataclasses.field(hash=False)  # stdin JSON object; do not mutate
    cni_version: str  # the config's cniVersion (LATEST for a VERSION request without one)
    stdin: bytes
    env: tuple[tuple[str, str], ...] = ()  # every CNI_* variable as received

    def arg(self, name: str) -> str | None:
        """The value of `name` in CNI_ARGS (the last one when repeated, as libcni does)."""
        found = None
        for key, value in self.args:
            if key == name:
                found = value
        return found

    def getenv(self, name: str) -> str | None:
        """The raw value of a CNI_* variable, None when absent."""
        for key, value in self.env:
            if key == name:
                return value
        return None


class CniReply(NamedTuple):
    """What the shim prints and the exit code it ends with."""

    exit_code: int
    body: bytes

    def headers(self) -> dict[str, str]:
        return {EXIT_CODE_HEADER: str(self.exit_code)}


def _invalid_env(msg: str, details: str = "") -> errors.CniError:
    return errors.CniError(errors.INVALID_ENV, msg, details)


def _decode_failure(msg: str, details: str = "") -> errors.CniError:
    return errors.CniError(errors.DECODE_FAILURE, msg, details)


def _split_env(body: bytes) -> tuple[list[tuple[str, str]], bytes]:
    env: list[tuple[str, str]] = []
    seen: set[str] = set()
    pos = 0
    while True:
        end = body.find(b"\0", pos, pos + MAX_ENV_ENTRY + 1)
        if end < 0:
            if len(body) - pos > MAX_ENV_ENTRY:
                raise _invalid_env(f"an environment entry is longer than {MAX_ENV_ENTRY} bytes")
            raise _decode_failure("request body has no end-of-environment marker")
        if end == pos:
            return env, body[end + 1 :]
        if len(env) >= MAX_ENV_ENTRIES:
            raise _invalid_env(f"more than {MAX_ENV_ENTRIES} CNI_* environment variables")
        try:
            entry = body[pos:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _decode_failure("an environment entry is not UTF-8") from exc
        name, sep, value = entry.partition("=")
        if not sep:
            raise _decode_failure(f"environment entry {entry[:64]!r} has no '='")
        if not _NAME.fullmatch(name):
            raise _invalid_env(f"environment variable name {name[:64]!r} is not CNI_[A-Z_]+")
        if name in seen:
            raise _invalid_env(f"environment variable {name} appears twice")
        seen.add(name)
        env.append((name, value))
        pos = end + 1


def _parse_args(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in raw.split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _invalid_env(f"CNI_ARGS entry {item[:64]!r} is not KEY=VALUE")
        pairs.append((key, value))
    return tuple(pairs)


def _check_container_id(value: str) -> None:
    if len(value) > MAX_CONTAINER_ID or not _CONTAINER_ID.fullmatch(value):
        raise _invalid_env(
            f"CNI_CONTAINERID {value[:64]!r} is invalid",
            "must start with a letter or digit, then letters, digits, '_', '.', '-'; "
            f"at most {MAX_CONTAINER_ID} characters",
        )


def _check_ifname(value: str) -> None:
    bad = (
        len(value.encode("utf-8")) > MAX_IFNAME_BYTES
        or value in (".", "..")
        or any(c in "/:" or c.isspace() for c in value)
    )
    if bad:
        raise _invalid_env(
            f"CNI_IFNAME {value[:64]!r} is not a valid interface name",
            f"at most {MAX_IFNAME_BYTES} bytes, not '.' or '..', no '/', ':' or whitespace",
        )


def _check_netns(value: str) -> None:
    if not value.startswith("/"):
        raise _invalid_env(f"CNI_NETNS {value[:64]!r} is not an absolute path")


def _parse_config(stdin: bytes, command: str) -> tuple[dict[str, Any], str]:
    if not stdin.strip():
        if command == "VERSION":
            return {}, versions.LATEST
        raise _decode_failure(f"{command} needs the network configuration on stdin; got none")
    try:
        config = json.loads(stdin.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise _decode_failure("network configuration on stdin is not UTF-8") from exc
    except (ValueError, RecursionError) as exc:
        raise _decode_failure("network configuration on stdin is not JSON", str(exc)) from exc
    if not isinstance(config, dict):
        raise _decode_failure(
            f"network configuration on stdin must be a JSON object, not {type(config).__name__}"
        )
    version = config.get("cniVersion")
    if command == "VERSION":
        return config, version if version in versions.SUPPORTED else versions.LATEST
    return config, versions.require_supported(version)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_request(body: bytes) -> CniRequest:
    """Validate a request body; every problem is a CniError with the spec's code."""
    if len(body) > MAX_BODY:
        raise _decode_failure(f"request of {len(body)} bytes exceeds the limit of {MAX_BODY} bytes")
    env_list, stdin = _split_env(body)
    if len(stdin) > MAX_STDIN:
        raise _decode_failure(
            f"network configuration of {len(stdin)} bytes exceeds the limit of {MAX_STDIN} bytes"
        )
    env = dict(env_list)
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise _invalid_env("CNI_COMMAND is missing or empty")
    if command not in COMMANDS:
        raise _invalid_env(
            f"unknown CNI_COMMAND {command[:32]!r}", f"known: {', '.join(sorted(COMMANDS))}"
        )
    for name in REQUIRED[command]:
        if not env.get(name):
            raise _invalid_env(f"{name} is missing or empty; {command} needs it")
    container_id = env.get("CNI_CONTAINERID", "")
    if container_id:
        _check_container_id(container_id)
    ifname = env.get("CNI_IFNAME", "")
    if ifname:
        _check_ifname(ifname)
    netns = env.get("CNI_NETNS", "")
    if netns:
        _check_netns(netns)
    args = _parse_args(env.get("CNI_ARGS", ""))
    path = tuple(p for p in env.get("CNI_PATH", "").split(":") if p)
    config, cni_version = _parse_config(stdin, command)
    return CniRequest(
        command=command,
        container_id=container_id,
        netns=netns,
        ifname=ifname,
        args=args,
        path=path,
        config=config,
        cni_version=cni_version,
        stdin=stdin,
        env=tuple(env_list),
    )


def request_command(body: bytes) -> str:
    """Best effort for counting a body that did not decode: its CNI_COMMAND when that is one
    of COMMANDS, else "unknown" (so the answer is one of a fixed set). Never raises."""
    try:
        env, _ = _split_env(body[:MAX_BODY])
    except errors.CniError:
        return "unknown"
    command = dict(env).get("CNI_COMMAND", "")
    return command if command in COMMANDS else "unknown"


def request_version(body: bytes) -> str:
    """Best effort for error replies to a body that did not decode: its config's cniVersion
    when that is readable and supported, else LATEST. Never raises."""
    try:
        _, stdin = _split_env(body[:MAX_BODY])
        config = json.loads(stdin[:MAX_STDIN].decode("utf-8"))
    except (errors.CniError, ValueError, RecursionError):
        return versions.LATEST
    version = config.get("cniVersion") if isinstance(config, dict) else None
    return (
        version if isinstance(version, str) and version in versions.SUPPORTED else versions.LATEST
    )


def encode_request(env: Mapping[str, str], stdin: bytes) -> bytes:
    """The request body for `env` (every entry, in order) and `stdin`, as the shim builds it.

    Strings are encoded as os.environ does (UTF-8, surrogateescape); ValueError if an entry
    cannot be framed (a name with '=' or NUL, a value with NUL, an unencodable surrogate).
    """
    parts = []
    for name, value in env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise ValueError(f"environment entry {name!r} cannot be framed")
        parts.append(f"{name}={value}".encode("utf-8", "surrogateescape") + b"\0")
    return b"".join(parts) + b"\0" + stdin


def encode_http_request(body: bytes) -> bytes:
    """The whole HTTP/1.1 request the shim sends for `body`."""
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: genie\r\nContent-Type: {CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def reply_ok(result: Mapping[str, Any] | None = None) -> CniReply:
    """Success: the result JSON (ADD, VERSION, STATUS-less commands print nothing)."""
    return CniReply(0, b"" if result is None else _json(result))


def reply_for_error(err: errors.CniError, cni_version: str | None) -> CniReply:
    """A failure: the spec's error object in the request's version (LATEST if unknown)."""
    version = cni_version if cni_version in versions.SUPPORTED else versions.LATEST
    return CniReply(1, _json(err.to_json(version)))


def version_result() -> dict[str, Any]:
    """The VERSION answer; the shim prints the same (tests check they agree)."""
    return {"cniVersion": versions.LATEST, "supportedVersions": list(versions.SUPPORTED)}


def encode_reply(reply: CniReply) -> bytes:
    """The raw HTTP/1.1 response for `reply` (for servers that are not aiohttp, and tests)."""
    head = (
        f"HTTP/1.1 200 OK\r\n{EXIT_CODE_HEADER}: {reply.exit_code}\r\n"
        f"Content-Type: {CONTENT_TYPE}\r\nContent-Length: {len(reply.body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + reply.body


def decode_reply(raw: bytes) -> CniReply:
    """Parse a raw HTTP response the way the shim does; ValueError when it is not a reply."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no end of HTTP headers")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/1.") or status[1] != "200":
        raise ValueError(f"HTTP status line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers and int(headers["content-length"]) != len(body):
        raise ValueError("body length differs from Content-Length")
    code = headers.get(EXIT_CODE_HEADER.lower())
    if code is None or not code.isdigit():
        raise ValueError(f"no valid {EXIT_CODE_HEADER} header")
    return CniReply(int(code), body)
