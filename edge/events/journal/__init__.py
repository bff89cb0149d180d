"""The journal: one SQLite file holding what the daemon saw and what it still owes the broker.

One job per module; `Journal` is their sum (they share one connection and one lock):
- connection  open, checks at open, migration, the connection and its transactions. WAL mode, ONE
              writer connection shared under a lock, `busy_timeout` for the CLI's short writes (labels,
              deletes) that may run beside the daemon. A write that fails leaves its error in
              `write_error` (the daemon reports it) and the next write opens a fresh connection:
              SQLite keeps a connection read-only once it found the file so.
- integrity   writability (a read-only file or file system is refused with one line naming the path),
              `PRAGMA quick_check`; a damaged file is moved aside (or the start refused, per config)
              with a message saying how to recover its rows; an empty (0-byte) file without a WAL is
              moved aside and logged.
- schema      the tables, versioned (`PRAGMA user_version`), migrated forward after a backup.
- writes      a detection (event row, frame row) and its outbox message in ONE transaction.
- outbox      the publisher's reads and acknowledgements; never pruned, only bounded by the disk budget.
- queries     `crackd events`: list, find, label, delete, count.
- retention   by age and by database size; the order in which pictures may be deleted.
- rows        what goes in and comes out, as frozen dataclasses.
"""

from __future__ import annotations

from edge.events.journal.errors import JournalCorrupt, JournalError, JournalUnavailable
from edge.events.journal.integrity import BUSY_TIMEOUT_MS, integrity_check
from edge.events.journal.outbox import OutboxQueue
from edge.events.journal.queries import EventQueries
from edge.events.journal.retention import Retention
from edge.events.journal.rows import (
    EventRow,
    EventWrite,
    FrameRow,
    JournalCounts,
    OutboxMessage,
    OutboxRow,
    PruneReport,
    RecordedFrame,
    SampleWrite,
)
from edge.events.journal.schema import MIGRATIONS, SCHEMA_VERSION
from edge.events.journal.writes import EventWrites


class Journal(EventWrites, OutboxQueue, EventQueries, Retention):
    """The daemon's SQLite journal (thread-safe: one connection, one lock)."""


__all__ = [
    "BUSY_TIMEOUT_MS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "EventRow",
    "EventWrite",
    "FrameRow",
    "Journal",
    "JournalCorrupt",
    "JournalCounts",
    "JournalError",
    "JournalUnavailable",
    "OutboxMessage",
    "OutboxRow",
    "PruneReport",
    "RecordedFrame",
    "SampleWrite",
    "integrity_check",
]
