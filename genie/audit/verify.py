"""`genie replay --verify`: the state rebuilt from event 1 must equal every snapshot.

The agent starts from the latest snapshot plus the tail after it; this checks that shortcut
against the slow truth, snapshot by snapshot, and names the first field that differs.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from genie.domain import codec
from genie.domain import state as st
from genie.store import reader, replay


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    events: int
    snapshots: int
    state: st.NodeState
    difference: str  # empty when everything matched


def first_difference(snapshot: Any, rebuilt: Any, path: str = "state") -> str:
    """Where two structures first differ ('' when equal), in a deterministic order.

    Descends into mappings, sequences (a list and a tuple of equal items are equal: the
    decoded snapshot and the folded state need not use the same one) and dataclasses, so the
    path names the innermost differing element, e.g. `state['attachments']['ID']['delegates']
    [1]['plan']['ifname']`, or `.field` for a dataclass's field.
    """
    if isinstance(snapshot, Mapping) and isinstance(rebuilt, Mapping):
        for key in sorted(set(snapshot) | set(rebuilt), key=str):
            where = f"{path}[{key!r}]"
            if key not in rebuilt:
                return f"{where} only in the snapshot"
            if key not in snapshot:
                return f"{where} only in the replay"
            found = first_difference(snapshot[key], rebuilt[key], where)
            if found:
                return found
        return ""
    if _is_sequence(snapshot) and _is_sequence(rebuilt):
        for index, (a, b) in enumerate(zip(snapshot, rebuilt, strict=False)):
            found = first_difference(a, b, f"{path}[{index}]")
            if found:
                return found
        if len(snapshot) != len(rebuilt):
            return f"{path}: {len(snapshot)} items in the snapshot, {len(rebuilt)} in the replay"
        return ""
    if _is_dataclass(snapshot) and _is_dataclass(rebuilt) and type(snapshot) is type(rebuilt):
        for field in dataclasses.fields(snapshot):
            found = first_difference(
                getattr(snapshot, field.name), getattr(rebuilt, field.name), f"{path}.{field.name}"
            )
            if found:
                return found
        return ""
    if snapshot != rebuilt or type(snapshot) is not type(rebuilt):
        return f"{path}: snapshot {snapshot!r} != replay {rebuilt!r}"
    return ""


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _is_dataclass(value: object) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def compare(snapshot: st.NodeState, rebuilt: st.NodeState) -> str:
    # Same JSON, same state (JSON tells true, 1 and 1.0 apart): the walk below, the slow
    # part, runs only for a mismatch or a mere difference in dict order.
    if codec.encode_state(snapshot) == codec.encode_state(rebuilt):
        return ""
    return first_difference(codec.to_builtins(snapshot), codec.to_builtins(rebuilt))


async def verify(log: reader.EventLog) -> Outcome:
    """Fold from event 1, checking each snapshot at its seq, then latest snapshot + tail."""
    pending = deque(await log.snapshot_seqs(fold_version=replay.FOLD_VERSION))
    checked = 0
    state, events = st.EMPTY, 0
    try:
        async for part in log.chunks():
            seqs = [rec.seq for rec in part]
            start = 0
            while pending and pending[0] <= seqs[-1]:
                at = pending.popleft()
                cut = bisect.bisect_right(seqs, at)
                state = st.fold(part[start:cut], state)
                start = cut
                checked += 1
                difference = await _check(log, at, state)
                if difference:
                    return Outcome(events + cut, checked, state, difference)
            state = st.fold(part[start:], state)
            events += len(part)
    except st.InvalidTransitionError as exc:
        return Outcome(events, checked, state, f"the log itself does not fold: {exc}")
    if pending:
        return Outcome(
            events, checked, state, f"snapshot at seq {pending[0]} is beyond the last event"
        )
    loaded = await replay.load(log)
    difference = compare(loaded.state, state)
    if difference:
        difference = f"latest snapshot (seq {loaded.snapshot_seq}) + tail: {difference}"
    return Outcome(events, checked, state, difference)


async def _check(log: reader.EventLog, at: int, state: st.NodeState) -> str:
    snapshot = await log.snapshot(fold_version=replay.FOLD_VERSION, at_seq=at)
    if snapshot is None:  # pragma: no cover - listed a moment ago, snapshots are never deleted
        return f"snapshot at seq {at} vanished"
    difference = compare(snapshot.state, state)
    return f"snapshot at seq {at}: {difference}" if difference else ""
