"""Route one decoded CNI request to its use case and turn the outcome into the reply.

Every failure leaves here as a CniError with a spec code; anything else is a bug, logged with
its traceback and reported as genie's internal error code (never a silent success).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from genie.cni import errors, wire
from genie.daemon import metrics as agent_metrics
from genie.domain import events as ev
from genie.services import attach, context, inspect, release

log = logging.getLogger("genie.dispatch")


async def handle(
    svc: context.Services, req: wire.CniRequest, *, metrics: agent_metrics.AgentMetrics
) -> dict[str, Any] | None:
    """The JSON to print for a successful request (None: print nothing), or raise CniError."""
    started = time.perf_counter()
    code: int | None = None
    metrics.in_flight.inc()
    try:
        return await _route(svc, req)
    except errors.CniError as exc:
        code = exc.code
        raise
    except Exception as exc:
        code = errors.INTERNAL
        log.exception("%s container %s: internal error", req.command, req.container_id)
        raise errors.CniError(
            errors.INTERNAL, f"genie internal error during {req.command}: {exc!r}"
        ) from exc
    finally:
        metrics.in_flight.dec()
        metrics.request_done(req.command, code)
        metrics.latency.labels(req.command).observe(time.perf_counter() - started)


async def _route(svc: context.Services, req: wire.CniRequest) -> dict[str, Any] | None:
    match req.command:
        case "ADD":
            return await attach.add(svc, req)
        case "DEL":
            await release.delete(
                svc,
                container_id=req.container_id,
                ifname=req.ifname,
                netns=req.netns,
                initiator=ev.INITIATOR_RUNTIME,
            )
            return None
        case "CHECK":
            await inspect.check(svc, req)
            return None
        case "STATUS":
            inspect.status(svc)
            return None
        case "GC":
            await inspect.gc(svc, req)
            return None
    raise errors.CniError(errors.INVALID_ENV, f"CNI_COMMAND {req.command} is not handled here")
