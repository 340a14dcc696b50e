"""expected_version=NOT_LIVE: the ADD's condition "no live attachment", checked at commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from genie.domain import events as ev
from genie.store import errors, recorder
from tests.store import helpers

pytestmark = pytest.mark.anyio


async def test_new_live_and_ended_streams(tmp_path: Path) -> None:
    async with await recorder.EventStore.open(tmp_path / "events.db") as store:
        (first,) = await store.append(
            "c1", [helpers.add_requested("p", 1)], expected_version=recorder.NOT_LIVE
        )
        assert first.version == 1
        # live now: a second "new" ADD for it must lose, and write nothing
        with pytest.raises(errors.ConcurrencyError):
            await store.append(
                "c1", [helpers.add_requested("p", 1)], expected_version=recorder.NOT_LIVE
            )
        assert store.state.last_seq == 1
        await store.append(
            "c1",
            [ev.DelegateDeleted(index=0), ev.AddRolledBack(reason="test")],
            expected_version=1,
        )
        assert "c1" not in store.state.attachments
        # ended: the stream starts again after its old head, versions stay contiguous
        (again,) = await store.append(
            "c1", [helpers.add_requested("p", 1)], expected_version=recorder.NOT_LIVE
        )
        assert again.version == 4
        assert await store.stream_head("c1") == 4
