"""Turning log records into audit rows: who had which address when, and why it went away.

Most events name only a delegate index; the pod, network and interface they refer to are in
the stream's AddRequested, and the addresses a DEL releases are in the earlier DelegateAdded.
`Timeline` keeps that context per live stream while the log streams past (dropped when the
stream ends, so memory follows the live attachments, not the log length).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from genie.domain import codec
from genie.domain import events as ev
from genie.domain import state as st


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    seq: int
    recorded_at: float
    container: str
    version: int
    pod: str
    event: str
    networks: tuple[str, ...]
    interfaces: tuple[str, ...]
    ips: tuple[str, ...]
    detail: str
    data: Any  # the event as plain JSON structures


@dataclasses.dataclass(slots=True)
class _Stream:
    pod: str
    delegates: tuple[ev.PlannedDelegate, ...]
    ips: dict[int, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def delegate(self, index: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if 0 <= index < len(self.delegates):
            plan = self.delegates[index]
            return (plan.network,), (plan.ifname,)
        return (f"?{index}",), ("?",)

    def everything(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(d.network for d in self.delegates), tuple(d.ifname for d in self.delegates)

    def held(self) -> tuple[str, ...]:
        return tuple(ip for index in sorted(self.ips) for ip in self.ips[index])


_ENDS = (ev.AddRolledBack, ev.DelCompleted, ev.Released)


def _error(code: int, msg: str) -> str:
    return f"error {code}: {msg}"


class Timeline:
    """Per-stream context; feed it every record of a stream in order (`needs_context` first)."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}

    def needs_context(self, rec: ev.Recorded) -> bool:
        """True when `rec` continues a stream whose earlier events were not fed (a filter)."""
        return rec.stream not in self._streams and not isinstance(rec.event, ev.AddRequested)

    def observe(self, rec: ev.Recorded) -> Row:
        event = rec.event
        if isinstance(event, ev.AddRequested):
            self._streams[rec.stream] = _Stream(pod=str(event.pod), delegates=event.delegates)
        ctx = self._streams.get(rec.stream) or _Stream(pod="?", delegates=())
        networks, interfaces = ctx.everything()
        ips: tuple[str, ...] = ()
        detail = ""
        match event:
            case ev.AddRequested(netns=netns):
                detail = f"netns {netns}"
            case ev.DelegateAdded(index=index, result=result):
                networks, interfaces = ctx.delegate(index)
                ips = ctx.ips[index] = st.addresses(result)
            case ev.DelegateFailed(index=index, code=code, msg=msg):
                networks, interfaces = ctx.delegate(index)
                detail = _error(code, msg)
            case ev.AddCompleted(result=result):
                ips = st.addresses(result)
            case ev.AddRolledBack(reason=reason):
                detail = reason
            case ev.DelRequested(initiator=initiator, reason=reason):
                ips = ctx.held()
                detail = f"by {initiator}" + (f": {reason}" if reason else "")
            case ev.DelegateDeleted(index=index):
                networks, interfaces = ctx.delegate(index)
                ips = ctx.ips.pop(index, ())
            case ev.DelegateDeleteFailed(index=index, code=code, msg=msg):
                networks, interfaces = ctx.delegate(index)
                ips = ctx.ips.get(index, ())
                detail = _error(code, msg)
            case ev.Released(initiator=initiator, reason=reason):
                detail = f"by {initiator}" + (f": {reason}" if reason else "")
            case ev.AnnotationPublished(annotations=annotations):
                detail = ", ".join(sorted(annotations))
            case ev.AnnotationAbandoned(reason=reason):
                detail = reason
        if isinstance(event, _ENDS):
            self._streams.pop(rec.stream, None)
        return Row(
            seq=rec.seq,
            recorded_at=rec.recorded_at,
            container=rec.stream,
            version=rec.version,
            pod=ctx.pod,
            event=event.kind,
            networks=networks,
            interfaces=interfaces,
            ips=ips,
            detail=detail,
            data=codec.to_builtins(event),
        )

    def __len__(self) -> int:
        return len(self._streams)
