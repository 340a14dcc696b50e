"""CNI ADD: plan the pod's networks, record the intent, run the delegates, merge or roll back.

The log gets two commits on the happy path: AddRequested before any delegate runs (so a crash
leaves a trace recovery can undo) and the delegate results with AddCompleted before the reply.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import anyio

from genie.cni import errors, results, wire
from genie.domain import events as ev
from genie.domain import state as st
from genie.networks import registry as reg
from genie.networks import selection
from genie.pods import source as pods
from genie.services import context, cursor, plan, release
from genie.store import recorder

log = logging.getLogger("genie.add")


@dataclasses.dataclass(slots=True)
class _Outcome:
    result: dict[str, Any] | None = None
    error: errors.CniError | None = None


def pod_ref(req: wire.CniRequest) -> ev.PodRef:
    """The pod named by the runtime's CNI_ARGS (podman sends no namespace: `default`)."""
    return ev.PodRef(
        namespace=req.arg("K8S_POD_NAMESPACE") or "default",
        name=req.arg("K8S_POD_NAME") or "",
        uid=req.arg("K8S_POD_UID") or "",
    )


async def add(svc: context.Services, req: wire.CniRequest) -> dict[str, Any]:
    async with svc.locks.hold(req.container_id):
        existing = svc.store.state.attachments.get(req.container_id)
        if existing is not None:
            return _repeated_add(existing, req)
        if not release.is_netns(req.netns):
            raise errors.CniError(
                errors.INVALID_ENV,
                f"CNI_NETNS {req.netns} does not exist or is not a network namespace",
            )
        ref = pod_ref(req)
        try:
            return await _add_new(svc, req, ref)
        except errors.CniError as exc:
            if svc.observer is not None and ref.name:
                svc.observer.add_failed(ref, exc.msg)
            raise


async def _add_new(svc: context.Services, req: wire.CniRequest, ref: ev.PodRef) -> dict[str, Any]:
    """ADD of a sandbox with nothing recorded (caller holds its lock)."""
    annotations = await _annotations(svc, ref)
    requests = selection.select_networks(
        annotations,
        default_network=svc.default_network,
        primary_ifname=req.ifname,
        pod=str(ref),
    )
    plans = plan.plan_delegates(
        requests,
        registry=svc.networks,
        pod=str(ref),
        pod_namespace=ref.namespace,
        attachment_definitions=await _attachment_definitions(svc, requests, pod=ref),
    )
    plans = tuple(_with_runtime_args(p, req.args) for p in plans)
    _check_plugins(svc, plans, pod=ref)
    stream = cursor.StreamCursor(svc.store, req.container_id, recorder.NOT_LIVE)
    await stream.append(
        ev.AddRequested(
            pod=ref,
            netns=req.netns,
            runtime_cni_version=req.cni_version,
            delegates=plans,
            ifname=req.ifname,
        )
    )
    outcomes = await _run_delegates(svc, plans, container_id=req.container_id, netns=req.netns)
    recorded = _outcome_events(plans, outcomes)
    failure = next(((p, o.error) for p, o in zip(plans, outcomes, strict=True) if o.error), None)
    if failure is None:
        try:
            merged = results.merge([o.result or {} for o in outcomes], to_version=req.cni_version)
        except errors.CniError as exc:
            failure = (plans[0], exc)
        else:
            await stream.append(*recorded, ev.AddCompleted(result=merged))
            if svc.observer is not None:
                svc.observer.attached(svc.store.state.attachments[req.container_id])
            log.info("ADD %s container %s: %s", ref, req.container_id, _summary(plans, outcomes))
            return merged
    failed_plan, error = failure
    await stream.append(*recorded)
    reason = f"network {failed_plan.network} ({failed_plan.ifname}): {error.msg}"
    log.error("ADD %s container %s failed on %s; rolling back", ref, req.container_id, reason)
    await release.roll_back(svc, stream, reason=reason)
    raise errors.CniError(
        error.code, f"ADD for pod {ref} failed on {reason}; rolled back", error.details
    )


def _repeated_add(att: st.Attachment, req: wire.CniRequest) -> dict[str, Any]:
    """A second ADD for a live sandbox: the same attachment again is answered from the log."""
    if att.phase is st.Phase.ATTACHED and att.ifname == req.ifname and att.result is not None:
        return results.convert(att.result, to_version=req.cni_version)
    raise errors.CniError(
        errors.TRY_AGAIN_LATER,
        f"container {req.container_id} of pod {att.pod} is already {att.phase} as "
        f"{att.ifname or '?'}; DEL it before adding it again",
    )


