"""The journal's tables, versioned by `PRAGMA user_version` and migrated forward at open (after a backup)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from edge.events.journal.errors import JournalError

log = logging.getLogger(__name__)

# Each entry migrates from version i to i+1 (index 0: empty file -> 1).
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE frames (
            id INTEGER PRIMARY KEY,
            t REAL NOT NULL,
            seq INTEGER NOT NULL,
            ref TEXT,
            crack INTEGER NOT NULL,
            score REAL NOT NULL,
            segmented INTEGER NOT NULL,
            measurements TEXT,
            latency_ms REAL,
            bundle_version TEXT,
            event_uuid TEXT)""",
        "CREATE INDEX frames_t ON frames(t)",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            uuid TEXT NOT NULL UNIQUE,
            state TEXT NOT NULL CHECK (state IN ('open', 'ended')),
            started_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            ended_at REAL,
            end_reason TEXT,
            revision INTEGER NOT NULL DEFAULT 0,
            frames INTEGER NOT NULL,
            peak_score REAL NOT NULL,
            peak_measurements TEXT,
            peak_frame_seq INTEGER,
            first_frame_seq INTEGER,
            last_frame_seq INTEGER,
            bundle_version TEXT,
            bundle_sha256 TEXT,
            device_id TEXT,
            snapshot TEXT,
            overlay TEXT)""",
        "CREATE INDEX events_started ON events(started_at)",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            payload TEXT NOT NULL,
            qos INTEGER NOT NULL,
            retain INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            event_uuid TEXT)""",
    ],
    [
        """CREATE TABLE labels (
            event_uuid TEXT PRIMARY KEY,
            label TEXT NOT NULL CHECK (label IN ('crack', 'no-crack')),
            note TEXT,
            labelled_at REAL NOT NULL)""",
        "CREATE INDEX outbox_event ON outbox(event_uuid)",
        "CREATE INDEX frames_event ON frames(event_uuid)",
    ],
    [
        # One row per output (edge.outputs): each consumes its own rows at its own pace, so a slow
        # output never holds back another and a row goes only once ITS output delivered it.
        "ALTER TABLE outbox ADD COLUMN output TEXT NOT NULL DEFAULT 'mqtt'",
        "CREATE INDEX outbox_output ON outbox(output, id)",
    ],
    [
        # Frames kept to be labelled (edge.daemon.samples) are rows of `events` too, so that labelling, listing,
        # retention, the snapshot budget and `crackd events pull-list` treat them as they treat events; they are
        # written without outbox messages (never announced). Older rows are events.
        "ALTER TABLE events ADD COLUMN kind TEXT NOT NULL DEFAULT 'event'",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(
    conn: sqlite3.Connection,
    path: Path,
    transaction: Callable[[], AbstractContextManager[sqlite3.Connection]],
) -> None:
    """Bring the file at `path` to SCHEMA_VERSION; an older schema is backed up first (SQLite online backup)."""
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise JournalError(
            f"{path}: journal schema {current} was written by a newer crackd (this one "
            f"reads <= {SCHEMA_VERSION}); upgrade crackd or point storage.db at a new file"
        )
    if current == SCHEMA_VERSION:
        return
    if current == 0:
        # A new file: auto_vacuum must be chosen before the first table exists.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    else:
        backup = path.with_name(f"{path.name}.v{current}.bak")
        dest = sqlite3.connect(str(backup))
        try:
            conn.backup(dest)
        finally:
            dest.close()
        log.info("journal %s: backed up to %s before migrating schema %d -> %d", path, backup, current, SCHEMA_VERSION)
    for version in range(current, SCHEMA_VERSION):
        with transaction() as c:
            for statement in MIGRATIONS[version]:
                c.execute(statement)
            c.execute(f"PRAGMA user_version={version + 1}")
