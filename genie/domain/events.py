"""The attachment life cycle of one pod sandbox as immutable facts: the only thing genie stores.

One stream per sandbox, keyed by the CNI container ID. Events carry everything a later DEL,
CHECK, GC or crash recovery needs (the exact delegate configs and their results), so nothing
outside the log is ever consulted to undo an attachment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Final, NamedTuple

JSONObject = Mapping[str, Any]

# Who asked for a detach. "runtime" is a CNI DEL; the others are genie's own decisions.
INITIATOR_RUNTIME: Final = "runtime"
INITIATOR_GC: Final = "gc"
INITIATOR_RECOVERY: Final = "recovery"
INITIATOR_POD_GONE: Final = "pod-gone"
INITIATORS: Final = frozenset(
    {INITIATOR_RUNTIME, INITIATOR_GC, INITIATOR_RECOVERY, INITIATOR_POD_GONE}
)


@dataclasses.dataclass(frozen=True, slots=True)
class PodRef:
    """The Kubernetes identity of the pod that owns a sandbox."""

    namespace: str
    name: str
    uid: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True, slots=True)
class PlannedDelegate:
    """One network of the request, with the exact configuration its plugins will be run with.

    `plugins` is the chain (one entry for a plain .conf), each a complete plugin config as it
    goes to the plugin's stdin: `name`, `cniVersion`, `runtimeConfig`/`args` already injected,
    `prevResult` left out (it is the previous plugin's result, added when the chain runs).
    """

    index: int
    network: str
    ifname: str
    cni_version: str
    plugins: tuple[JSONObject, ...]
    cni_args: tuple[tuple[str, str], ...] = ()
    parallel: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class AddRequested:
    """The runtime asked to attach a sandbox; written before any delegate runs."""

    kind: ClassVar[str] = "AddRequested"
    pod: PodRef
    netns: str
    runtime_cni_version: str
    delegates: tuple[PlannedDelegate, ...]
    ifname: str = ""  # the runtime's CNI_IFNAME: with the container ID, the attachment's key


@dataclasses.dataclass(frozen=True, slots=True)
class DelegateAdded:
    """A delegate chain's ADD succeeded; `result` is the last plugin's result, as it printed it."""

    kind: ClassVar[str] = "DelegateAdded"
    index: int
    result: JSONObject


@dataclasses.dataclass(frozen=True, slots=True)
class DelegateFailed:
    """A delegate chain's ADD failed (error, timeout, crash); the ADD will be rolled back."""

    kind: ClassVar[str] = "DelegateFailed"
    index: int
    code: int
    msg: str
    details: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class AddCompleted:
    """Every delegate was added; `result` is the merged result sent to the runtime."""

    kind: ClassVar[str] = "AddCompleted"
    result: JSONObject


@dataclasses.dataclass(frozen=True, slots=True)
class AddRolledBack:
    """Every delegate started for a failed ADD was deleted again; the sandbox holds nothing."""

    kind: ClassVar[str] = "AddRolledBack"
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class DelRequested:
    """A detach began: a CNI DEL from the runtime, or genie's own GC, recovery or pod-gone sweep."""

    kind: ClassVar[str] = "DelRequested"
    initiator: str = INITIATOR_RUNTIME
    reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class DelegateDeleted:
    """A delegate chain's DEL succeeded (for a DEL, a rollback or a release)."""

    kind: ClassVar[str] = "DelegateDeleted"
    index: int


@dataclasses.dataclass(frozen=True, slots=True)
class DelegateDeleteFailed:
    """A delegate chain's DEL failed; the attachment stays recorded until a DEL succeeds."""

    kind: ClassVar[str] = "DelegateDeleteFailed"
    index: int
    code: int
    msg: str
    details: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class DelCompleted:
    """A runtime DEL removed every delegate: the sandbox holds no address any more."""

    kind: ClassVar[str] = "DelCompleted"


@dataclasses.dataclass(frozen=True, slots=True)
class Released:
    """Genie itself (GC, crash recovery, pod-gone sweep) finished detaching a sandbox."""

    kind: ClassVar[str] = "Released"
    initiator: str
    reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class AnnotationPublished:
    """The pod object now carries these annotations (the write-back outbox entry is done)."""

    kind: ClassVar[str] = "AnnotationPublished"
    annotations: Mapping[str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class AnnotationAbandoned:
    """The write-back will never happen (the pod is gone, or it was replaced)."""

    kind: ClassVar[str] = "AnnotationAbandoned"
    reason: str


Event = (
    AddRequested
    | DelegateAdded
    | DelegateFailed
    | AddCompleted
    | AddRolledBack
    | DelRequested
    | DelegateDeleted
    | DelegateDeleteFailed
    | DelCompleted
    | Released
    | AnnotationPublished
    | AnnotationAbandoned
)

EVENT_TYPES: Final[Mapping[str, type[Event]]] = {
    cls.kind: cls
    for cls in (
        AddRequested,
        DelegateAdded,
        DelegateFailed,
        AddCompleted,
        AddRolledBack,
        DelRequested,
        DelegateDeleted,
        DelegateDeleteFailed,
        DelCompleted,
        Released,
        AnnotationPublished,
        AnnotationAbandoned,
    )
}


class Recorded(NamedTuple):
    """An event as committed: its place in the global log and in its stream.

    A NamedTuple rather than a frozen dataclass: just as immutable, and a replay builds a
    million of them, where a frozen dataclass's per-field __setattr__ costs a second.
    """

    seq: int
    stream: str
    version: int
    recorded_at: float
    event: Event
