"""Hypothesis strategies for valid attachment histories, interleaved across streams."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as hs

from genie.domain import events as ev

Draw = Any


def plan(index: int, network: str) -> ev.PlannedDelegate:
    return ev.PlannedDelegate(
        index=index,
        network=network,
        ifname=f"eth{index}",
        cni_version="1.0.0",
        plugins=({"cniVersion": "1.0.0", "name": network, "type": "bridge"},),
    )


def result(index: int, octet: int) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": f"eth{index}", "sandbox": "/run/netns/x"}],
        "ips": [{"address": f"10.{index}.0.{octet}/24", "interface": 0}],
    }


@hs.composite
def lifecycle(draw: Draw, stream_no: int) -> list[ev.Event]:
    """One or more attach/detach cycles of a stream, possibly cut short (left live)."""
    out: list[ev.Event] = []
    for _cycle in range(draw(hs.integers(1, 2))):
        n = draw(hs.integers(1, 3))
        out.append(
            ev.AddRequested(
                pod=ev.PodRef("ns", f"pod-{stream_no}"),
                netns="/run/netns/x",
                runtime_cni_version="1.0.0",
                delegates=tuple(plan(i, f"net-{i}") for i in range(n)),
            )
        )
        order = draw(hs.permutations(range(n)))
        fails = draw(hs.sets(hs.sampled_from(range(n)))) if draw(hs.booleans()) else set()
        held: list[int] = []
        for i in order:
            if i in fails:
                out.append(ev.DelegateFailed(index=i, code=7, msg="boom"))
            else:
                out.append(ev.DelegateAdded(index=i, result=result(i, stream_no % 250)))
            held.append(i)
        if fails:
            for i in held:
                if draw(hs.booleans()):
                    out.append(ev.DelegateDeleteFailed(index=i, code=11, msg="busy"))
                out.append(ev.DelegateDeleted(index=i))
            out.append(ev.AddRolledBack(reason="a delegate failed"))
            continue
        out.append(ev.AddCompleted(result=result(0, stream_no % 250)))
        if draw(hs.booleans()):
            out.append(ev.AnnotationPublished(annotations={"k": str(stream_no)}))
        else:
            out.append(ev.AnnotationAbandoned(reason="pod gone"))
        out.append(ev.DelRequested(initiator=draw(hs.sampled_from(sorted(ev.INITIATORS)))))
        for i in held:
            if draw(hs.booleans()):
                out.append(ev.DelegateDeleteFailed(index=i, code=11, msg="busy"))
            out.append(ev.DelegateDeleted(index=i))
        out.append(ev.DelCompleted() if draw(hs.booleans()) else ev.Released(initiator="gc"))
    cut = draw(hs.integers(1, len(out)))
    return out[:cut]


@hs.composite
def histories(draw: Draw, max_streams: int = 6) -> list[ev.Recorded]:
    """Several streams' lifecycles, randomly interleaved, as committed records."""
    n = draw(hs.integers(1, max_streams))
    per_stream = [draw(lifecycle(i)) for i in range(n)]
    slots = [i for i, events in enumerate(per_stream) for _ in events]
    order = draw(hs.permutations(slots))
    cursors = [0] * n
    records: list[ev.Recorded] = []
    for seq, i in enumerate(order, start=1):
        event = per_stream[i][cursors[i]]
        cursors[i] += 1
        records.append(ev.Recorded(seq, f"c{i:04d}", cursors[i], 1000.0 + seq, event))
    return records
