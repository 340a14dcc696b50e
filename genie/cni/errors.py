"""The CNI error type and the spec's well-known codes, shared by the shim's peer and services."""

from __future__ import annotations

from typing import Any, Final

# CNI spec 1.1, "Error": well-known codes. 100+ are plugin specific.
INCOMPATIBLE_VERSION: Final = 1
UNSUPPORTED_FIELD: Final = 2
UNKNOWN_CONTAINER: Final = 3
INVALID_ENV: Final = 4
IO_FAILURE: Final = 5
DECODE_FAILURE: Final = 6
INVALID_NETWORK_CONFIG: Final = 7
TRY_AGAIN_LATER: Final = 11
NOT_AVAILABLE: Final = 50
LIMITED_CONNECTIVITY: Final = 51
# genie's own (plugin-specific) codes
DELEGATE_FAILED: Final = 100  # a delegate crashed, hung, or printed something that is no result
INTERNAL: Final = 101  # genie itself failed (a bug); the log names it

# The codes above; any other (a delegate's own, e.g. host-local's 999) is plugin specific.
KNOWN_CODES: Final = frozenset(
    {
        INCOMPATIBLE_VERSION,
        UNSUPPORTED_FIELD,
        UNKNOWN_CONTAINER,
        INVALID_ENV,
        IO_FAILURE,
        DECODE_FAILURE,
        INVALID_NETWORK_CONFIG,
        TRY_AGAIN_LATER,
        NOT_AVAILABLE,
        LIMITED_CONNECTIVITY,
        DELEGATE_FAILED,
        INTERNAL,
    }
)


class CniError(Exception):
    """A failure the runtime must see as a CNI error object on stdout with a non-zero exit."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        body: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            body["details"] = self.details
        return body

    def __repr__(self) -> str:
        return f"CniError(code={self.code}, msg={self.msg!r}, details={self.details!r})"
