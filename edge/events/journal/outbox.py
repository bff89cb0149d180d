"""The outbox read side: what the publisher sends, in order, and deletes only once the broker acknowledged it.

The outbox is never pruned: it is bounded only by the disk budget, and its fill level is reported.
"""

from __future__ import annotations

from collections.abc import Iterable

from edge.events.journal.connection import JournalConnection
from edge.events.journal.rows import OutboxRow


class OutboxQueue(JournalConnection):
    """Each output (edge.outputs) reads and acknowledges only its own rows (`output`)."""

    def outbox_fetch(self, after_id: int = 0, limit: int = 100, output: str = "mqtt") -> list[OutboxRow]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, topic, payload, qos, retain, created_at, event_uuid, output "
                "FROM outbox WHERE output = ? AND id > ? ORDER BY id LIMIT ?",
                (output, after_id, limit),
            ).fetchall()
        return [OutboxRow.from_row(r) for r in rows]

    def outbox_ack(self, ids: Iterable[int]) -> int:
        """Delete acknowledged outbox rows; returns how many were deleted."""
        acked = list(ids)
        if not acked:
            return 0
        with self._lock, self._transaction() as c:
            n = 0
            for i in range(0, len(acked), 500):
                chunk = acked[i : i + 500]
                n += c.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk).rowcount
        return n

    def outbox_depth(self, output: str | None = None) -> int:
        """Rows waiting: of one output, or of all (None)."""
        with self._lock:
            if output is None:
                return int(self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            return int(self._conn.execute("SELECT COUNT(*) FROM outbox WHERE output = ?", (output,)).fetchone()[0])

    def outbox_bytes(self) -> int:
        with self._lock:
            return int(
                self._conn.execute(
                    "SELECT COALESCE(SUM(LENGTH(payload) + LENGTH(topic) + 64), 0) FROM outbox"
                ).fetchone()[0]
            )
