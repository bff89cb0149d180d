"""The journal: one SQLite file holding what the daemon saw and what it still owes the broker.

- WAL mode, ONE writer connection shared under a lock, `busy_timeout` for the
  CLI's short writes (labels, deletes) that may run beside the daemon.
- The schema is versioned (`PRAGMA user_version`) and migrated forward at open;
  the file is backed up (SQLite online backup) before any migration.
- `PRAGMA quick_check` runs at open; a damaged file is moved aside (or the start
  is refused, per config) with a message saying how to recover its rows. An empty
  (0-byte) file without a WAL holds nothing: it is moved aside and logged.
- Writability is checked at open (a read-only file or file system is refused with
  one line naming the path). A write that fails later leaves its error in
  `write_error` (the daemon reports it) and the next write opens a fresh
  connection: SQLite keeps a connection read-only once it found the file so.
- A detection (event row, frame row) and its outbox message are written in ONE
  transaction, so an event is never recorded without being queued for MQTT nor
  queued without being recorded. Event transactions use `synchronous=FULL`
  (survive power loss); frame-only ones `NORMAL` (survive a crash).
- Retention by age and by database size; the outbox is never pruned: it is
  bounded only by the disk budget, and its fill level is reported.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edge.vocabulary import LABELS

if TYPE_CHECKING:
    from edge.events.decision import EventRecord

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000


class JournalError(Exception):
    """The journal cannot be used; the message says why and what to do."""


class JournalCorrupt(JournalError):
    pass


class JournalUnavailable(JournalError):
    """The file could not be read for a reason outside it (disk full, I/O error): never moved aside."""


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
]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class FrameRow:
    t: float
    seq: int
    crack: bool
    score: float
    segmented: bool
    measurements: dict | None = None
    latency_ms: float | None = None
    bundle_version: str | None = None
    event_uuid: str | None = None
    ref: str | None = None


@dataclass(frozen=True)
class EventWrite:
    """An EventRecord (edge.events.decision) plus what the journal stores beside it."""

    record: EventRecord
    bundle_version: str
    bundle_sha256: str
    device_id: str
    snapshot: str | None = None
    overlay: str | None = None


@dataclass(frozen=True)
class OutboxMessage:
    """`payload`: a dict (sent as JSON with seq/replayed added) or bytes (sent as they are: pictures).

    `replace_pending`: delete any unsent row on the same topic first (only the newest picture waits)."""

    topic: str
    payload: dict | bytes
    qos: int = 1
    retain: bool = False
    event_uuid: str | None = None
    replace_pending: bool = False


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    payload: str | bytes  # bytes: send as is (see OutboxMessage)
    qos: int
    retain: bool
    created_at: float
    event_uuid: str | None


@dataclass
class PruneReport:
    frames: int = 0
    events: int = 0
    files: list[str] = field(
        default_factory=list
    )  # snapshot paths (relative to the state dir) whose events were deleted
    used_mb: float = 0.0
    over_budget: bool = False


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def _unwritable(path: Path) -> str | None:
    """Why the journal at `path` cannot be written (its directory, the file, its WAL/SHM), or None if it can."""
    for target in (path.parent, path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if target != path.parent and not target.exists():
            continue
        if not os.access(target, os.W_OK):
            try:  # os.access cannot say why; a real open can (read-only file system, permission)
                fd = os.open(target, os.O_RDONLY if target.is_dir() else os.O_WRONLY)
                os.close(fd)
                reason = "permission denied"
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
            return f"{target}: {reason}"
    return None


# SQLite error names after which the connection itself is suspect (read-only or lost file): reopen it.
_REOPEN_ERRORS = re.compile(r"SQLITE_(READONLY|CANTOPEN|IOERR)")
# A reference is an event id (digits) or a uuid / uuid prefix: hex digits and dashes only.
_REFERENCE = re.compile(r"[0-9a-fA-F-]+")


def _recovery_hint(path: Path) -> str:
    return (
        f"stop crackd, move the file aside (mv {path} {path}.corrupt) and start again for a new journal; "
        f"rows can often be saved with: sqlite3 {path}.corrupt .recover | sqlite3 {path.parent / 'recovered.db'}"
    )


def integrity_check(path: Path) -> str | None:
    """None when `PRAGMA quick_check` passes, else the problem as one line."""
    try:
        conn = _connect(path)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith(
            ("SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_BUSY", "SQLITE_LOCKED")
        ):
            # Not damage: the disk is full or failing (SQLite cannot create the -shm file on a full disk).
            raise JournalUnavailable(f"{path}: cannot open the journal ({exc}; is the disk full?)") from None
        return str(exc)
    problems = [
        line.strip()
        for r in rows
        if r[0] != "ok"
        for line in str(r[0]).splitlines()
        if line.strip() and not line.startswith("***")
    ]
    if not problems:
        return None
    more = f" and {len(problems) - 2} more problems" if len(problems) > 2 else ""
    return "; ".join(problems[:2]) + more


class Journal:
    """The daemon's SQLite journal (thread-safe: one connection, one lock)."""

    def __init__(self, path: str | Path, on_corrupt: str = "stop", require_writable: bool = True):
        """`require_writable=False` lets the CLI read a journal it may not write (listing as another user)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.moved_aside: Path | None = None
        self.write_error: str | None = None  # the last write's error, None once a write succeeded
        self._reopen = False
        unwritable = _unwritable(self.path) if require_writable else None
        if unwritable:
            raise JournalError(
                f"{self.path}: journal is not writable ({unwritable}); crackd needs to write its journal"
            )
        wal = Path(f"{self.path}-wal")
        if self.path.exists() and self.path.stat().st_size == 0 and not (wal.exists() and wal.stat().st_size > 0):
            self.moved_aside = self._move_aside("the file is empty (0 bytes)")
        elif self.path.exists() and self.path.stat().st_size > 0:
            problem = integrity_check(self.path)
            if problem:
                if on_corrupt != "move-aside":
                    raise JournalCorrupt(
                        f"{self.path}: integrity check failed ({problem}); {_recovery_hint(self.path)}"
                    )
                self.moved_aside = self._move_aside(problem)
        self._conn = self._open_connection()
        self._migrate()
        if not require_writable:
            return
        try:  # a write lock proves the file is writable (a read-only mount or file opens read-only silently)
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            self._conn.close()
            raise JournalError(
                f"{self.path}: journal is not writable ({exc}); crackd needs to write its journal"
            ) from None

    def _open_connection(self) -> sqlite3.Connection:
        conn = _connect(self.path)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            conn.close()
            if getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")):
                raise JournalError(
                    f"{self.path}: journal is not writable ({exc}); crackd needs to write its journal"
                ) from None
            raise JournalUnavailable(f"{self.path}: cannot open the journal ({exc})") from None
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise JournalCorrupt(f"{self.path}: cannot open journal ({exc}); {_recovery_hint(self.path)}") from None
        if mode.lower() != "wal":
            log.warning("journal %s: WAL mode not available (%s); continuing", self.path, mode)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _reopen_connection(self) -> None:
        """After a read-only or I/O error: a new connection sees the file as it is now (caller holds the lock)."""
        try:
            self._conn.close()
        except sqlite3.Error:
            pass
        self._conn = _connect(self.path)
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._reopen = False
        log.info("journal %s: reopened the connection after a failed write", self.path)

    # ------------------------------------------------------------------ open / migrate

    def _move_aside(self, problem: str) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():  # two in the same second must not overwrite each other
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(target) + suffix))
        log.error(
            "journal %s failed its integrity check (%s): moved it to %s and started a new journal; "
            "to save its rows: sqlite3 %s .recover | sqlite3 recovered.db",
            self.path,
            problem,
            target,
            target,
        )
        return target

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self._lock:
            current = self.schema_version
            if current > SCHEMA_VERSION:
                raise JournalError(
                    f"{self.path}: journal schema {current} was written by a newer crackd (this one "
                    f"reads <= {SCHEMA_VERSION}); upgrade crackd or point storage.db at a new file"
                )
            if current == SCHEMA_VERSION:
                return
            if current == 0:
                # A new file: auto_vacuum must be chosen before the first table exists.
                self._conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            else:
                backup = self.path.with_name(f"{self.path.name}.v{current}.bak")
                dest = sqlite3.connect(str(backup))
                try:
                    self._conn.backup(dest)
                finally:
                    dest.close()
                log.info(
                    "journal %s: backed up to %s before migrating schema %d -> %d",
                    self.path,
                    backup,
                    current,
                    SCHEMA_VERSION,
                )
            for version in range(current, SCHEMA_VERSION):
                with self._transaction() as c:
                    for statement in MIGRATIONS[version]:
                        c.execute(statement)
                    c.execute(f"PRAGMA user_version={version + 1}")

    @property
    def is_open(self) -> bool:
        """False once closed: a closed journal has no outbox depth to report."""
        return self._conn is not None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.DatabaseError:
                    pass
                self._conn.close()
                self._conn = None  # type: ignore[assignment]  # closed: a later use fails loudly

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextlib.contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE ... COMMIT on the connection, ROLLBACK on any error (caller holds the lock).

        Explicit statements because the connection runs in autocommit mode (isolation_level=None).
        IMMEDIATE takes the write lock up front, so another writer (`crackd events label` from a shell)
        waits out the busy timeout instead of failing halfway through.
        """
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
            c.execute("COMMIT")
        except BaseException:
            # SQLite rolls back by itself after SQLITE_FULL and some I/O errors; a second ROLLBACK would then
            # fail ("no transaction is active") and hide the real error (disk full), so only roll back an open one.
            if c.in_transaction:
                try:
                    c.execute("ROLLBACK")
                except sqlite3.Error as exc:
                    log.error("journal %s: rollback failed too (%s)", self.path, exc)
            raise

    # ------------------------------------------------------------------ the write path

    def record(
        self,
        frames: FrameRow | Iterable[FrameRow] | None = None,
        events: Iterable[EventWrite] = (),
        messages: Iterable[OutboxMessage] = (),
    ) -> list[int]:
        """Write frame results, event changes and their outbox messages in ONE transaction; returns outbox ids."""
        frames = [] if frames is None else [frames] if isinstance(frames, FrameRow) else list(frames)
        events, messages = list(events), list(messages)
        if not frames and not events and not messages:
            return []
        durable = bool(events or messages)
        ids: list[int] = []
        with self._lock:
            try:
                ids = self._record(frames, events, messages, durable)
            except sqlite3.Error as exc:
                self.write_error = str(exc)
                if _REOPEN_ERRORS.match(getattr(exc, "sqlite_errorname", "") or ""):
                    self._reopen = True
                raise
            self.write_error = None
        return ids

    def _record(self, frames: list, events: list, messages: list, durable: bool) -> list[int]:
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
                                _json(f.measurements),
                                f.latency_ms,
                                f.bundle_version,
                                f.event_uuid,
                            )
                            for f in frames
                        ],
                    )
                for ev in events:
                    self._write_event(c, ev)
                now = time.time()
                for m in messages:
                    if m.replace_pending:
                        c.execute("DELETE FROM outbox WHERE topic = ?", (m.topic,))
                    data = m.payload if isinstance(m.payload, bytes) else json.dumps(m.payload, separators=(",", ":"))
                    cur = c.execute(
                        "INSERT INTO outbox (topic, payload, qos, retain, created_at, event_uuid) VALUES (?,?,?,?,?,?)",
                        (m.topic, data, m.qos, int(m.retain), now, m.event_uuid),
                    )
                    ids.append(cur.lastrowid)  # type: ignore[arg-type]  # an INSERT always sets it
        finally:
            if durable:
                c.execute("PRAGMA synchronous=NORMAL")
        return ids

    @staticmethod
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
            peak_measurements=_json(r.peak_measurements),
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

    # ------------------------------------------------------------------ outbox

    def outbox_fetch(self, after_id: int = 0, limit: int = 100) -> list[OutboxRow]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, topic, payload, qos, retain, created_at, "
                "event_uuid FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [
            OutboxRow(r["id"], r["topic"], r["payload"], r["qos"], bool(r["retain"]), r["created_at"], r["event_uuid"])
            for r in rows
        ]

    def outbox_ack(self, ids: Iterable[int]) -> int:
        """Delete acknowledged outbox rows; returns how many were deleted."""
        ids = list(ids)
        if not ids:
            return 0
        with self._lock, self._transaction() as c:
            n = 0
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                n += c.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk).rowcount
        return n

    def outbox_depth(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def outbox_bytes(self) -> int:
        with self._lock:
            return int(
                self._conn.execute(
                    "SELECT COALESCE(SUM(LENGTH(payload) + LENGTH(topic) + 64), 0) FROM outbox"
                ).fetchone()[0]
            )

    # ------------------------------------------------------------------ size and retention

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
        deletable = (
            "state='ended' AND uuid NOT IN (SELECT event_uuid FROM labels)"
            " AND uuid NOT IN (SELECT event_uuid FROM outbox WHERE event_uuid IS NOT NULL)"
        )
        with self._lock:
            c = self._conn
            report.frames += c.execute("DELETE FROM frames WHERE t < ?", (cutoff,)).rowcount
            report.events += self._delete_events_where(
                c, f"{deletable} AND COALESCE(ended_at, updated_at) < ?", (cutoff,), report
            )
            budget = max_db_mb * 1024 * 1024
            while self.used_bytes() > budget:
                n = c.execute("DELETE FROM frames WHERE id IN (SELECT id FROM frames ORDER BY id LIMIT 2000)").rowcount
                if n == 0:
                    n = self._delete_events_where(
                        c, f"id IN (SELECT id FROM events WHERE {deletable} ORDER BY id LIMIT 200)", (), report
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

    @staticmethod
    def _delete_events_where(c, where: str, params: tuple, report: PruneReport) -> int:
        for r in c.execute(f"SELECT snapshot, overlay FROM events WHERE {where}", params).fetchall():
            report.files.extend(p for p in (r["snapshot"], r["overlay"]) if p)
        return c.execute(f"DELETE FROM events WHERE {where}", params).rowcount

    def forget_snapshot(self, relpath: str) -> None:
        """A snapshot file was deleted for the disk budget: clear the event's reference."""
        with self._lock:
            self._conn.execute("UPDATE events SET snapshot=NULL WHERE snapshot=?", (relpath,))
            self._conn.execute("UPDATE events SET overlay=NULL WHERE overlay=?", (relpath,))

    def snapshot_order(self) -> list[str]:
        """Snapshot paths in the order they may be deleted: unlabelled before labelled, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT e.snapshot, e.overlay FROM events e LEFT JOIN labels l ON l.event_uuid = e.uuid "
                "WHERE e.snapshot IS NOT NULL OR e.overlay IS NOT NULL ORDER BY (l.label IS NOT NULL), e.started_at"
            ).fetchall()
        return [p for r in rows for p in (r["overlay"], r["snapshot"]) if p]

    # ------------------------------------------------------------------ records (CLI)

    def list_events(
        self,
        since: float | None = None,
        until: float | None = None,
        state: str | None = None,
        min_score: float | None = None,
        label: str | None = None,
        limit: int | None = None,
        newest_first: bool = True,
    ) -> list[dict]:
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
        if label == "none":
            where.append("l.label IS NULL")
        elif label:
            where.append("l.label = ?")
            params.append(label)
        sql = (
            "SELECT e.*, l.label AS label, l.note AS label_note, l.labelled_at AS labelled_at FROM events e "
            "LEFT JOIN labels l ON l.event_uuid = e.uuid"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY e.id {'DESC' if newest_first else 'ASC'}"
            + (f" LIMIT {int(limit)}" if limit else "")
        )
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [_event_dict(r) for r in rows]

    def find_event(self, ref: str) -> dict | None:
        """An event by numeric id, full uuid, or a unique uuid prefix (>= 4 characters).

        A uuid may begin with digits only (about one in forty do), so an all-digit
        reference is looked up both as an id and as a prefix; if it names two
        different events the caller is asked for more of the uuid.
        """
        # Checked before anything else: `%` and `_` are LIKE wildcards, and a reference is matched as a prefix.
        if not _REFERENCE.fullmatch(ref):
            raise JournalError(f"{ref!r} is not an event id or uuid (expected digits, or hex digits and dashes)")
        ref = ref.lower()
        sql = (
            "SELECT e.*, l.label AS label, l.note AS label_note, l.labelled_at AS labelled_at "
            "FROM events e LEFT JOIN labels l ON l.event_uuid = e.uuid "
        )
        with self._lock:
            c = self._conn
            rows = c.execute(sql + "WHERE e.uuid = ?", (ref,)).fetchall()
            if not rows:
                if ref.isdigit() and len(ref) <= 18:  # beyond SQLite's 64-bit integers no id exists
                    rows = c.execute(sql + "WHERE e.id = ?", (int(ref),)).fetchall()
                if len(ref) >= 4:
                    rows += c.execute(sql + "WHERE substr(e.uuid, 1, ?) = ? LIMIT 2", (len(ref), ref)).fetchall()
                if len({r["uuid"] for r in rows}) > 1:
                    raise JournalError(f"event {ref!r} is ambiguous; give more of the uuid")
        return _event_dict(rows[0]) if rows else None

    def event_frames(self, uuid: str) -> list[dict]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM frames WHERE event_uuid = ? ORDER BY id", (uuid,)).fetchall()
        return [dict(r) for r in rows]

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

    def counts(self) -> dict:
        with self._lock:
            c = self._conn
            return {
                "frames": c.execute("SELECT COUNT(*) FROM frames").fetchone()[0],
                "events": c.execute("SELECT COUNT(*) FROM events").fetchone()[0],
                "outbox": c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0],
                "labels": c.execute("SELECT COUNT(*) FROM labels").fetchone()[0],
            }


def _json(value) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _event_dict(row: sqlite3.Row) -> dict:
    d = dict(row)
    if d.get("peak_measurements"):
        d["peak_measurements"] = json.loads(d["peak_measurements"])
    return d
