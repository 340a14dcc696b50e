"""One lock per container ID, so operations on the same sandbox never overlap.

Locks are created on demand and dropped when nobody holds or waits for them, so a node
that has seen a million sandboxes keeps only the ones in flight.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio


class KeyedLock:
    def __init__(self) -> None:
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = anyio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock_now, users_now = self._locks[key]
            if users_now <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock_now, users_now - 1)

    def busy(self, key: str) -> bool:
        """True while an operation holds or awaits the key's lock."""
        return key in self._locks

    def __len__(self) -> int:
        return len(self._locks)
