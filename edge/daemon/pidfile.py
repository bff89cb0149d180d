"""STATE/crackd.pid: the lock that keeps a second daemon off the same state directory.

The flock is what counts (the kernel drops it when the process dies, even by SIGKILL, so a stale
file never blocks a start); the pid written into the file is only informative, and a full disk
that cannot take it does not stop the start: the outbox still has to drain.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class PidFileLocked(Exception):
    """Another crackd holds the lock, or the pid file cannot be opened; str() is one line."""


class PidLock:
    def __init__(self, path: Path, state_dir: Path):
        self.path = path
        self.state_dir = state_dir  # named in the message when another daemon holds it
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our pid; raises PidFileLocked when another crackd runs here."""
        path = self.path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise PidFileLocked(f"{path}: cannot open the pid file ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise PidFileLocked(
                    f"{self.state_dir}: another crackd (pid {other}) is running with this state directory"
                ) from None
            raise
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            log.error("%s: cannot write the pid (%s); continuing (the lock is held)", path, exc.strerror)

    def release(self) -> None:
        """Remove the file and drop the lock (a no-op when not held)."""
        if self._fd is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None