async def _attachment_definitions(
    svc: context.Services, requests: Sequence[selection.NetworkRequest], *, pod: ev.PodRef
) -> plan.AttachmentDefinitions | None:
    """The NADs the pod asks for, looked up before planning: from the cache, or after a brief
    wait for the watch and one GET (a NAD applied together with its pod may not be cached)."""
    source = svc.attachment_definitions
    if source is None:
        return None
    found: dict[tuple[str, str], reg.NetworkConfig | reg.UnknownNetworkError] = {}
    for request in requests:
        key = (request.namespace or pod.namespace, request.name)
        if request.attachment_definition and key not in found:
            try:
                found[key] = await source.get(namespace=key[0], name=key[1])
            except reg.UnknownNetworkError as exc:
                found[key] = exc

    def lookup(namespace: str, name: str) -> reg.NetworkConfig:
        hit = found[(namespace, name)]
        if isinstance(hit, reg.UnknownNetworkError):
            raise hit
        return hit

    return lookup


async def _annotations(svc: context.Services, ref: ev.PodRef) -> dict[str, str]:
    if not ref.name:
        return {}
    try:
        pod = await svc.pods.get(namespace=ref.namespace, name=ref.name, uid=ref.uid)
    except pods.PodNotFoundError as exc:
        if svc.require_pod:
            raise errors.CniError(
                errors.INVALID_ENV, f"pod {ref} (uid {ref.uid or '?'}) does not exist: {exc}"
            ) from exc
        log.info("pod %s is not known to the pod source: default network only", ref)
        return {}
    except pods.PodSourceUnavailableError as exc:
        raise errors.CniError(
            errors.TRY_AGAIN_LATER, f"pod {ref} cannot be looked up now: {exc}"
        ) from exc
    return dict(pod.annotations)


def _check_plugins(
    svc: context.Services, plans: Sequence[ev.PlannedDelegate], *, pod: ev.PodRef
) -> None:
    """Every plugin must resolve before anything is recorded: a network whose plugin cannot
    run would fail its DEL the same way, and the pod could then never be deleted."""
    for planned in plans:
        for plugin in planned.plugins:
            try:
                svc.runner.resolve(plugin.get("type"), network=planned.network)
            except errors.CniError as exc:
                raise errors.CniError(exc.code, f"pod {pod}: {exc.msg}", exc.details) from None


def _with_runtime_args(
    planned: ev.PlannedDelegate, runtime_args: Sequence[tuple[str, str]]
) -> ev.PlannedDelegate:
    """Record the runtime's CNI_ARGS in the plan too: the log then holds the full invocation."""
    own = {k for k, _ in planned.cni_args}
    merged = tuple((k, v) for k, v in runtime_args if k not in own) + planned.cni_args
    return dataclasses.replace(planned, cni_args=merged)


async def _run_delegates(
    svc: context.Services,
    plans: Sequence[ev.PlannedDelegate],
    *,
    container_id: str,
    netns: str,
) -> list[_Outcome]:
    outcomes = [_Outcome() for _ in plans]

    async def run_one(index: int) -> None:
        try:
            outcomes[index].result = await svc.runner.add(
                plans[index], container_id=container_id, netns=netns
            )
        except errors.CniError as exc:
            outcomes[index].error = exc

    if all(p.parallel for p in plans):
        async with anyio.create_task_group() as tg:
            for index in range(len(plans)):
                tg.start_soon(run_one, index)
    else:  # a network asked for `parallel: false`: request order, stop at the first failure
        for index in range(len(plans)):
            await run_one(index)
            if outcomes[index].error is not None:
                break
    return outcomes


def _outcome_events(
    plans: Sequence[ev.PlannedDelegate], outcomes: Sequence[_Outcome]
) -> list[ev.Event]:
    recorded: list[ev.Event] = []
    for planned, outcome in zip(plans, outcomes, strict=True):
        if outcome.error is not None:
            err = outcome.error
            recorded.append(
                ev.DelegateFailed(
                    index=planned.index, code=err.code, msg=err.msg, details=err.details
                )
            )
        elif outcome.result is not None:
            recorded.append(ev.DelegateAdded(index=planned.index, result=outcome.result))
    return recorded


def _summary(plans: Sequence[ev.PlannedDelegate], outcomes: Sequence[_Outcome]) -> str:
    return ", ".join(
        f"{p.ifname}={p.network}[{' '.join(st.addresses(o.result))}]"
        for p, o in zip(plans, outcomes, strict=True)
    )
