"""The collaborators every use case needs, bundled once at agent start-up."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from genie.domain import events as ev
from genie.domain import state as st
from genie.networks import registry as reg
from genie.pods import source as pods
from genie.services import delegates, keyed_lock
from genie.store import recorder


class AttachmentDefinitionSource(Protocol):
    """NetworkAttachmentDefinitions by (namespace, name): cached, or briefly waited for."""

    async def get(self, *, namespace: str, name: str) -> reg.NetworkConfig:
        """The network, or UnknownNetworkError (an UnknownAttachmentError) naming why."""
        ...


class AttachObserver(Protocol):
    """Told about ADD outcomes after they are committed; must not block (it queues work)."""

    def attached(self, att: st.Attachment) -> None: ...

    def add_failed(self, pod: ev.PodRef, message: str) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    store: recorder.EventStore
    networks: reg.NetworkRegistry
    pods: pods.PodSource
    runner: delegates.DelegateRunner
    locks: keyed_lock.KeyedLock
    default_network: str | None
    ready: Callable[[], bool]
    # with Kubernetes: NetworkAttachmentDefinitions for Multus syntax, write-back and Events
    attachment_definitions: AttachmentDefinitionSource | None = None
    observer: AttachObserver | None = None
    # a pod the source does not know is an error (Kubernetes), not "default network only"
    require_pod: bool = False
