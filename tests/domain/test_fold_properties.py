"""The fold against an independent reference model, over random interleaved histories."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from genie.domain import codec
from genie.domain import events as ev
from genie.domain import state as st
from tests.domain import lifecycles

HOLDS = {"added", "failed", "delete-failed"}


def reference(records: list[ev.Recorded]) -> dict[str, dict[str, Any]]:
    """A deliberately naive model: plain dicts, one branch per event kind."""
    model: dict[str, dict[str, Any]] = {}
    for rec in records:
        e = rec.event
        m = model.get(rec.stream)
        if isinstance(e, ev.AddRequested):
            model[rec.stream] = {
                "phase": "adding",
                "delegates": ["planned"] * len(e.delegates),
                "version": rec.version,
                "pod": f"{e.pod.namespace}/{e.pod.name}",
                "pending": False,
            }
            continue
        assert m is not None
        m["version"] = rec.version
        if isinstance(e, ev.DelegateAdded):
            m["delegates"][e.index] = "added"
        elif isinstance(e, ev.DelegateFailed):
            m["delegates"][e.index] = "failed"
            m["phase"] = "rolling-back"
        elif isinstance(e, ev.AddCompleted):
            m["phase"] = "attached"
            m["pending"] = True
        elif isinstance(e, ev.DelRequested):
            m["phase"] = "deleting"
        elif isinstance(e, ev.DelegateDeleted | ev.DelegateDeleteFailed):
            m["delegates"][e.index] = (
                "deleted" if isinstance(e, ev.DelegateDeleted) else "delete-failed"
            )
            if m["phase"] == "adding":
                m["phase"] = "rolling-back"
        elif isinstance(e, ev.AnnotationPublished | ev.AnnotationAbandoned):
            m["pending"] = False
        elif isinstance(e, ev.AddRolledBack | ev.DelCompleted | ev.Released):
            assert not HOLDS & set(m["delegates"])
            del model[rec.stream]
    return model


def project(state: st.NodeState) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "phase": att.phase.value,
            "delegates": [d.status.value for d in att.delegates],
            "version": att.version,
            "pod": str(att.pod),
            "pending": att.annotation_pending,
        }
        for name, att in state.attachments.items()
    }


@given(lifecycles.histories())
@settings(max_examples=200, deadline=None)
def test_fold_matches_reference_model(records: list[ev.Recorded]) -> None:
    state = st.fold(records)
    assert project(state) == reference(records)
    assert state.last_seq == records[-1].seq


@given(lifecycles.histories())
@settings(max_examples=100, deadline=None)
def test_folding_twice_gives_identical_state(records: list[ev.Recorded]) -> None:
    first, second = st.fold(records), st.fold(records)
    assert first == second
    assert codec.encode_state(first) == codec.encode_state(second)


@given(lifecycles.histories(), hs.data())
@settings(max_examples=150, deadline=None)
def test_snapshot_at_any_point_plus_tail_equals_full_fold(
    records: list[ev.Recorded], data: hs.DataObject
) -> None:
    cut = data.draw(hs.integers(0, len(records)))
    snapshot = codec.decode_state(codec.encode_state(st.fold(records[:cut])))
    assert st.fold(records[cut:], snapshot) == st.fold(records)


@given(lifecycles.histories(), hs.data())
@settings(max_examples=150, deadline=None)
def test_invalid_transitions_are_rejected(records: list[ev.Recorded], data: hs.DataObject) -> None:
    cut = data.draw(hs.integers(0, len(records)))
    before = st.fold(records[:cut])
    stream = data.draw(hs.sampled_from(sorted({r.stream for r in records} | {"fresh"})))
    att = before.attachments.get(stream)
    nxt = cut + 1
    candidates: list[ev.Event] = []
    if att is None:  # nothing but AddRequested may start a stream
        candidates += [
            ev.DelegateAdded(index=0, result={}),
            ev.DelCompleted(),
            ev.AddCompleted(result={}),
        ]
    else:
        candidates += [
            ev.AddRequested(pod=att.pod, netns="/x", runtime_cni_version="1.0.0", delegates=()),
            ev.DelegateDeleted(index=len(att.delegates)),  # no such delegate
        ]
        if att.holding():
            candidates.append(ev.DelCompleted())
        if any(d.status is not st.DelegateStatus.ADDED for d in att.delegates):
            candidates.append(ev.AddCompleted(result={}))
        if att.phase is st.Phase.ATTACHED:
            candidates.append(ev.DelegateAdded(index=0, result={}))
    bad = data.draw(hs.sampled_from(candidates))
    version = att.version + 1 if att else 1
    rec = ev.Recorded(nxt, stream, version, 5000.0, bad)
    with pytest.raises(st.InvalidTransitionError):
        st.fold([rec], before)
    assert before == st.fold(records[:cut])  # the start state is never modified


def test_a_record_out_of_global_order_is_rejected() -> None:
    add = ev.AddRequested(
        pod=ev.PodRef("ns", "p"), netns="/x", runtime_cni_version="1.0.0", delegates=()
    )
    with pytest.raises(st.InvalidTransitionError):
        st.fold([ev.Recorded(2, "a", 1, 1.0, add), ev.Recorded(2, "b", 1, 1.0, add)])
