"""Where the agent learns a pod's annotations: an interface, so the ADD path ignores the origin.

Implementations: a static pods directory (no cluster) and the Kubernetes watch cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Protocol


@dataclasses.dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    uid: str
    annotations: Mapping[str, str]


class PodNotFoundError(Exception):
    """No pod by that namespace/name (and UID, when one was given) is known to the source."""


class PodSourceUnavailableError(Exception):
    """The source cannot answer now (API server unreachable and pod not cached): try later."""


class PodSource(Protocol):
    async def get(self, *, namespace: str, name: str, uid: str = "") -> Pod:
        """The pod, or PodNotFoundError / PodSourceUnavailableError."""
        ...

    def ready(self) -> bool:
        """True once the source has listed at least once (static sources are always ready)."""
        ...


class NoPodSource:
    """No cluster and no pods dir: every pod gets the default network."""

    async def get(self, *, namespace: str, name: str, uid: str = "") -> Pod:
        raise PodNotFoundError(f"{namespace}/{name}: no pod source configured")

    def ready(self) -> bool:
        return True
