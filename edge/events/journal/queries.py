"""The recorded events as `crackd events` sees them: listing, finding, labelling, deleting, counting."""

from __future__ import annotations

import re
import time

from edge.events.journal.connection import JournalConnection
from edge.events.journal.errors import JournalError
from edge.events.journal.rows import EventRow, JournalCounts, RecordedFrame
from edge.vocabulary import LABELS

# A reference is an event id (digits) or a uuid / uuid prefix: hex digits and dashes only.
_REFERENCE = re.compile(r"[0-9a-fA-F-]+")
_EVENT_WITH_LABEL = (
    "SELECT e.*, l.label AS label, l.note AS label_note, l.labelled_at AS labelled_at "
    "FROM events e LEFT JOIN labels l ON l.event_uuid = e.uuid"
)


class EventQueries(JournalConnection):
    def list_events(
        self,
        since: float | None = None,
        until: float | None = None,
        state: str | None = None,
        min_score: float | None = None,
        label: str | None = None,
        limit: int | None = None,
        newest_first: bool = True,
        kind: str | None = None,
    ) -> list[EventRow]:
        """`kind`: only events (`event`) or only one kind of frame kept to be labelled (edge.vocabulary)."""
        where: list[str] = []
        params: list[float | str] = []
        if since is not None:
            where.append("e.started_at >= ?")
            params.append(since)
        if until is not None:
            where.append("e.started_at < ?")
            params.append(until)
        if state:
            where.append("e.state = ?")
            params.append(state)
        if min_score is not None:
            where.append("e.peak_score >= ?")
            params.append(min_score)
        if kind:
            where.append("e.kind = ?")
            params.append(kind)
        if label == "none":
            where.append("l.label IS NULL")
        elif label:
            where.append("l.label = ?")
            params.append(label)
        sql = (
            _EVENT_WITH_LABEL
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY e.id {'DESC' if newest_first else 'ASC'}"
            + (f" LIMIT {int(limit)}" if limit else "")
        )
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [EventRow.from_row(r) for r in rows]

    def find_event(self, ref: str) -> EventRow | None:
        """An event by numeric id, full uuid, or a unique uuid prefix (>= 4 characters).

        A uuid may begin with digits only (about one in forty do), so an all-digit
        reference is looked up both as an id and as a prefix; if it names two
        different events the caller is asked for more of the uuid.
        """
        # Checked before anything else: `%` and `_` are LIKE wildcards, and a reference is matched as a prefix.
        if not _REFERENCE.fullmatch(ref):
            raise JournalError(f"{ref!r} is not an event id or uuid (expected digits, or hex digits and dashes)")
        ref = ref.lower()
        with self._lock:
            c = self._conn
            rows = c.execute(f"{_EVENT_WITH_LABEL} WHERE e.uuid = ?", (ref,)).fetchall()
            if not rows:
                if ref.isdigit() and len(ref) <= 18:  # beyond SQLite's 64-bit integers no id exists
                    rows = c.execute(f"{_EVENT_WITH_LABEL} WHERE e.id = ?", (int(ref),)).fetchall()
                if len(ref) >= 4:
                    rows += c.execute(
                        f"{_EVENT_WITH_LABEL} WHERE substr(e.uuid, 1, ?) = ? LIMIT 2", (len(ref), ref)
                    ).fetchall()
                if len({r["uuid"] for r in rows}) > 1:
                    raise JournalError(f"event {ref!r} is ambiguous; give more of the uuid")
        return EventRow.from_row(rows[0]) if rows else None

    def event_frames(self, uuid: str) -> list[RecordedFrame]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM frames WHERE event_uuid = ? ORDER BY id", (uuid,)).fetchall()
        return [RecordedFrame.from_row(r) for r in rows]

    def set_label(self, uuid: str, label: str, note: str | None = None) -> None:
        if label not in LABELS:
            raise JournalError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
        with self._lock:
            self._conn.execute(
                "INSERT INTO labels (event_uuid, label, note, labelled_at) VALUES (?,?,?,?) ON CONFLICT(event_uuid) "
                "DO UPDATE SET label=excluded.label, note=excluded.note, labelled_at=excluded.labelled_at",
                (uuid, label, note, time.time()),
            )

    def delete_event(self, uuid: str) -> list[str]:
        """Delete an event with its frames, label and undelivered MQTT messages; returns its snapshot paths.

        A deleted event is not announced afterwards: its queued messages go with it (docs/mqtt.md).
        The caller removes the snapshot files.
        """
        with self._lock, self._transaction() as c:
            row = c.execute("SELECT snapshot, overlay FROM events WHERE uuid = ?", (uuid,)).fetchone()
            c.execute("DELETE FROM outbox WHERE event_uuid = ?", (uuid,))
            c.execute("DELETE FROM frames WHERE event_uuid = ?", (uuid,))
            c.execute("DELETE FROM labels WHERE event_uuid = ?", (uuid,))
            c.execute("DELETE FROM events WHERE uuid = ?", (uuid,))
        return [p for p in (row or (None, None)) if p]

    def counts(self) -> JournalCounts:
        with self._lock:
            c = self._conn
            return JournalCounts(
                *(
                    c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                    for table in ("frames", "events", "outbox", "labels")
                )
            )
