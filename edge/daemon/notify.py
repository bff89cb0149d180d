"""systemd integration: sd_notify messages and journald logging, both optional.

`Notifier` speaks the sd_notify protocol: through `systemd.daemon.notify` when
systemd-python is installed, otherwise by writing the datagram itself to the
AF_UNIX socket named in $NOTIFY_SOCKET (a path, or '@name' for an abstract
socket). Without $NOTIFY_SOCKET every call is a no-op, so the daemon runs the
same outside systemd.

The supervisor decides *when* to ping the watchdog (only while frames are really
processed); this module only knows the interval ($WATCHDOG_USEC, honouring
$WATCHDOG_PID) and how to send.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict | None = None, use_systemd_python: bool = True):
        env = os.environ if environ is None else environ
        self.socket_path = env.get("NOTIFY_SOCKET") or None
        self._sd_notify = None
        # systemd-python's sd_notify reads $NOTIFY_SOCKET from the process environment itself, so it is
        # only the right sender when that is where our socket came from.
        if self.socket_path and use_systemd_python and environ is None:
            try:
                from systemd import daemon as sd_daemon  # systemd-python

                self._sd_notify = sd_daemon.notify
            except ImportError:
                pass
        self.watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.socket_path)

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the watchdog timeout (systemd's advice); None when no watchdog."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def notify(self, *lines: str) -> bool:
        """Send 'KEY=value' lines in one datagram; False when not under systemd or the send failed."""
        if not self.socket_path:
            return False
        message = "\n".join(lines)
        if self._sd_notify is not None:
            try:
                return bool(self._sd_notify(message))
            except Exception as exc:  # never let status reporting break the daemon
                log.debug("sd_notify failed: %s", exc)
                return False
        address = self.socket_path
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), address)
            return True
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", self.socket_path, exc)
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd (Type=notify-reload) match this reload to the signal it sent.
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # the watchdog is meant for another process (e.g. our parent)
    return usec if usec > 0 else None


# --------------------------------------------------------------------------- logging

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _SyslogPrefixFormatter(logging.Formatter):
    """'<N>logger: message' lines: journald reads the priority from stderr without systemd-python."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = _PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def setup_logging(level: str = "info", journald: bool = True, environ: dict | None = None) -> str:
    """Configure the root logger; returns which sink was chosen ('journald', 'stderr-journal', 'stderr').

    Under systemd (JOURNAL_STREAM set) logs go to journald with structured fields
    (CODE_*, LOGGER, and any `extra={"EVENT_UUID": ...}` fields in upper case) when
    systemd-python is importable; else to stderr with '<N>' priority prefixes.
    """
    env = os.environ if environ is None else environ
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    under_journal = bool(env.get("JOURNAL_STREAM"))
    if journald and under_journal:
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="crackd")
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            root.addHandler(handler)
            return "journald"
        except ImportError:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_SyslogPrefixFormatter("%(name)s: %(message)s"))
            root.addHandler(handler)
            return "stderr-journal"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    return "stderr"
