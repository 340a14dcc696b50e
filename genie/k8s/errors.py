"""genie's own Kubernetes API errors, so callers never catch the client library's types.

kopf-style: one base class, a subclass per outcome a caller acts on differently, the
client's exception chained as `__cause__`. `translated()` wraps a block of API calls and
re-raises whatever kubernetes-asyncio or aiohttp raised as one of these.

The client library is imported only when an error is being translated: importing
kubernetes_asyncio.client costs about a second, and only the agent in a cluster pays it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Final

MAX_MESSAGE: Final = 512


class KubernetesError(Exception):
    """An API call failed. `status` is the HTTP status when there was a response."""

    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class ApiUnavailableError(KubernetesError):
    """No usable answer: connection refused or reset, timeout, 5xx, 429. Try again later."""

    retryable = True


class ApiClientError(KubernetesError):
    """The API server refused the request (4xx): retrying the same request will not help."""


class UnauthorizedError(ApiClientError):
    """401: the credentials are missing, wrong or expired."""


class ForbiddenError(ApiClientError):
    """403: RBAC does not allow it (see deploy/rbac.yaml)."""


class NotFoundError(ApiClientError):
    """404: no such object (or no such resource type: a CRD not installed)."""


class ConflictError(ApiClientError):
    """409: already exists, or a resourceVersion precondition failed."""


class GoneError(ApiClientError):
    """410: the resourceVersion asked for is too old (compacted): list again."""


class InvalidError(ApiClientError):
    """422 (or 400): the object or patch is not valid."""


_BY_STATUS: Final[dict[int, type[KubernetesError]]] = {
    400: InvalidError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    422: InvalidError,
    429: ApiUnavailableError,
}


def for_status(status: int, message: str, *, reason: str = "") -> KubernetesError:
    """The error for an HTTP status (or a watch ERROR event's Status code)."""
    if status >= 500:
        cls: type[KubernetesError] = ApiUnavailableError
    else:
        cls = _BY_STATUS.get(status, ApiClientError if status >= 400 else KubernetesError)
    return cls(message[:MAX_MESSAGE], status=status, reason=reason)


def status_message(body: object) -> tuple[str, str]:
    """(message, reason) from a metav1.Status body, when the body is one."""
    if isinstance(body, bytes | bytearray):
        body = bytes(body[: 64 << 10]).decode(errors="replace")
    if not isinstance(body, str) or not body:
        return "", ""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return body[:MAX_MESSAGE], ""
    if not isinstance(doc, dict):
        return "", ""
    return str(doc.get("message", ""))[:MAX_MESSAGE], str(doc.get("reason", ""))[:64]


def translate(exc: BaseException) -> KubernetesError | None:
    """genie's error for an exception a client call raised; None when it is not an API error."""
    if isinstance(exc, KubernetesError):
        return exc
    import aiohttp
    from kubernetes_asyncio.client import exceptions as k8s_exceptions

    if isinstance(exc, k8s_exceptions.ApiException):
        status = int(exc.status or 0)
        message, reason = status_message(exc.body)
        message = message or str(exc.reason or "")
        if not status:
            return ApiUnavailableError(message or "no response", reason=reason)
        return for_status(status, f"HTTP {status}: {message}", reason=reason)
    if isinstance(exc, aiohttp.ClientResponseError):
        return for_status(exc.status, f"HTTP {exc.status}: {exc.message}")
    if isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError):
        return ApiUnavailableError(f"{type(exc).__name__}: {exc}"[:MAX_MESSAGE])
    if isinstance(exc, OSError):
        return ApiUnavailableError(f"{type(exc).__name__}: {exc}"[:MAX_MESSAGE])
    return None


@contextlib.contextmanager
def translated(what: str = "") -> Iterator[None]:
    """Re-raise client and transport errors of the block as KubernetesError (chained)."""
    try:
        yield
    except KubernetesError:
        raise
    except Exception as exc:
        mapped = translate(exc)
        if mapped is None:
            raise
        if what:
            mapped.args = (f"{what}: {mapped.args[0]}",)
        raise mapped from exc
