"""Crash recovery at start-up: finish or undo whatever the log shows half done.

The plan is a pure function of the replayed state (same log, same plan); carrying it out
appends events like any other operation, so a recovery is itself auditable. Attachments
whose ADD completed are left alone: their pods keep working across an agent restart.
"""

from __future__ import annotations

import dataclasses
import enum
import logging

from genie.cni import errors
from genie.domain import events as ev
from genie.domain import state as st
from genie.services import context, cursor, release

log = logging.getLogger("genie.recovery")


class Action(enum.StrEnum):
    ROLL_BACK = "roll-back"  # an ADD neither completed nor rolled back
    FINISH_DEL = "finish-del"  # a DEL or release began and did not finish


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    container_id: str
    action: Action
    version: int  # the stream version the plan was made from


def plan(state: st.NodeState) -> tuple[Step, ...]:
    """What recovery must do for `state`, in container ID order (deterministic)."""
    steps: list[Step] = []
    for container_id in sorted(state.attachments):
        att = state.attachments[container_id]
        if att.phase in (st.Phase.ADDING, st.Phase.ROLLING_BACK):
            steps.append(Step(container_id, Action.ROLL_BACK, att.version))
        elif att.phase is st.Phase.DELETING:
            steps.append(Step(container_id, Action.FINISH_DEL, att.version))
    return tuple(steps)


async def recover(svc: context.Services) -> tuple[int, int]:
    """Carry out the plan for the current state; (steps done, steps left for a later DEL)."""
    done = left = 0
    for step in plan(svc.store.state):
        async with svc.locks.hold(step.container_id):
            att = svc.store.state.attachments.get(step.container_id)
            if att is None or att.version != step.version:
                continue  # someone (a runtime DEL) got there first
            try:
                finished = await _carry_out(svc, step, att)
            except errors.CniError as exc:
                log.error("recovery of container %s (%s): %s", att.container_id, att.pod, exc.msg)
                finished = False
        done += finished
        left += not finished
    return done, left


async def _carry_out(svc: context.Services, step: Step, att: st.Attachment) -> bool:
    log.info("recovery: %s pod %s container %s", step.action, att.pod, att.container_id)
    if step.action is Action.ROLL_BACK:
        stream = cursor.StreamCursor(svc.store, att.container_id, att.version)
        return await release.roll_back(
            svc, stream, reason="recovery: the agent stopped during ADD", started_only=False
        )
    initiator = att.initiator or ev.INITIATOR_RUNTIME
    await release.release_locked(
        svc, att, netns=att.netns, initiator=initiator, reason="recovery: finishing DEL"
    )
    return True
