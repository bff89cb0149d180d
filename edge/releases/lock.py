"""The device lock: one `crackd models` stage/activate/rollback/deploy at a time on a state directory.

An flock on STATE/models/.lock (released by the kernel when the holder dies, so a
killed command never leaves the device locked), and beside it STATE/models/.lock.holder
saying who holds it, for a "busy" message a technician can act on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time

from edge.atomic_write import write_json_atomic
from edge.layout import StateLayout
from edge.releases.errors import ReleaseError
from edge.timestamps import iso_utc


class DeviceBusy(ReleaseError):
    """Another stage/activate/rollback/deploy holds the device lock."""


class LockTokenMismatch(ReleaseError):
    """A command inside a deployment passed a token that does not name the lock held now."""


class Interrupted(ReleaseError):
    """A signal (SIGTERM, or SIGHUP when the SSH session drops) stopped the operation; what it had begun is undone."""


class DeviceLock:
    """Exclusive flock on STATE/models/.lock, with a holder record for clear "busy" messages.

    A lock may be held for a whole deployment by `crackd models lock` (the
    deploy tool keeps it open over SSH); commands run inside that deployment
    pass the holder's token instead of taking the lock again.
    """

    def __init__(self, layout: StateLayout, who: str, action: str):
        self.layout = layout
        self.who = who
        self.action = action
        self.token = secrets.token_hex(8)
        self._fd: int | None = None

    def holder(self) -> dict | None:
        try:
            return json.loads(self.layout.lock_holder.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def is_held(self) -> bool:
        """True when some process holds the lock (tested without taking it for long; read access is enough)."""
        try:
            fd = os.open(self.layout.lock, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def busy_message(self) -> str:
        h = self.holder() or {}
        if not h:
            return f"{self.layout.models}: device is busy (another crackd models command holds {self.layout.lock.name})"
        return (
            f"{self.layout.models}: device is busy: {h.get('action', '?')} by {h.get('who', '?')} "
            f"since {h.get('since', '?')} (pid {h.get('pid', '?')}); try again when it has finished"
        )

    def acquire(self, wait_s: float = 0.0) -> None:
        self.layout.models.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.layout.lock, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise DeviceBusy(self.busy_message()) from None
                time.sleep(0.2)
        self._fd = fd
        write_json_atomic(
            self.layout.lock_holder,
            {
                "who": self.who,
                "action": self.action,
                "pid": os.getpid(),
                "since": iso_utc(time.time(), "seconds"),
                "token": self.token,
            },
        )

    def release(self) -> None:
        if self._fd is None:
            return
        h = self.holder()
        if h and h.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.layout.lock_holder.unlink()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @contextlib.contextmanager
    def held(self, wait_s: float = 0.0, token: str | None = None):
        """Hold the lock for a block; with `token`, join a lock already held by that deployment session."""
        if token:
            h = self.holder()
            if not (h and h.get("token") == token and self.is_held()):
                raise LockTokenMismatch(
                    f"{self.layout.lock}: the lock token given does not match "
                    "a held deployment lock (the deploy session ended?)"
                )
            yield self
            return
        self.acquire(wait_s)
        try:
            yield self
        finally:
            self.release()
