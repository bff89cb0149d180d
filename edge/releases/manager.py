"""Model releases on the device: stage, activate, roll back, with a history and a lock.

Layout under the state directory (shared with the daemon):

    STATE/models/releases/<version>/    installed bundles, each verified when staged
    STATE/models/releases/<v>.staging/  a copy being verified (never served)
    STATE/models/current  -> releases/<version>   what the daemon serves
    STATE/models/previous -> releases/<version>   what `rollback` returns to
    STATE/models/switch.json            only while a switch is under way (edge.releases.switching)
    STATE/models/deployments.jsonl      one JSON line per stage/activate/rollback/confirm
    STATE/models/.lock                  flock: one stage/activate/rollback/deploy at a time (edge.releases.lock)
    STATE/models/.lock.holder           who holds the lock (JSON), for the "busy" message

A bundle only becomes `releases/<version>` after the full check of `stage`
(checksums, signature, both models loaded with this device's runtime, golden
samples reproduced, latency measured), and `current` only ever points at such a
release. Switching is a symlink created beside `current` and renamed onto it
(rename is atomic), then the daemon gets SIGHUP and reloads, verifying the
bundle again before it swaps. The same idea as RAUC/Mender, at the size of two
model files.

`Releases` puts the jobs together, each in its own module: staging (edge.releases.staging), switching the links
(switching), removing old releases (retention), what is installed (inventory), the history (history), the
daemon's side (daemon_watch), the lock (lock). Every command that takes the lock first undoes what a killed
command left (a half-made switch, staging copies, a half-deleted release).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from edge.daemon_status import StatusReading
from edge.engine.bundle import BundleError, bundle_origin, read_manifest, verify_files
from edge.layout import StateLayout
from edge.releases.answers import (
    DaemonSignal,
    DeploymentRecord,
    Health,
    InstalledRelease,
    LockHolder,
    ModelsStatus,
    StageReport,
    SwitchResult,
)
from edge.releases.daemon_watch import daemon_status, serving, signal_daemon, wait_serving
from edge.releases.errors import ReleaseError
from edge.releases.faults import kill_point
from edge.releases.history import DeploymentHistory
from edge.releases.inventory import InvalidVersion, check_version, installed, link_version
from edge.releases.lock import DeviceLock
from edge.releases.policy import ReleasePolicy
from edge.releases.retention import prune
from edge.releases.staging import LatencyTooHigh, VersionConflict, check_trust, remove_leftovers, stage_locked
from edge.releases.switching import SwitchIntent, switch, undo_interrupted

# The names callers import from here (the command line, crack-deploy, tests).
__all__ = [
    "InvalidVersion",
    "LatencyTooHigh",
    "NotHealthy",
    "NothingToRollBack",
    "ReleaseError",
    "ReleaseNotFound",
    "ReleasePolicy",
    "Releases",
    "StageReport",
    "SwitchResult",
    "VersionConflict",
    "default_who",
]

log = logging.getLogger(__name__)


class ReleaseNotFound(ReleaseError):
    pass


class NothingToRollBack(ReleaseError):
    pass


class NotHealthy(ReleaseError):
    """The switch was made but the daemon did not serve the
    release healthily in time; `result` says what was switched."""

    def __init__(self, message: str, result: SwitchResult):
        super().__init__(message)
        self.result = result


def default_who() -> str:
    """Who is acting: the sudo/login user, and the SSH client address when remote."""
    user = os.environ.get("SUDO_USER") or os.environ.get("USER") or os.environ.get("LOGNAME")
    if not user:
        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            user = str(os.getuid())
    ssh = os.environ.get("SSH_CONNECTION") or os.environ.get("SSH_CLIENT")
    where = ssh.split()[0] if ssh else socket.gethostname()
    return f"{user}@{where}"


class Releases:
    """The model releases of one device state directory."""

    def __init__(self, state_dir: str | Path, policy: ReleasePolicy | None = None):
        self.layout = StateLayout(Path(state_dir))
        self.policy = policy or ReleasePolicy()
        self.deployments = DeploymentHistory(self.layout)

    # ------------------------------------------------------------------ queries

    def current_version(self) -> str | None:
        return link_version(self.layout.current)

    def previous_version(self) -> str | None:
        return link_version(self.layout.previous)

    def installed(self) -> list[InstalledRelease]:
        """Installed releases, newest first, with which is current/previous."""
        return installed(self.layout)

    def history(self, limit: int | None = None) -> list[DeploymentRecord]:
        return self.deployments.read(limit)

    def record(self, action: str, version: str | None, outcome: str, who: str, **extra) -> DeploymentRecord:
        """Append one line to deployments.jsonl (time, action, version, who, outcome, ...)."""
        return self.deployments.record(action, version, outcome, who, **extra)

    def status(self) -> ModelsStatus:
        """Everything the deploy tool needs to decide whether the current release is serving and healthy."""
        current = self.current_version()
        daemon = daemon_status(self.layout)
        lock = DeviceLock(self.layout, "", "")
        history = self.history(limit=5)
        try:
            interrupted = SwitchIntent.read(self.layout.switch_intent)
        except ReleaseError:
            interrupted = None
        held = lock.is_held()
        return ModelsStatus(
            state_dir=str(self.layout.state_dir),
            current=current,
            previous=self.previous_version(),
            releases=[r.version for r in self.installed()],
            daemon=daemon,
            serving_current=serving(current, daemon),
            busy=LockHolder.from_json(lock.holder() or {}) if held else None,
            last=history[-1] if history else None,
            # a switch whose command was killed (and whose lock is gone): the next command undoes it
            interrupted=f"{interrupted.action} {interrupted.version}" if interrupted and not held else None,
            origin=self._origin(current),
        )

    def _origin(self, version: str | None) -> dict | None:
        """The base and site recorded in a release's manifest; None for a generic bundle or one that does not read."""
        if version is None:
            return None
        try:
            return bundle_origin(read_manifest(self.layout.releases / version).raw)
        except BundleError:
            return None

    def wait_serving(
        self, version: str, since_iso: str, timeout_s: float, settle_s: float = 3.0, poll_s: float = 0.25
    ) -> Health:
        """Wait until the daemon serves `version` healthily (edge.releases.daemon_watch.wait_serving)."""
        return wait_serving(self.layout, version, since_iso, timeout_s, settle_s, poll_s)

    def daemon_status(self) -> StatusReading | None:
        """STATE/status.json as the daemon last wrote it; None if absent or unreadable."""
        return daemon_status(self.layout)

    def signal_daemon(self) -> DaemonSignal:
        return signal_daemon(self.layout)

    # ------------------------------------------------------------------ operations

    def lock(self, who: str, action: str) -> DeviceLock:
        return DeviceLock(self.layout, who, action)

    @contextlib.contextmanager
    def _locked(self, who: str, action: str, wait_s: float, token: str | None) -> Iterator[None]:
        """Hold the device lock, and first clear up after any command that was killed holding it before."""
        with self.lock(who, action).held(wait_s, token):
            kill_point("locked")
            undo_interrupted(self.layout, self.deployments)
            remove_leftovers(self.layout)
            yield

    def stage(
        self,
        source: str | Path,
        who: str | None = None,
        origin: str | None = None,
        wait_s: float = 0.0,
        token: str | None = None,
    ) -> StageReport:
        """Copy bundle `source` in as releases/<version> after checking
        everything; raises on any failure (nothing is installed)."""
        who = who or default_who()
        source = Path(source)
        try:
            version = check_version(read_manifest(source).bundle_version)
        except (BundleError, ReleaseError) as exc:
            self.record("stage", None, "rejected", who, source=origin or str(source), error=str(exc))
            raise
        with self._locked(who, f"stage {version}", wait_s, token):
            try:
                report = stage_locked(self.layout, self.policy, source, version)
            except (BundleError, ReleaseError, OSError) as exc:
                self.record("stage", version, "rejected", who, source=origin or str(source), error=str(exc))
                raise
            self.record(
                "stage",
                version,
                "already staged" if report.already_staged else "staged",
                who,
                source=origin or str(source),
                sha256=report.sha256,
                signer=report.signer.principal if report.signer else None,
                latency_ms=report.latency_ms.total_ms_p50 if report.latency_ms else None,
            )
            return report

    def activate(
        self,
        version: str,
        who: str | None = None,
        wait_s: float = 0.0,
        token: str | None = None,
        reason: str | None = None,
        wait_healthy_s: float | None = None,
        settle_s: float = 3.0,
    ) -> SwitchResult:
        """Point `current` at staged release `version` (atomically) and tell the daemon to reload.

        With `wait_healthy_s`, also wait for the daemon to serve it healthily:
        recorded as `confirm healthy` when it does, NotHealthy raised when not
        (the switch stays; the caller decides whether to roll back)."""
        who = who or default_who()
        check_version(version)
        with self._locked(who, f"activate {version}", wait_s, token):
            target = self.layout.release(version)
            if not target.is_dir():
                staged = ", ".join(r.version for r in self.installed()) or "none"
                raise ReleaseNotFound(
                    f"release {version} is not staged on this device (staged: "
                    f"{staged}); run `crackd models stage BUNDLE_DIR` first"
                )
            try:  # cheap re-check: a trust change, or corruption since staging
                check_trust(target, self.policy)
                verify_files(read_manifest(target))
            except BundleError as exc:
                self.record("activate", version, "rejected", who, error=str(exc))
                raise
            result = switch(self.layout, self.deployments, "activate", version, who, reason)
            result = replace(result, removed=prune(self.layout, self.policy.keep))
            if wait_healthy_s is not None:
                result = self._await_health(result, who, wait_healthy_s, settle_s)
            return result

    def _await_health(self, result: SwitchResult, who: str, timeout_s: float, settle_s: float) -> SwitchResult:
        health = self.wait_serving(result.version, result.at, timeout_s, settle_s)
        result = replace(result, health=health)
        if not health.ok:
            self.record("health", result.version, "unhealthy", who, message=health.message)
            raise NotHealthy(health.message, result)
        self.record("confirm", result.version, "healthy", who, message=health.message)
        return result

    def rollback(
        self,
        who: str | None = None,
        wait_s: float = 0.0,
        token: str | None = None,
        reason: str | None = None,
        wait_healthy_s: float | None = None,
        settle_s: float = 3.0,
    ) -> SwitchResult:
        """Serve the previous release again (current and previous swap); optionally wait until it serves healthily."""
        who = who or default_who()
        with self._locked(who, "rollback", wait_s, token):
            old, prev = self.current_version(), self.previous_version()
            if not prev or not self.layout.release(prev).is_dir():
                raise NothingToRollBack(
                    f"{self.layout.models}: no previous release to roll back to (current: {old or 'none'})"
                )
            result = switch(self.layout, self.deployments, "rollback", prev, who, reason)
            if wait_healthy_s is not None:
                result = self._await_health(result, who, wait_healthy_s, settle_s)
            return result

    def confirm(
        self, version: str, who: str | None = None, token: str | None = None, message: str | None = None
    ) -> DeploymentRecord:
        """Record that `version` was seen serving and healthy after a deployment."""
        who = who or default_who()
        with self._locked(who, f"confirm {version}", 0.0, token):
            return self.record("confirm", version, "healthy", who, message=message)
