"""Current attachments as a pure fold over the event log: no I/O, no clock, no async.

`evolve` is the whole state machine of one sandbox; `fold` applies it to a log. The same
events always fold to the same state, which is what makes replay, snapshots, recovery plans
and `genie replay --verify` trustworthy.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from genie.domain import events as ev


class InvalidTransitionError(Exception):
    """An event that cannot follow the stream's current state (a bug or a corrupt log)."""

    def __init__(self, stream: str, event_kind: str, phase: str) -> None:
        super().__init__(f"{event_kind} cannot follow phase {phase!r} of container {stream}")
        self.stream = stream
        self.event_kind = event_kind
        self.phase = phase


class Phase(enum.StrEnum):
    ADDING = "adding"  # AddRequested seen, no failure yet
    ROLLING_BACK = "rolling-back"  # the ADD failed; started delegates are being deleted
    ATTACHED = "attached"  # AddCompleted: the runtime got the merged result
    DELETING = "deleting"  # a DEL or release began and has not finished


class DelegateStatus(enum.StrEnum):
    PLANNED = "planned"  # in the plan; not known to have produced anything
    ADDED = "added"
    FAILED = "failed"  # ADD failed: may still hold a partial allocation, so it is DEL'd
    DELETED = "deleted"
    DELETE_FAILED = "delete-failed"


# Statuses that still (may) hold an address or a link and so block the end of a stream.
HOLDING: Final = frozenset(
    {DelegateStatus.ADDED, DelegateStatus.FAILED, DelegateStatus.DELETE_FAILED}
)


@dataclasses.dataclass(frozen=True, slots=True)
class DelegateState:
    plan: ev.PlannedDelegate
    status: DelegateStatus = DelegateStatus.PLANNED
    result: ev.JSONObject | None = None
    error: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Attachment:
    """Everything recorded about one live sandbox."""

    container_id: str
    pod: ev.PodRef
    netns: str
    runtime_cni_version: str
    phase: Phase
    delegates: tuple[DelegateState, ...]
    version: int
    requested_at: float
    updated_at: float
    result: ev.JSONObject | None = None
    initiator: str = ""
    annotation_pending: bool = False
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ifname: str = ""

    def holding(self) -> tuple[DelegateState, ...]:
        """Delegates that may still hold resources and must be DEL'd before the stream ends."""
        return tuple(d for d in self.delegates if d.status in HOLDING)


@dataclasses.dataclass(frozen=True, slots=True)
class NodeState:
    """All live attachments of this node and the last global sequence folded into them."""

    attachments: Mapping[str, Attachment] = dataclasses.field(default_factory=dict)
    last_seq: int = 0


EMPTY: Final = NodeState()


class _Draft:
    """A mutable working copy of one Attachment, private to this module.

    The state machine below edits drafts: `evolve` copies one attachment in and out per event,
    while `fold` copies each live attachment once for a whole log, which is what keeps a
    million-event replay in seconds. Both run the same transitions.
    """

    # Attachment's fields, but `delegates` is split into parallel mutable lists; the
    # DelegateState objects are built only when a draft is frozen.
    __slots__ = (
        *(f.name for f in dataclasses.fields(Attachment) if f.name != "delegates"),
        "plans",
        "statuses",
        "results",
        "errors",
    )

    container_id: str
    pod: ev.PodRef
    netns: str
    runtime_cni_version: str
    phase: Phase
    plans: tuple[ev.PlannedDelegate, ...]
    statuses: list[DelegateStatus]
    results: list[ev.JSONObject | None]
    errors: list[str]
    version: int
    requested_at: float
    updated_at: float
    result: ev.JSONObject | None
    initiator: str
    annotation_pending: bool
    annotations: Mapping[str, str]
    ifname: str


_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Attachment) if f.name != "delegates")


def _thaw(att: Attachment) -> _Draft:
    draft = _Draft()
    for name in _FIELDS:
        setattr(draft, name, getattr(att, name))
    draft.plans = tuple(d.plan for d in att.delegates)
    draft.statuses = [d.status for d in att.delegates]
    draft.results = [d.result for d in att.delegates]
    draft.errors = [d.error for d in att.delegates]
    return draft


