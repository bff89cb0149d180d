"""The write path: frame results, event changes and their outbox messages in ONE transaction.

An event is never recorded without being queued for MQTT nor queued without being recorded. Event
transactions use `synchronous=FULL` (survive power loss); frame-only ones `NORMAL` (survive a crash).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable

from edge.events.journal.connection import JournalConnection
from edge.events.journal.rows import EventWrite, FrameRow, OutboxMessage, SampleWrite, to_json


class EventWrites(JournalConnection):
    def record(
        self,
        frames: FrameRow | Iterable[FrameRow] | None = None,
        events: Iterable[EventWrite] = (),
        messages: Iterable[OutboxMessage] = (),
    ) -> list[int]:
        """Write frame results, event changes and their outbox messages in ONE transaction; returns outbox ids."""
        frame_rows = [] if frames is None else [frames] if isinstance(frames, FrameRow) else list(frames)
        event_writes, outbox_messages = list(events), list(messages)
        if not frame_rows and not event_writes and not outbox_messages:
            return []
        durable = bool(event_writes or outbox_messages)
        with self._lock:
            try:
                ids = self._record(frame_rows, event_writes, outbox_messages, durable)
            except sqlite3.Error as exc:
                self._failed_write(exc)
                raise
            self.write_error = None
        return ids

    def record_samples(self, samples: Iterable[SampleWrite]) -> None:
        """Frames kept to be labelled, with their verdict if they come with one, in ONE transaction (no outbox)."""
        rows = list(samples)
        with self._lock:
            if self._reopen:
                self._reopen_connection()
            try:
                with self._transaction() as c:
                    for s in rows:
                        c.execute(
                            "INSERT INTO events (uuid, state, started_at, updated_at, ended_at, end_reason, revision, "
                            "frames, peak_score, peak_frame_seq, first_frame_seq, last_frame_seq, bundle_version, "
                            "bundle_sha256, device_id, snapshot, kind) "
                            "VALUES (?, 'ended', ?, ?, ?, 'sample', 0, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (
                                s.uuid,
                                s.t,
                                s.t,
                                s.t,
                                s.score,
                                s.seq,
                                s.seq,
                                s.seq,
                                s.bundle_version,
                                s.bundle_sha256,
                                s.device_id,
                                s.snapshot,
                                s.kind,
                            ),
                        )
                        if s.label is not None:
                            c.execute(
                                "INSERT INTO labels (event_uuid, label, note, labelled_at) VALUES (?,?,?,?)",
                                (s.uuid, s.label, s.note, time.time()),
                            )
            except sqlite3.Error as exc:
                self._failed_write(exc)
                raise
            self.write_error = None

    def _record(
        self, frames: list[FrameRow], events: list[EventWrite], messages: list[OutboxMessage], durable: bool
    ) -> list[int]:
        if self._reopen:
            self._reopen_connection()
        ids: list[int] = []
        c = self._conn
        if durable:
            c.execute("PRAGMA synchronous=FULL")
        try:
            with self._transaction():
                if frames:
                    c.executemany(
                        "INSERT INTO frames (t, seq, ref, crack, score, segmented, measurements, "
                        "latency_ms, bundle_version, event_uuid) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        [
                            (
                                f.t,
                                f.seq,
                                f.ref,
                                int(f.crack),
                                f.score,
                                int(f.segmented),
                                to_json(f.measurements),
                                f.latency_ms,
                                f.bundle_version,
                                f.event_uuid,
                            )
                            for f in frames
                        ],
                    )
                for ev in events:
                    _write_event(c, ev)
                now = time.time()
                for m in messages:
                    if m.replace_pending:
                        c.execute("DELETE FROM outbox WHERE topic = ? AND output = ?", (m.topic, m.output))
                    data = m.payload if isinstance(m.payload, bytes) else json.dumps(m.payload, separators=(",", ":"))
                    cur = c.execute(
                        "INSERT INTO outbox (topic, payload, qos, retain, created_at, event_uuid, output) "
                        "VALUES (?,?,?,?,?,?,?)",
                        (m.topic, data, m.qos, int(m.retain), now, m.event_uuid, m.output),
                    )
                    ids.append(cur.lastrowid)  # type: ignore[arg-type]  # an INSERT always sets it
        finally:
            if durable:
                c.execute("PRAGMA synchronous=NORMAL")
        return ids


def _write_event(c: sqlite3.Connection, ev: EventWrite) -> None:
    r = ev.record
    values = dict(
        uuid=r.uuid,
        state=r.state,
        started_at=r.started_at,
        updated_at=r.t,
        ended_at=r.ended_at,
        end_reason=r.end_reason,
        revision=r.revision,
        frames=r.frames,
        peak_score=r.peak_score,
        peak_measurements=to_json(r.peak_measurements),
        peak_frame_seq=r.peak_frame_seq,
        first_frame_seq=r.first_frame_seq,
        last_frame_seq=r.last_frame_seq,
        bundle_version=ev.bundle_version,
        bundle_sha256=ev.bundle_sha256,
        device_id=ev.device_id,
        snapshot=ev.snapshot,
        overlay=ev.overlay,
    )
    cols = ", ".join(values)
    marks = ", ".join(f":{k}" for k in values)
    # Snapshot paths persist across records unless a new one is given; bundle/device are fixed at the start.
    updates = ", ".join(
        f"{k}=COALESCE(excluded.{k}, {k})" if k in ("snapshot", "overlay") else f"{k}=excluded.{k}"
        for k in values
        if k not in ("uuid", "started_at", "bundle_version", "bundle_sha256", "device_id")
    )
    c.execute(f"INSERT INTO events ({cols}) VALUES ({marks}) ON CONFLICT(uuid) DO UPDATE SET {updates}", values)
