"""The release manager's view of the running daemon: what status.json says, SIGHUP, and waiting until it serves.

Reads only STATE/status.json (edge.daemon_status), STATE/crackd.pid and the links, so it is cheap to poll often.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

from edge.daemon_status import DaemonStatus, StatusReading
from edge.layout import StateLayout
from edge.releases.answers import DaemonSignal, Health
from edge.releases.inventory import link_version
from edge.timestamps import parse_iso

# status.json is rewritten about every second; older than this means the daemon is not reporting.
STATUS_FRESH_S = 10.0


def pid_alive(pid: int) -> bool:
    """Whether a process exists; one owned by another user (EPERM) does."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def read_daemon_status(status_file: Path) -> StatusReading:
    """status.json as the daemon last wrote it (edge.daemon_status), how old it is and whether its pid is alive.

    Raises FileNotFoundError when there is none and ValueError when it is not a status.
    """
    status = DaemonStatus.read(status_file)
    updated = parse_iso(status.updated_at)
    pid = status.pid
    return StatusReading(
        status,
        age_s=round(time.time() - updated, 2) if updated else None,
        pid_alive=pid is not None and pid > 0 and pid_alive(pid),
    )


def daemon_status(layout: StateLayout) -> StatusReading | None:
    """STATE/status.json as the daemon last wrote it (see `read_daemon_status`); None if absent or unreadable."""
    try:
        return read_daemon_status(layout.status_file)
    except (FileNotFoundError, ValueError):
        return None


def serving(current: str | None, daemon: StatusReading | None) -> bool:
    """The daemon is alive, reporting, serving `current` and healthy (frames flowing)."""
    return bool(
        current
        and daemon
        and daemon.pid_alive
        and daemon.age_s is not None
        and daemon.age_s <= STATUS_FRESH_S
        and daemon.status.bundle_version == current
        and daemon.status.healthy is True
    )


def describe_daemon(reading: StatusReading | None, version: str | None) -> str:
    """One phrase on why the daemon does not count as serving `version` healthily (the `daemon` of
    `Releases.status()`, here or read back from `crackd models status --json`)."""
    if reading is None:
        return "daemon not running (no status.json)"
    d = reading.status
    if not reading.pid_alive:
        return f"daemon not running (pid {d.pid} is gone)"
    age = reading.age_s
    if age is None or age > STATUS_FRESH_S:
        return f"daemon status is {age} s old (daemon hung?)"
    if version and d.bundle_version != version:
        return f"daemon serves {d.bundle_version}, not {version}"
    if not d.healthy:
        return (
            f"daemon unhealthy: camera {d.camera_state}, last frame {d.last_frame_age_s} s ago, "
            f"{d.frames_failed} frames failed, {d.fps} fps"
        )
    return "healthy"


def _looks_like_crackd(pid: int) -> bool:
    """Guard against a stale pid file naming an unrelated process (Linux: check its command line)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # hidden by hidepid= etc.: trust the pid file
    return b"crackd" in cmdline or b"edge.cli" in cmdline


def signal_daemon(layout: StateLayout) -> DaemonSignal:
    """SIGHUP the daemon named by STATE/crackd.pid so it reloads; says what happened instead of failing."""
    try:
        pid = int(layout.pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return DaemonSignal(
            pid=None,
            signalled=False,
            message="daemon not running (no crackd.pid); it serves the new release when it starts",
        )
    if not pid_alive(pid) or not _looks_like_crackd(pid):
        return DaemonSignal(
            pid=pid,
            signalled=False,
            message=f"daemon not running (stale crackd.pid {pid}); it serves the new release when it starts",
        )
    try:
        os.kill(pid, signal.SIGHUP)
    except PermissionError:
        return DaemonSignal(
            pid=pid,
            signalled=False,
            message=(
                f"no permission to signal daemon pid {pid}; run as root or the crackd user, "
                "or `systemctl reload crackd`"
            ),
        )
    except ProcessLookupError:
        return DaemonSignal(
            pid=pid,
            signalled=False,
            message=f"daemon pid {pid} exited; it serves the new release when it starts",
        )
    return DaemonSignal(pid=pid, signalled=True, message=f"sent SIGHUP to daemon pid {pid}")


def wait_serving(
    layout: StateLayout, version: str, since_iso: str, timeout_s: float, settle_s: float = 3.0, poll_s: float = 0.25
) -> Health:
    """Wait until the daemon serves `version` healthily, with frames counting up for `settle_s`.

    Fails early when the daemon reports a reload after `since_iso` that
    failed (it refused the bundle and kept the previous one).
    """
    if timeout_s <= 0 or settle_s < 0 or settle_s >= timeout_s:
        raise ValueError(f"settle time {settle_s:g} s must be at least 0 and shorter than the timeout {timeout_s:g} s")
    since = parse_iso(since_iso) or 0.0
    deadline = time.monotonic() + timeout_s
    healthy_since: float | None = None
    frames0 = frames = 0
    last = "no status yet"
    while True:
        current, daemon = link_version(layout.current), daemon_status(layout)
        reload = daemon.status.last_reload if daemon else None
        reload_ts = parse_iso(reload.time) if reload else None
        if reload and reload.ok is False and reload_ts is not None and reload_ts >= since:
            return Health(False, f"daemon refused {version} at reload: {reload.error}")
        if current != version:
            return Health(False, f"models/current changed to {current} while waiting (someone else?)")
        now = time.monotonic()
        if daemon is not None and serving(current, daemon):
            frames = daemon.status.frames_processed
            if healthy_since is None:
                healthy_since, frames0 = now, frames
            elif now - healthy_since >= settle_s and frames > frames0:
                return Health(
                    True,
                    f"serving {version}, healthy, {frames - frames0} frames in {now - healthy_since:.1f} s "
                    f"({daemon.status.fps:.1f} fps)",
                )
            last = f"serving {version}, settling"
        else:
            healthy_since = None
            last = describe_daemon(daemon, version)
        if now >= deadline:
            break
        time.sleep(poll_s)
    if healthy_since is not None:  # say what was measured, not what was hoped for
        served = now - healthy_since
        if frames > frames0:
            last = (
                f"serving {version} with frames flowing ({frames - frames0} frames in "
                f"{served:.1f} s), but only for {served:.1f} of the {settle_s:g} s settle time"
            )
        else:
            last = (
                f"frames_processed stayed at {frames} for {served:.1f} s while status.json said "
                f"{version} was serving healthily (written {daemon.age_s if daemon else None} s ago)"
            )
    return Health(False, f"not serving {version} healthily within {timeout_s:g} s: {last}")
