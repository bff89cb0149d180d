"""Retention: by age and by database size, and the order in which pictures may go for the disk budget.

What is never deleted: open events, labelled events, and events whose messages still wait in the outbox.
"""

from __future__ import annotations

import sqlite3
import time

from edge.events.journal.connection import JournalConnection
from edge.events.journal.rows import PruneReport

# Events retention may delete: ended, unlabelled, and delivered (nothing of theirs waits in the outbox).
_DELETABLE = (
    "state='ended' AND uuid NOT IN (SELECT event_uuid FROM labels)"
    " AND uuid NOT IN (SELECT event_uuid FROM outbox WHERE event_uuid IS NOT NULL)"
)


class Retention(JournalConnection):
    def used_bytes(self) -> int:
        """Bytes in use (pages minus free pages), WAL not included."""
        with self._lock:
            c = self._conn
            page_size = c.execute("PRAGMA page_size").fetchone()[0]
            pages = c.execute("PRAGMA page_count").fetchone()[0]
            free = c.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def prune(self, retention_days: float, max_db_mb: float, now: float | None = None) -> PruneReport:
        """Delete by age, then by size (oldest frames first, then oldest delivered unlabelled events)."""
        now = time.time() if now is None else now
        cutoff = now - retention_days * 86400
        report = PruneReport()
        with self._lock:
            c = self._conn
            report.frames += c.execute("DELETE FROM frames WHERE t < ?", (cutoff,)).rowcount
            report.events += _delete_events_where(
                c, f"{_DELETABLE} AND COALESCE(ended_at, updated_at) < ?", (cutoff,), report
            )
            budget = max_db_mb * 1024 * 1024
            while self.used_bytes() > budget:
                n = c.execute("DELETE FROM frames WHERE id IN (SELECT id FROM frames ORDER BY id LIMIT 2000)").rowcount
                if n == 0:
                    n = _delete_events_where(
                        c, f"id IN (SELECT id FROM events WHERE {_DELETABLE} ORDER BY id LIMIT 200)", (), report
                    )
                    report.events += n
                else:
                    report.frames += n
                if n == 0:
                    report.over_budget = True
                    break
            if report.frames or report.events:
                c.execute("PRAGMA incremental_vacuum")
            report.used_mb = self.used_bytes() / 1024 / 1024
        return report

    def forget_snapshot(self, relpath: str) -> None:
        """A snapshot file was deleted for the disk budget: clear the event's reference. A frame kept to be labelled
        (edge.daemon.samples) is nothing without its picture: its row goes, with its label."""
        with self._lock, self._transaction() as c:
            gone = "SELECT uuid FROM events WHERE snapshot=? AND kind != 'event'"
            c.execute(f"DELETE FROM labels WHERE event_uuid IN ({gone})", (relpath,))
            c.execute("DELETE FROM events WHERE snapshot=? AND kind != 'event'", (relpath,))
            c.execute("UPDATE events SET snapshot=NULL WHERE snapshot=?", (relpath,))
            c.execute("UPDATE events SET overlay=NULL WHERE overlay=?", (relpath,))

    def snapshot_order(self) -> list[str]:
        """Snapshot paths in the order they may be deleted: unlabelled before labelled, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT e.snapshot, e.overlay FROM events e LEFT JOIN labels l ON l.event_uuid = e.uuid "
                "WHERE e.snapshot IS NOT NULL OR e.overlay IS NOT NULL ORDER BY (l.label IS NOT NULL), e.started_at"
            ).fetchall()
        return [p for r in rows for p in (r["overlay"], r["snapshot"]) if p]


def _delete_events_where(c: sqlite3.Connection, where: str, params: tuple, report: PruneReport) -> int:
    for r in c.execute(f"SELECT snapshot, overlay FROM events WHERE {where}", params).fetchall():
        report.files.extend(p for p in (r["snapshot"], r["overlay"]) if p)
    return c.execute(f"DELETE FROM events WHERE {where}", params).rowcount
