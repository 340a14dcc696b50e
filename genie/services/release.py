"""Undoing attachments from the log alone: CNI DEL, ADD rollback, and genie's own releases.

Nothing here looks at the pod or the net dir: the delegate configs and results recorded at ADD
are all a DEL needs. A stream ends only when every delegate DEL succeeded; otherwise the
attachment stays recorded and the next DEL tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import anyio

from genie.cni import errors
from genie.domain import events as ev
from genie.domain import state as st
from genie.services import context, cursor

log = logging.getLogger("genie.del")


async def delete(
    svc: context.Services,
    *,
    container_id: str,
    ifname: str,
    netns: str,
    initiator: str = ev.INITIATOR_RUNTIME,
    reason: str = "",
) -> None:
    """Detach a sandbox; an unknown (or already deleted) container is a success."""
    async with svc.locks.hold(container_id):
        att = svc.store.state.attachments.get(container_id)
        if att is None:
            log.debug("DEL container %s: nothing recorded, nothing to do", container_id)
            return
        if ifname and att.ifname and ifname != att.ifname:
            log.warning(
                "DEL container %s %s: genie attached it as %s; leaving it alone",
                container_id,
                ifname,
                att.ifname,
            )
            return
        await release_locked(svc, att, netns=netns, initiator=initiator, reason=reason)


async def release_locked(
    svc: context.Services,
    att: st.Attachment,
    *,
    netns: str,
    initiator: str,
    reason: str = "",
) -> None:
    """DEL every delegate of `att` (caller holds its lock) and end the stream if all succeed."""
    stream = cursor.StreamCursor(svc.store, att.container_id, att.version)
    await stream.append(ev.DelRequested(initiator=initiator, reason=reason))
    recorded, failure = await _delete_delegates(svc, att, netns=netns)
    if failure is None:
        done: ev.Event = (
            ev.DelCompleted()
            if initiator == ev.INITIATOR_RUNTIME
            else ev.Released(initiator=initiator, reason=reason)
        )
        await stream.append(*recorded, done)
        log.info("DEL %s container %s (%s): released", att.pod, att.container_id, initiator)
        return
    await stream.append(*recorded)
    planned, error = failure
    raise errors.CniError(
        error.code,
        f"DEL for pod {att.pod} failed on network {planned.network} ({planned.ifname}): "
        f"{error.msg}; the attachment stays recorded until a DEL succeeds",
        error.details,
    )


async def roll_back(
    svc: context.Services, stream: cursor.StreamCursor, *, reason: str, started_only: bool = True
) -> bool:
    """Undo an unfinished ADD (caller holds the lock); True when the stream ended.

    `started_only`: this process ran the ADD and knows which delegates it never started;
    crash recovery does not know, so it DELs every delegate (DEL is idempotent).
    """
    att = svc.store.state.attachments[stream.stream]
    recorded, failure = await _delete_delegates(
        svc, att, netns=att.netns, started_only=started_only
    )
    if failure is None:
        await stream.append(*recorded, ev.AddRolledBack(reason=reason))
        return True
    await stream.append(*recorded)
    planned, error = failure
    log.error(
        "rollback of pod %s container %s left network %s (%s) behind: %s; a DEL will retry",
        att.pod,
        att.container_id,
        planned.network,
        planned.ifname,
        error.msg,
    )
    return False


async def _delete_delegates(
    svc: context.Services,
    att: st.Attachment,
    *,
    netns: str,
    started_only: bool = False,
) -> tuple[list[ev.Event], tuple[ev.PlannedDelegate, errors.CniError] | None]:
    """DEL delegates in reverse request order; return their events and the first failure.

    Every delegate not known to be deleted is DEL'd, planned ones included: after a crash
    nobody knows whether they ran, and DEL is idempotent. `started_only` (rollback in the
    same process) skips the ones this process never started.
    """
    skip = {st.DelegateStatus.DELETED}
    if started_only:
        skip.add(st.DelegateStatus.PLANNED)
    targets = [d for d in reversed(att.delegates) if d.status not in skip]
    usable_netns = _usable_netns(netns, att.netns)
    errors_by_index: dict[int, errors.CniError] = {}

    async def run_one(target: st.DelegateState) -> None:
        try:
            await svc.runner.delete(
                target.plan,
                prev_result=target.result,
                container_id=att.container_id,
                netns=usable_netns,
            )
        except errors.CniError as exc:
            errors_by_index[target.plan.index] = exc

    if all(d.plan.parallel for d in targets):
        async with anyio.create_task_group() as tg:
            for target in targets:
                tg.start_soon(run_one, target)
    else:
        for target in targets:
            await run_one(target)
    return _events(targets, errors_by_index), _first_failure(targets, errors_by_index)


def _usable_netns(requested: str, recorded: str) -> str:
    """The runtime's netns if it still is one, else the recorded one, else none (DEL allows it)."""
    for candidate in (requested, recorded):
        if candidate and is_netns(candidate):
            return candidate
    return ""


def is_netns(path: str) -> bool:
    """True when `path` is a network namespace (a bind mount or /proc/PID/ns/net, on nsfs).

    A path that merely exists is not enough: every delegate fails on a plain file, its DEL
    as well, and the attachment could then never be deleted.
    """
    try:
        return Path(path).stat().st_dev == Path("/proc/thread-self/ns/net").stat().st_dev
    except OSError:
        return False


def _events(
    targets: Sequence[st.DelegateState], failed: dict[int, errors.CniError]
) -> list[ev.Event]:
    out: list[ev.Event] = []
    for target in targets:
        index = target.plan.index
        err = failed.get(index)
        if err is None:
            out.append(ev.DelegateDeleted(index=index))
        else:
            out.append(
                ev.DelegateDeleteFailed(
                    index=index, code=err.code, msg=err.msg, details=err.details
                )
            )
    return out


def _first_failure(
    targets: Sequence[st.DelegateState], failed: dict[int, errors.CniError]
) -> tuple[ev.PlannedDelegate, errors.CniError] | None:
    for target in reversed(targets):  # request order
        err = failed.get(target.plan.index)
        if err is not None:
            return target.plan, err
    return None
