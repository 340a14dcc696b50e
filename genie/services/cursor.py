"""Appends to one sandbox's stream on behalf of the operation that holds its lock."""

from __future__ import annotations

from genie.domain import events as ev
from genie.store import recorder


class StreamCursor:
    """Tracks the stream head so each append states the version it expects to follow."""

    def __init__(self, store: recorder.EventStore, stream: str, version: int) -> None:
        self._store = store
        self.stream = stream
        self.version = version

    async def append(self, *events: ev.Event) -> None:
        if not events:
            return
        records = await self._store.append(self.stream, events, expected_version=self.version)
        self.version = records[-1].version
