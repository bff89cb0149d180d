"""Checks at open: is the file writable, is it intact, and moving a damaged or empty file aside."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from edge.events.journal.errors import JournalUnavailable

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), rows by name, waiting out other writers."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def unwritable(path: Path) -> str | None:
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


def recovery_hint(path: Path) -> str:
    return (
        f"stop crackd, move the file aside (mv {path} {path}.corrupt) and start again for a new journal; "
        f"rows can often be saved with: sqlite3 {path}.corrupt .recover | sqlite3 {path.parent / 'recovered.db'}"
    )


def integrity_check(path: Path) -> str | None:
    """None when `PRAGMA quick_check` passes, else the problem as one line."""
    try:
        conn = connect(path)
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


def move_aside(path: Path, problem: str) -> Path:
    """Rename the journal (with its WAL and SHM) to `<name>.corrupt-<time>` and say how to save its rows."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():  # two in the same second must not overwrite each other
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(target) + suffix))
    log.error(
        "journal %s failed its integrity check (%s): moved it to %s and started a new journal; "
        "to save its rows: sqlite3 %s .recover | sqlite3 recovered.db",
        path,
        problem,
        target,
        target,
    )
    return target
