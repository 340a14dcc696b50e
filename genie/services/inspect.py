"""CNI CHECK, GC and STATUS: questions about recorded attachments, answered from the log."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import anyio

from genie.cni import errors, versions, wire
from genie.domain import events as ev
from genie.domain import state as st
from genie.services import context, release

log = logging.getLogger("genie.inspect")

VALID_ATTACHMENTS = "cni.dev/valid-attachments"
MAX_VALID_ATTACHMENTS = 100_000


async def check(svc: context.Services, req: wire.CniRequest) -> None:
    """Run each delegate's CHECK with the result recorded for it at ADD."""
    async with svc.locks.hold(req.container_id):
        att = svc.store.state.attachments.get(req.container_id)
        if att is None or (att.ifname and att.ifname != req.ifname):
            raise errors.CniError(
                errors.UNKNOWN_CONTAINER,
                f"CHECK: no attachment of container {req.container_id} as {req.ifname}",
            )
        if att.phase is not st.Phase.ATTACHED:
            raise errors.CniError(
                errors.TRY_AGAIN_LATER,
                f"CHECK: pod {att.pod} container {req.container_id} is {att.phase}, not attached",
            )
        failures: list[tuple[ev.PlannedDelegate, errors.CniError]] = []

        async def run_one(delegate: st.DelegateState) -> None:
            try:
                await svc.runner.check(
                    delegate.plan,
                    prev_result=delegate.result or {},
                    container_id=att.container_id,
                    netns=req.netns,
                )
            except errors.CniError as exc:
                failures.append((delegate.plan, exc))

        async with anyio.create_task_group() as tg:
            for delegate in att.delegates:
                if versions.supports_check(delegate.plan.cni_version):
                    tg.start_soon(run_one, delegate)
        if failures:
            planned, error = min(failures, key=lambda f: f[0].index)
            raise errors.CniError(
                error.code,
                f"CHECK for pod {att.pod} failed on network {planned.network} "
                f"({planned.ifname}): {error.msg}",
                error.details,
            )


def status(svc: context.Services) -> None:
    if not svc.ready():
        raise errors.CniError(errors.NOT_AVAILABLE, "genie agent is not ready")


async def gc(svc: context.Services, req: wire.CniRequest) -> None:
    """Release every recorded attachment the runtime no longer lists as valid."""
    valid = _valid_attachments(req.config)
    first_error: errors.CniError | None = None
    for att in list(svc.store.state.attachments.values()):
        if (att.container_id, att.ifname) in valid or svc.locks.busy(att.container_id):
            continue
        try:
            await release.delete(
                svc,
                container_id=att.container_id,
                ifname=att.ifname,
                netns=att.netns,
                initiator=ev.INITIATOR_GC,
                reason="not in cni.dev/valid-attachments",
            )
        except errors.CniError as exc:
            log.error("GC could not release container %s: %s", att.container_id, exc.msg)
            first_error = first_error or exc
    if first_error is not None:
        raise first_error


def _valid_attachments(config: Mapping[str, Any]) -> set[tuple[str, str]]:
    raw = config.get(VALID_ATTACHMENTS)
    if raw is None:
        raw = []
    if not isinstance(raw, list) or len(raw) > MAX_VALID_ATTACHMENTS:
        raise errors.CniError(
            errors.INVALID_NETWORK_CONFIG, f"GC: {VALID_ATTACHMENTS} must be a list"
        )
    valid: set[tuple[str, str]] = set()
    for item in raw:
        if not (
            isinstance(item, Mapping)
            and isinstance(item.get("containerID"), str)
            and isinstance(item.get("ifname"), str)
        ):
            raise errors.CniError(
                errors.INVALID_NETWORK_CONFIG,
                f"GC: each {VALID_ATTACHMENTS} entry needs string containerID and ifname",
            )
        valid.add((item["containerID"], item["ifname"]))
    return valid
