"""The journal file opened for use: checks at open, migration, ONE connection under a lock, transactions.

The other parts of the journal (writes, outbox, queries, retention) are mixins on this class: they share
its connection and lock and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from edge.events.journal import schema
from edge.events.journal.errors import JournalCorrupt, JournalError, JournalUnavailable
from edge.events.journal.integrity import connect, integrity_check, move_aside, recovery_hint, unwritable

log = logging.getLogger(__name__)

# SQLite error names after which the connection itself is suspect (read-only or lost file): reopen it.
REOPEN_ERRORS = re.compile(r"SQLITE_(READONLY|CANTOPEN|IOERR)")


class JournalConnection:
    """The open journal file (thread-safe: one connection, one lock)."""

    def __init__(self, path: str | Path, on_corrupt: str = "stop", require_writable: bool = True):
        """`require_writable=False` lets the CLI read a journal it may not write (listing as another user)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.moved_aside: Path | None = None
        self.write_error: str | None = None  # the last write's error, None once a write succeeded
        self._reopen = False
        problem = unwritable(self.path) if require_writable else None
        if problem:
            raise JournalError(f"{self.path}: journal is not writable ({problem}); crackd needs to write its journal")
        wal = Path(f"{self.path}-wal")
        if self.path.exists() and self.path.stat().st_size == 0 and not (wal.exists() and wal.stat().st_size > 0):
            self.moved_aside = move_aside(self.path, "the file is empty (0 bytes)")
        elif self.path.exists() and self.path.stat().st_size > 0:
            damage = integrity_check(self.path)
            if damage:
                if on_corrupt != "move-aside":
                    raise JournalCorrupt(f"{self.path}: integrity check failed ({damage}); {recovery_hint(self.path)}")
                self.moved_aside = move_aside(self.path, damage)
        self._conn = self._open_connection()
        with self._lock:
            schema.migrate(self._conn, self.path, self._transaction)
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
        conn = connect(self.path)
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
            raise JournalCorrupt(f"{self.path}: cannot open journal ({exc}); {recovery_hint(self.path)}") from None
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
        self._conn = connect(self.path)
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._reopen = False
        log.info("journal %s: reopened the connection after a failed write", self.path)

    def _failed_write(self, exc: sqlite3.Error) -> None:
        """Remember a write's error (the daemon reports it); the next write reopens a connection it made suspect."""
        self.write_error = str(exc)
        if REOPEN_ERRORS.match(getattr(exc, "sqlite_errorname", "") or ""):
            self._reopen = True

    @property
    def schema_version(self) -> int:
        with self._lock:
            return schema.schema_version(self._conn)

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
    def _transaction(self) -> Iterator[sqlite3.Connection]:
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
