"""Text and JSON forms of audit output: aligned tables, JSON lines, times."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any, Final, TextIO

from genie.audit import timeline
from genie.domain import state as st

EVENT_HEADERS: Final = (
    "TIME",
    "POD",
    "CONTAINER",
    "EVENT",
    "NETWORK",
    "INTERFACE",
    "IPS",
    "DETAIL",
)
STATE_HEADERS: Final = ("POD", "CONTAINER", "PHASE", "NETWORK", "INTERFACE", "IPS", "SINCE")
SHORT_ID: Final = 12


def iso(ts: float) -> str:
    """UTC, millisecond precision, `Z` suffix."""
    moment = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_since(text: str) -> float:
    """An ISO 8601 time (a missing zone means UTC, like the output) as unix seconds."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _joined(values: Sequence[str]) -> str:
    return ",".join(values) if values else "-"


class Table:
    """Columns aligned page by page: memory stays bounded, widths only ever grow."""

    def __init__(self, out: TextIO, headers: Sequence[str], *, page: int = 1000) -> None:
        self._out = out
        self._headers = tuple(headers)
        self._widths = [len(h) for h in headers]
        self._page = page
        self._rows: list[tuple[str, ...]] = []
        self._started = False

    def add(self, row: Sequence[str]) -> None:
        self._rows.append(tuple(row))
        if len(self._rows) >= self._page:
            self.flush()

    def _line(self, row: Sequence[str]) -> str:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], self._widths, strict=False)]
        return "  ".join([*cells, row[-1]]).rstrip()

    def flush(self) -> None:
        for row in self._rows:
            self._widths = [max(w, len(c)) for w, c in zip(self._widths, row, strict=True)]
        lines = [self._line(row) for row in self._rows]
        if not self._started:
            lines.insert(0, self._line(self._headers))
            self._started = True
        self._rows.clear()
        if lines:
            self._out.write("\n".join(lines) + "\n")


def event_cells(row: timeline.Row) -> tuple[str, ...]:
    return (
        iso(row.recorded_at),
        row.pod,
        row.container[:SHORT_ID],
        row.event,
        _joined(row.networks),
        _joined(row.interfaces),
        _joined(row.ips),
        row.detail,
    )


def event_json(row: timeline.Row) -> str:
    return json.dumps(
        {
            "seq": row.seq,
            "time": iso(row.recorded_at),
            "recorded_at": row.recorded_at,
            "container": row.container,
            "version": row.version,
            "pod": row.pod,
            "event": row.event,
            "networks": list(row.networks),
            "interfaces": list(row.interfaces),
            "ips": list(row.ips),
            "detail": row.detail,
            "data": row.data,
        },
        sort_keys=True,
    )


def _delegate_ips(delegate: st.DelegateState) -> tuple[str, ...]:
    return st.addresses(delegate.result) if delegate.status in st.HOLDING else ()


def attachment_cells(att: st.Attachment) -> tuple[str, ...]:
    return (
        str(att.pod),
        att.container_id[:SHORT_ID],
        att.phase.value,
        _joined([d.plan.network for d in att.delegates]),
        _joined([d.plan.ifname for d in att.delegates]),
        _joined([ip for d in att.delegates for ip in _delegate_ips(d)]),
        iso(att.requested_at),
    )


def attachment_json(att: st.Attachment) -> dict[str, Any]:
    return {
        "container": att.container_id,
        "pod": str(att.pod),
        "pod_uid": att.pod.uid,
        "netns": att.netns,
        "phase": att.phase.value,
        "version": att.version,
        "requested_at": iso(att.requested_at),
        "updated_at": iso(att.updated_at),
        "annotation_pending": att.annotation_pending,
        "interfaces": [
            {
                "network": d.plan.network,
                "interface": d.plan.ifname,
                "status": d.status.value,
                "ips": list(_delegate_ips(d)),
                "error": d.error,
            }
            for d in att.delegates
        ],
        "ips": [ip for d in att.delegates for ip in _delegate_ips(d)],
    }


def state_json(state: st.NodeState) -> str:
    atts = sorted(state.attachments.values(), key=lambda a: (str(a.pod), a.container_id))
    body = {"last_seq": state.last_seq, "attachments": [attachment_json(a) for a in atts]}
    return json.dumps(body, sort_keys=True, indent=2)


def state_table(out: TextIO, state: st.NodeState) -> None:
    table = Table(out, STATE_HEADERS)
    for att in sorted(state.attachments.values(), key=lambda a: (str(a.pod), a.container_id)):
        table.add(attachment_cells(att))
    table.flush()
