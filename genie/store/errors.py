"""The store's own failures, each with a one-line message an operator can act on."""

from __future__ import annotations

from pathlib import Path


class StoreError(Exception):
    """Base of everything the event store raises about its file or its callers' requests."""


class MissingDatabaseError(StoreError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"no event log at {path}")
        self.path = path


class CorruptDatabaseError(StoreError):
    """Not an SQLite file, or SQLite reports damage. Genie never repairs it."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"{path} is not a readable genie event log: {detail}")
        self.path = path


class SchemaTooNewError(StoreError):
    """The file was migrated by a newer genie; this one refuses to read or touch it."""

    def __init__(self, path: Path, found: int, known: int) -> None:
        super().__init__(
            f"{path} has schema version {found}, newer than {known} known to this genie:"
            " upgrade genie"
        )
        self.found = found
        self.known = known


class SchemaTooOldError(StoreError):
    """The file needs migrations this opener was told not to run."""

    def __init__(self, path: Path, found: int, known: int) -> None:
        super().__init__(
            f"{path} has schema version {found}, expected {known}: run `genie migrate --db {path}`"
        )
        self.found = found
        self.known = known


class UnknownEventKindError(StoreError):
    """The log holds an event kind this genie does not know (written by a newer genie?)."""


class UndecodableEventError(StoreError):
    """A stored event or snapshot does not decode as its kind says."""


class ConcurrencyError(StoreError):
    """The stream moved on since the caller read it: nothing of that append was written."""

    def __init__(self, stream: str, *, expected: int, actual: int) -> None:
        super().__init__(
            f"container {stream} is at version {actual}, the append expected {expected}"
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual


class StoreClosedError(StoreError):
    def __init__(self) -> None:
        super().__init__("the event store is closed")
