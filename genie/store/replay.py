"""Rebuilding NodeState from the log: from a snapshot plus its tail, or from event 1."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Iterator
from typing import Final

from genie.domain import state as st
from genie.store import errors, reader

# Bump when `genie.domain.state.evolve` changes meaning: older snapshots are then ignored and
# the state is rebuilt from the log (which never changes).
FOLD_VERSION: Final = 1


class InconsistentLogError(errors.StoreError):
    """The log holds a transition the fold rejects: a bug in a writer or a hand-edited file."""


@dataclasses.dataclass(frozen=True, slots=True)
class Loaded:
    state: st.NodeState
    snapshot_seq: int  # 0 when no snapshot was used
    tail: int  # events folded on top of the snapshot


async def fold_from(
    log: reader.EventLog, start: st.NodeState, *, until_seq: int | None = None
) -> tuple[st.NodeState, int]:
    """`start` with every event after it (up to `until_seq`) folded in; also the event count."""
    state, count = start, 0
    with gc_paused():
        async for part in log.chunks(after_seq=start.last_seq, until_seq=until_seq):
            try:
                state = st.fold(part, state)
            except st.InvalidTransitionError as exc:
                raise InconsistentLogError(f"{log.path}: {exc}") from exc
            count += len(part)
    return state, count


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC while folding: decoded events are acyclic (reference counting frees them)
    and the collector's passes over each chunk cost about a third of a replay."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def load(log: reader.EventLog) -> Loaded:
    """What the agent starts from: the latest snapshot of this fold plus the tail after it."""
    snapshot = await log.snapshot(fold_version=FOLD_VERSION)
    start = snapshot.state if snapshot is not None else st.EMPTY
    state, tail = await fold_from(log, start)
    return Loaded(state=state, snapshot_seq=snapshot.seq if snapshot else 0, tail=tail)


async def rebuild(log: reader.EventLog, *, until_seq: int | None = None) -> st.NodeState:
    """The state folded from event 1: slow, and trusts nothing but the log."""
    state, _ = await fold_from(log, st.EMPTY, until_seq=until_seq)
    return state