def _freeze(draft: _Draft) -> Attachment:
    values: dict[str, Any] = {name: getattr(draft, name) for name in _FIELDS}
    values["delegates"] = tuple(
        DelegateState(plan=plan, status=status, result=result, error=error)
        for plan, status, result, error in zip(
            draft.plans, draft.statuses, draft.results, draft.errors, strict=True
        )
    )
    return Attachment(**values)


def _set_delegate(
    draft: _Draft,
    index: int,
    status: DelegateStatus,
    *,
    result: ev.JSONObject | None = None,
    error: str | None = None,
) -> None:
    if not 0 <= index < len(draft.plans):
        raise InvalidTransitionError(draft.container_id, f"delegate index {index}", draft.phase)
    draft.statuses[index] = status
    if result is not None:
        draft.results[index] = result
    if error is not None:
        draft.errors[index] = error


def _require(draft: _Draft, event: ev.Event, *phases: Phase) -> None:
    if draft.phase not in phases:
        raise InvalidTransitionError(draft.container_id, event.kind, draft.phase)


def _end(draft: _Draft, event: ev.Event, *phases: Phase) -> None:
    _require(draft, event, *phases)
    if any(status in HOLDING for status in draft.statuses):
        raise InvalidTransitionError(
            draft.container_id, f"{event.kind} with delegates held", draft.phase
        )


def _start(rec: ev.Recorded) -> _Draft:
    event = rec.event
    if not isinstance(event, ev.AddRequested):
        raise InvalidTransitionError(rec.stream, event.kind, "absent")
    draft = _Draft()
    draft.container_id = rec.stream
    draft.pod = event.pod
    draft.netns = event.netns
    draft.runtime_cni_version = event.runtime_cni_version
    draft.phase = Phase.ADDING
    count = len(event.delegates)
    draft.plans = event.delegates
    draft.statuses = [DelegateStatus.PLANNED] * count
    draft.results = [None] * count
    draft.errors = [""] * count
    draft.version = rec.version
    draft.requested_at = draft.updated_at = rec.recorded_at
    draft.result = None
    draft.initiator = ""
    draft.annotation_pending = False
    draft.annotations = {}
    draft.ifname = event.ifname
    return draft


# One handler per event kind: edit the draft, return False when the stream ends there.
def _delegate_added(draft: _Draft, event: ev.DelegateAdded) -> bool:
    _require(draft, event, Phase.ADDING, Phase.ROLLING_BACK)
    _set_delegate(draft, event.index, DelegateStatus.ADDED, result=event.result)
    return True


def _delegate_failed(draft: _Draft, event: ev.DelegateFailed) -> bool:
    _require(draft, event, Phase.ADDING, Phase.ROLLING_BACK)
    _set_delegate(draft, event.index, DelegateStatus.FAILED, error=event.msg)
    draft.phase = Phase.ROLLING_BACK
    return True


def _add_completed(draft: _Draft, event: ev.AddCompleted) -> bool:
    _require(draft, event, Phase.ADDING)
    if any(status is not DelegateStatus.ADDED for status in draft.statuses):
        raise InvalidTransitionError(
            draft.container_id, "AddCompleted with missing delegates", draft.phase
        )
    draft.phase = Phase.ATTACHED
    draft.result = event.result
    draft.annotation_pending = True
    return True


def _add_rolled_back(draft: _Draft, event: ev.AddRolledBack) -> bool:
    _end(draft, event, Phase.ADDING, Phase.ROLLING_BACK)
    return False


def _del_requested(draft: _Draft, event: ev.DelRequested) -> bool:
    draft.phase = Phase.DELETING
    draft.initiator = event.initiator
    return True


def _delegate_deleted(draft: _Draft, event: ev.DelegateDeleted) -> bool:
    _require(draft, event, Phase.ADDING, Phase.ROLLING_BACK, Phase.DELETING)
    _set_delegate(draft, event.index, DelegateStatus.DELETED, error="")
    if draft.phase is Phase.ADDING:
        draft.phase = Phase.ROLLING_BACK
    return True


