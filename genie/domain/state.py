"""Current attachments as a pure fold over the event log: no I/O, no clock, no async.

`evolve` is the whole state machine of one sandbox; `fold` applies it to a log. The same
events always fold to the same state, which is what makes replay, snapshots, recovery plans
and `genie replay --verify` trustworthy.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
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


def _with_delegate(att: Attachment, index: int, **changes: Any) -> tuple[DelegateState, ...]:
    if not 0 <= index < len(att.delegates):
        raise InvalidTransitionError(att.container_id, f"delegate index {index}", att.phase)
    delegates = list(att.delegates)
    delegates[index] = dataclasses.replace(delegates[index], **changes)
    return tuple(delegates)


def _next(att: Attachment, rec: ev.Recorded, **changes: Any) -> Attachment:
    return dataclasses.replace(att, version=rec.version, updated_at=rec.recorded_at, **changes)


def _require(att: Attachment, event: ev.Event, *phases: Phase) -> None:
    if att.phase not in phases:
        raise InvalidTransitionError(att.container_id, event.kind, att.phase)


def _end(att: Attachment, event: ev.Event, *phases: Phase) -> None:
    _require(att, event, *phases)
    if att.holding():
        raise InvalidTransitionError(
            att.container_id, f"{event.kind} with delegates held", att.phase
        )


def evolve(att: Attachment | None, rec: ev.Recorded) -> Attachment | None:
    """The next state of one sandbox after `rec`; None when the sandbox holds nothing."""
    event = rec.event
    if att is None:
        if not isinstance(event, ev.AddRequested):
            raise InvalidTransitionError(rec.stream, event.kind, "absent")
        return Attachment(
            container_id=rec.stream,
            pod=event.pod,
            netns=event.netns,
            runtime_cni_version=event.runtime_cni_version,
            phase=Phase.ADDING,
            delegates=tuple(DelegateState(plan=p) for p in event.delegates),
            version=rec.version,
            requested_at=rec.recorded_at,
            updated_at=rec.recorded_at,
            ifname=event.ifname,
        )
    match event:
        case ev.AddRequested():
            raise InvalidTransitionError(rec.stream, event.kind, att.phase)
        case ev.DelegateAdded(index=index, result=result):
            _require(att, event, Phase.ADDING, Phase.ROLLING_BACK)
            delegates = _with_delegate(att, index, status=DelegateStatus.ADDED, result=result)
            return _next(att, rec, delegates=delegates)
        case ev.DelegateFailed(index=index, msg=msg):
            _require(att, event, Phase.ADDING, Phase.ROLLING_BACK)
            delegates = _with_delegate(att, index, status=DelegateStatus.FAILED, error=msg)
            return _next(att, rec, delegates=delegates, phase=Phase.ROLLING_BACK)
        case ev.AddCompleted(result=result):
            _require(att, event, Phase.ADDING)
            if any(d.status is not DelegateStatus.ADDED for d in att.delegates):
                raise InvalidTransitionError(
                    att.container_id, "AddCompleted with missing delegates", att.phase
                )
            return _next(att, rec, phase=Phase.ATTACHED, result=result, annotation_pending=True)
        case ev.AddRolledBack():
            _end(att, event, Phase.ADDING, Phase.ROLLING_BACK)
            return None
        case ev.DelRequested(initiator=initiator):
            return _next(att, rec, phase=Phase.DELETING, initiator=initiator)
        case ev.DelegateDeleted(index=index):
            _require(att, event, Phase.ADDING, Phase.ROLLING_BACK, Phase.DELETING)
            delegates = _with_delegate(att, index, status=DelegateStatus.DELETED, error="")
            phase = Phase.ROLLING_BACK if att.phase is Phase.ADDING else att.phase
            return _next(att, rec, delegates=delegates, phase=phase)
        case ev.DelegateDeleteFailed(index=index, msg=msg):
            _require(att, event, Phase.ADDING, Phase.ROLLING_BACK, Phase.DELETING)
            delegates = _with_delegate(att, index, status=DelegateStatus.DELETE_FAILED, error=msg)
            phase = Phase.ROLLING_BACK if att.phase is Phase.ADDING else att.phase
            return _next(att, rec, delegates=delegates, phase=phase)
        case ev.DelCompleted() | ev.Released():
            _end(att, event, Phase.DELETING)
            return None
        case ev.AnnotationPublished(annotations=annotations):
            return _next(att, rec, annotations=dict(annotations), annotation_pending=False)
        case ev.AnnotationAbandoned():
            return _next(att, rec, annotation_pending=False)
    raise InvalidTransitionError(rec.stream, type(event).__name__, att.phase)  # pragma: no cover


def fold(records: Iterable[ev.Recorded], start: NodeState = EMPTY) -> NodeState:
    """Apply records (in global order) to `start`; `start` itself is never modified."""
    attachments = dict(start.attachments)
    last_seq = start.last_seq
    for rec in records:
        if rec.seq <= last_seq:
            raise InvalidTransitionError(rec.stream, f"seq {rec.seq} after {last_seq}", "replay")
        nxt = evolve(attachments.get(rec.stream), rec)
        if nxt is None:
            attachments.pop(rec.stream, None)
        else:
            attachments[rec.stream] = nxt
        last_seq = rec.seq
    return NodeState(attachments=attachments, last_seq=last_seq)


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
