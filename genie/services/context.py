"""The collaborators every use case needs, bundled once at agent start-up."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from genie.networks import registry as reg
from genie.pods import source as pods
from genie.services import delegates, keyed_lock
from genie.store import recorder


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    store: recorder.EventStore
    networks: reg.NetworkRegistry
    pods: pods.PodSource
    runner: delegates.DelegateRunner
    locks: keyed_lock.KeyedLock
    default_network: str | None
    ready: Callable[[], bool]
