"""Bytes <-> domain objects for the log and snapshots: one place owns the wire form of events.

msgspec decodes straight into the frozen dataclasses (about 1 us an event), which is what lets a
million-event replay fit in seconds; the JSON it writes is plain and readable with sqlite3.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from genie.domain import events as ev
from genie.domain import state as st


class UnknownEventKindError(Exception):
    """The log holds an event kind this version of genie does not know (a newer writer?)."""

    def __init__(self, kind: str, seq: int | None = None) -> None:
        where = f" at seq {seq}" if seq is not None else ""
        super().__init__(f"unknown event kind {kind!r}{where}: written by a newer genie?")
        self.kind = kind


class UndecodableEventError(Exception):
    """An event's payload does not match its kind (a corrupt or hand-edited log)."""


_ENCODER: Final = msgspec.json.Encoder()
_DECODERS: Final[Mapping[str, msgspec.json.Decoder[Any]]] = {
    kind: msgspec.json.Decoder(cls) for kind, cls in ev.EVENT_TYPES.items()
}
_STATE_DECODER: Final = msgspec.json.Decoder(st.NodeState)


def encode_event(event: ev.Event) -> bytes:
    return _ENCODER.encode(event)


def decode_event(kind: str, payload: bytes | str, seq: int | None = None) -> ev.Event:
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise UnknownEventKindError(kind, seq)
    try:
        event: ev.Event = decoder.decode(payload)
    except msgspec.DecodeError as exc:
        where = f" at seq {seq}" if seq is not None else ""
        raise UndecodableEventError(f"{kind} payload{where} does not decode: {exc}") from exc
    return event


def decode_records(
    rows: Iterable[tuple[int, str, int, str, float, bytes | str]],
) -> list[ev.Recorded]:
    """Rows (seq, stream, version, kind, recorded_at, payload) as Recorded, in bulk for replay.

    The fast path skips per-row error handling; any failure re-runs the rows one by one so
    the error names the kind and seq exactly as decode_event does.
    """
    rows = list(rows)
    decoders = _DECODERS
    try:
        return [
            ev.Recorded(seq, stream, version, at, decoders[kind].decode(payload))
            for seq, stream, version, kind, at, payload in rows
        ]
    except (KeyError, msgspec.DecodeError):
        return [
            ev.Recorded(seq, stream, version, at, decode_event(kind, payload, seq))
            for seq, stream, version, kind, at, payload in rows
        ]


def to_builtins(obj: object) -> Any:
    """Plain JSON-ready structures (for --json output and comparisons)."""
    return msgspec.to_builtins(obj)


def encode_state(state: st.NodeState) -> bytes:
    return _ENCODER.encode(state)


def decode_state(payload: bytes | str) -> st.NodeState:
    try:
        return _STATE_DECODER.decode(payload)
    except msgspec.DecodeError as exc:
        raise UndecodableEventError(f"snapshot does not decode: {exc}") from exc