def _delegate_delete_failed(draft: _Draft, event: ev.DelegateDeleteFailed) -> bool:
    _require(draft, event, Phase.ADDING, Phase.ROLLING_BACK, Phase.DELETING)
    _set_delegate(draft, event.index, DelegateStatus.DELETE_FAILED, error=event.msg)
    if draft.phase is Phase.ADDING:
        draft.phase = Phase.ROLLING_BACK
    return True


def _detached(draft: _Draft, event: ev.DelCompleted | ev.Released) -> bool:
    _end(draft, event, Phase.DELETING)
    return False


def _annotation_published(draft: _Draft, event: ev.AnnotationPublished) -> bool:
    draft.annotations = dict(event.annotations)
    draft.annotation_pending = False
    return True


def _annotation_abandoned(draft: _Draft, event: ev.AnnotationAbandoned) -> bool:
    draft.annotation_pending = False
    return True


def _add_again(draft: _Draft, event: ev.AddRequested) -> bool:
    raise InvalidTransitionError(draft.container_id, event.kind, draft.phase)


_HANDLERS: Final[Mapping[type, Callable[[_Draft, Any], bool]]] = {
    ev.AddRequested: _add_again,
    ev.DelegateAdded: _delegate_added,
    ev.DelegateFailed: _delegate_failed,
    ev.AddCompleted: _add_completed,
    ev.AddRolledBack: _add_rolled_back,
    ev.DelRequested: _del_requested,
    ev.DelegateDeleted: _delegate_deleted,
    ev.DelegateDeleteFailed: _delegate_delete_failed,
    ev.DelCompleted: _detached,
    ev.Released: _detached,
    ev.AnnotationPublished: _annotation_published,
    ev.AnnotationAbandoned: _annotation_abandoned,
}


def _apply(draft: _Draft, rec: ev.Recorded) -> bool:
    """Edit `draft` for `rec`; False when the sandbox holds nothing any more (stream ended)."""
    event = rec.event
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise InvalidTransitionError(rec.stream, type(event).__name__, draft.phase)
    if not handler(draft, event):
        return False
    draft.version = rec.version
    draft.updated_at = rec.recorded_at
    return True


def evolve(att: Attachment | None, rec: ev.Recorded) -> Attachment | None:
    """The next state of one sandbox after `rec`; None when the sandbox holds nothing."""
    if att is None:
        return _freeze(_start(rec))
    draft = _thaw(att)
    return _freeze(draft) if _apply(draft, rec) else None


def fold(records: Iterable[ev.Recorded], start: NodeState = EMPTY) -> NodeState:
    """Apply records (in global order) to `start`; `start` itself is never modified."""
    untouched = dict(start.attachments)
    drafts: dict[str, _Draft] = {}
    last_seq = start.last_seq
    for rec in records:
        if rec.seq <= last_seq:
            raise InvalidTransitionError(rec.stream, f"seq {rec.seq} after {last_seq}", "replay")
        stream = rec.stream
        draft = drafts.get(stream)
        if draft is None:
            att = untouched.pop(stream, None)
            if att is None:
                drafts[stream] = _start(rec)
                last_seq = rec.seq
                continue
            draft = drafts[stream] = _thaw(att)
        if not _apply(draft, rec):
            del drafts[stream]
        last_seq = rec.seq
    untouched.update((stream, _freeze(draft)) for stream, draft in drafts.items())
    return NodeState(attachments=untouched, last_seq=last_seq)


def addresses(result: ev.JSONObject | None) -> tuple[str, ...]:
    """Every address (CIDR form) in a CNI result of any version, in result order."""
    if not result:
        return ()
    found: list[str] = []
    for ip in result.get("ips") or ():
        if isinstance(ip, Mapping) and isinstance(ip.get("address"), str):
            found.append(ip["address"])
    for legacy in ("ip4", "ip6"):  # cniVersion 0.1.0 / 0.2.0
        block = result.get(legacy)
        if isinstance(block, Mapping) and isinstance(block.get("ip"), str):
            found.append(block["ip"])
    return tuple(found)
