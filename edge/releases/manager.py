"""Model releases on the device: stage, activate, roll back, with a history and a lock.

Layout under the state directory (shared with the daemon):

    STATE/models/releases/<version>/    installed bundles, each verified when staged
    STATE/models/releases/<v>.staging/  a copy being verified (never served)
    STATE/models/current  -> releases/<version>   what the daemon serves
    STATE/models/previous -> releases/<version>   what `rollback` returns to
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
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge.atomic_write import fsync_dir, replace_symlink
from edge.daemon_status import DaemonStatus, StatusReading
from edge.engine.bundle import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    SIGNATURE,
    BundleError,
    MemberFile,
    check_member,
    check_model_headers,
    listed_files,
    load_verified,
    manifest_sha256,
    member_exists,
    read_manifest,
    read_member,
    verify_files,
)
from edge.layout import DEFAULT_ALLOWED_SIGNERS, StateLayout
from edge.releases.errors import ReleaseError
from edge.releases.lock import DeviceLock
from edge.releases.signing import Trust, check_bundle_trust
from edge.timestamps import iso_utc, parse_iso

log = logging.getLogger(__name__)

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
STAGING_SUFFIX = ".staging"
# status.json is rewritten about every second; older than this means the daemon is not reporting.
STATUS_FRESH_S = 10.0


class InvalidVersion(ReleaseError):
    pass


class VersionConflict(ReleaseError):
    pass


class ReleaseNotFound(ReleaseError):
    pass


class NothingToRollBack(ReleaseError):
    pass


class LatencyTooHigh(BundleError):
    pass


class NotHealthy(ReleaseError):
    """The switch was made but the daemon did not serve the
    release healthily in time; `result` says what was switched."""

    def __init__(self, message: str, result: SwitchResult):
        super().__init__(message)
        self.result = result

    @property
    def payload(self) -> dict:
        return {"switch": self.result.as_dict()}


@dataclass(frozen=True)
class ReleasePolicy:
    """How strict staging is on this device (from the daemon config's `releases` section or CLI flags)."""

    require_signature: bool = True
    allowed_signers: Path = DEFAULT_ALLOWED_SIGNERS
    extra_allowed_signers: tuple[Path, ...] = ()  # from the command line: a signature must verify against these too
    keep: int = 3  # releases kept besides the current one (the previous is always among them)
    runtime: str = "auto"
    threads: int = 1
    max_latency_ms: float | None = None  # None: measure and report only
    latency_runs: int = 5


@dataclass
class StageReport:
    version: str
    path: str
    sha256: str
    signer: dict | None
    golden: dict
    latency_ms: dict
    already_staged: bool = False
    runtime: str = ""
    trust: str = (
        ""  # why it may be served: "signer NAME", "shipped with this crackd", "unsigned (signature not required)"
    )

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SwitchResult:
    action: str  # activate | rollback
    version: str
    from_version: str | None
    at: str = ""  # device clock, ISO 8601 UTC: a daemon reload after this belongs to this switch
    daemon: dict = field(default_factory=dict)  # {pid, signalled, message}
    removed: list[str] = field(default_factory=list)  # releases pruned
    health: dict | None = None  # {ok, message} when asked to wait until the daemon serves the release

    def as_dict(self) -> dict:
        return dict(self.__dict__)


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


def check_version(version: str) -> str:
    """A bundle_version becomes a directory name: letters, digits and . _ + - only."""
    if not VERSION_PATTERN.match(version or "") or version.endswith(STAGING_SUFFIX) or ".." in version:
        raise InvalidVersion(
            f"bundle_version {version!r} cannot name a release directory "
            "(expected letters, digits and . _ + -, at most 64 characters)"
        )
    return version


def _link_version(link: Path) -> str | None:
    """The release version a `current`/`previous` link names, or None when absent."""
    try:
        target = os.readlink(link)
    except (FileNotFoundError, OSError):
        return None
    return Path(target).name


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


def _looks_like_crackd(pid: int) -> bool:
    """Guard against a stale pid file naming an unrelated process (Linux: check its command line)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # hidden by hidepid= etc.: trust the pid file
    return b"crackd" in cmdline or b"edge.cli" in cmdline


def describe_daemon(status: dict, version: str | None) -> str:
    """One phrase on why the daemon does not count as serving
    `version` healthily (from `Releases.status()`, maybe as JSON)."""
    if not status.get("daemon"):
        return "daemon not running (no status.json)"
    try:
        reading = StatusReading.from_json(status["daemon"])
    except ValueError as exc:
        return f"daemon status unreadable ({exc})"
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


@dataclass(frozen=True)
class Health:
    ok: bool
    message: str

    def as_dict(self) -> dict:
        return {"ok": self.ok, "message": self.message}


def _copy_member(source: Path, staging: Path, member: MemberFile, limit: int | None = None) -> None:
    """Copy one file of `source` into `staging`: no symlink followed, regular files only, the size checked before
    reading (against the manifest, or `limit` for the manifest and signature), hashed and compared while copied."""
    dst = staging / member.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = read_member(source, member.name, limit) if limit is not None else None
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        if data is not None:
            out.write(data)
        else:
            check_member(source, member, sink=out.write)


class Releases:
    """The model releases of one device state directory."""

    def __init__(self, state_dir: str | Path, policy: ReleasePolicy | None = None):
        self.layout = StateLayout(Path(state_dir))
        self.policy = policy or ReleasePolicy()

    # ------------------------------------------------------------------ queries

    def current_version(self) -> str | None:
        return _link_version(self.layout.current)

    def previous_version(self) -> str | None:
        return _link_version(self.layout.previous)

    def installed(self) -> list[dict]:
        """Installed releases, newest first, with which is current/previous."""
        if not self.layout.releases.is_dir():
            return []
        current, previous = self.current_version(), self.previous_version()
        out = []
        for path in self.layout.releases.iterdir():
            if not path.is_dir() or path.name.endswith(STAGING_SUFFIX):
                continue
            entry = {
                "version": path.name,
                "current": path.name == current,
                "previous": path.name == previous,
                "installed_at": iso_utc(path.stat().st_mtime, "seconds"),
            }
            try:
                manifest = read_manifest(path)
                entry.update(
                    created=manifest.created, sha256=manifest_sha256(path), signed=(path / SIGNATURE).is_file()
                )
            except BundleError as exc:
                entry.update(error=str(exc))
            out.append(entry)
        out.sort(key=lambda e: (e["installed_at"], e["version"]), reverse=True)
        return out

    def history(self, limit: int | None = None) -> list[dict]:
        try:
            lines = self.layout.history.read_text().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines[-limit:] if limit else lines:
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    def daemon_status(self) -> StatusReading | None:
        """STATE/status.json as the daemon last wrote it (see `read_daemon_status`); None if absent or unreadable."""
        try:
            return read_daemon_status(self.layout.status_file)
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _serving(current: str | None, daemon: StatusReading | None) -> bool:
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

    def status(self) -> dict:
        """Everything the deploy tool needs to decide whether the current release is serving and healthy."""
        current = self.current_version()
        daemon = self.daemon_status()
        serving = self._serving(current, daemon)
        lock = DeviceLock(self.layout, "", "")
        history = self.history(limit=5)
        return {
            "state_dir": str(self.layout.state_dir),
            "current": current,
            "previous": self.previous_version(),
            "releases": [r["version"] for r in self.installed()],
            "daemon": daemon.to_json() if daemon else None,
            "serving_current": serving,
            "busy": (lock.holder() or {"who": "?"}) if lock.is_held() else None,
            "last": history[-1] if history else None,
        }

    def wait_serving(
        self, version: str, since_iso: str, timeout_s: float, settle_s: float = 3.0, poll_s: float = 0.25
    ) -> Health:
        """Wait until the daemon serves `version` healthily, with frames counting up for `settle_s`.

        Fails early when the daemon reports a reload after `since_iso` that
        failed (it refused the bundle and kept the previous one). Reads only
        STATE/status.json and the links, so it is cheap to poll often.
        """
        if timeout_s <= 0 or settle_s < 0 or settle_s >= timeout_s:
            raise ValueError(
                f"settle time {settle_s:g} s must be at least 0 and shorter than the timeout {timeout_s:g} s"
            )
        since = parse_iso(since_iso) or 0.0
        deadline = time.monotonic() + timeout_s
        healthy_since: float | None = None
        frames0 = frames = 0
        last = "no status yet"
        while True:
            current, daemon = self.current_version(), self.daemon_status()
            st = {"current": current, "daemon": daemon.to_json() if daemon else None}
            reload = daemon.status.last_reload if daemon else None
            reload_ts = parse_iso(reload.time) if reload else None
            if reload and reload.ok is False and reload_ts is not None and reload_ts >= since:
                return Health(False, f"daemon refused {version} at reload: {reload.error}")
            if current != version:
                return Health(False, f"models/current changed to {current} while waiting (someone else?)")
            now = time.monotonic()
            if daemon is not None and self._serving(current, daemon):
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
                last = describe_daemon(st, version)
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

    # ------------------------------------------------------------------ history

    def record(self, action: str, version: str | None, outcome: str, who: str, **extra) -> dict:
        """Append one line to deployments.jsonl (time, action, version, who, outcome, ...)."""
        entry = {
            "time": iso_utc(time.time(), "seconds"),
            "action": action,
            "version": version,
            "who": who,
            "outcome": outcome,
        }
        entry.update({k: v for k, v in extra.items() if v is not None})
        self.layout.models.mkdir(parents=True, exist_ok=True)
        with open(self.layout.history, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    # ------------------------------------------------------------------ operations

    def lock(self, who: str, action: str) -> DeviceLock:
        return DeviceLock(self.layout, who, action)

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
        with self.lock(who, f"stage {version}").held(wait_s, token):
            self._remove_stale_staging()
            try:
                report = self._stage_locked(source, version)
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
                signer=(report.signer or {}).get("principal"),
                latency_ms=report.latency_ms.get("total_ms_p50"),
            )
            return report

    def _stage_locked(self, source: Path, version: str) -> StageReport:
        """Copy in only what the manifest lists, after the signature and manifest passed; verify; rename into place.

        Order matters on a device that stages as root: the manifest and signature (small, capped) are copied and
        checked first, and nothing else of the source is opened until they pass. Then each listed file is opened
        without following symlinks, its size compared with the manifest, and copied while it is hashed. Files the
        manifest does not list are never read. Any failure, or an interruption, leaves no staging copy behind (a
        copy left by a killed stage is removed by the next one).
        """
        target = self.layout.release(version)
        if target.exists():
            if manifest_sha256(target) != manifest_sha256(source):
                raise VersionConflict(
                    f"release {version} is already installed with different content (manifest "
                    f"sha256 {manifest_sha256(target)[:12]}... vs "
                    f"{manifest_sha256(source)[:12]}...); give the new bundle a new bundle_version"
                )
            trust = self._check_trust(target)
            verify_files(read_manifest(target))
            return StageReport(
                version,
                str(target),
                manifest_sha256(target),
                trust.signer.as_dict() if trust.signer else None,
                {},
                {},
                already_staged=True,
                trust=trust.describe(),
            )
        self.layout.releases.mkdir(parents=True, exist_ok=True)
        staging = self.layout.releases / f"{version}{STAGING_SUFFIX}"
        try:
            staging.mkdir(mode=0o755)
            _copy_member(source, staging, MemberFile(MANIFEST, None, None, "manifest"), MAX_MANIFEST_BYTES)
            if member_exists(source, SIGNATURE):
                _copy_member(source, staging, MemberFile(SIGNATURE, None, None, "signature"), MAX_SIGNATURE_BYTES)
            manifest = read_manifest(staging)  # names confined to the bundle, version as read before
            if manifest.bundle_version != version:
                raise InvalidVersion(
                    f"{source}: bundle_version changed during the copy ({version} -> {manifest.bundle_version})"
                )
            trust = self._check_trust(staging)
            for member in listed_files(manifest):
                _copy_member(source, staging, member)
            check_model_headers(manifest)
            report = self._verify(staging, version, manifest, trust)
            os.rename(staging, target)
            fsync_dir(self.layout.releases)
        except (BundleError, ReleaseError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            # Name the bundle, not the private staging copy, in what the technician reads.
            raise type(exc)(str(exc).replace(str(staging), f"bundle {version}")) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._adopt(target)
        report.path = str(target)
        log.info("staged release %s (%s)", version, report.sha256[:12])
        return report

    def _remove_stale_staging(self) -> None:
        """Staging copies left by a stage that was killed (SIGKILL, power cut); call with the lock held."""
        if not self.layout.releases.is_dir():
            return
        for path in self.layout.releases.glob(f"*{STAGING_SUFFIX}"):
            log.warning("removing %s, left by an interrupted stage", path)
            shutil.rmtree(path, ignore_errors=True)

    def _check_trust(self, bundle_dir: Path) -> Trust:
        """This device's signature policy (edge.releases.signing.check_bundle_trust,
        the rule the daemon applies too)."""
        p = self.policy
        return check_bundle_trust(
            bundle_dir, p.require_signature, (Path(p.allowed_signers), *map(Path, p.extra_allowed_signers))
        )

    def _verify(self, staging: Path, version: str, manifest, trust: Trust) -> StageReport:
        """Load both models with this device's runtime, reproduce the golden samples, measure latency."""
        from edge.engine.selftest import measure_bundle_latency, run_cascade, run_golden  # OpenCV: only needed here

        signer = trust.signer
        loaded = load_verified(manifest, runtime=self.policy.runtime, threads=self.policy.threads)
        golden = run_golden(loaded)
        golden.raise_for_failures()
        run_cascade(loaded)
        latency = measure_bundle_latency(loaded, runs=self.policy.latency_runs)
        limit = self.policy.max_latency_ms
        if limit is not None and latency.total_ms_p50 > limit:
            raise LatencyTooHigh(
                f"bundle {version}: classifier + segmenter take {latency.total_ms_p50:.1f} ms per "
                f"frame on this device (median of {latency.runs}), above the limit of {limit:g} ms"
            )
        return StageReport(
            version,
            str(staging),
            loaded.sha256,
            signer.as_dict() if signer else None,
            golden.as_dict(),
            latency.as_dict(),
            runtime=loaded.classifier.runtime,
            trust=trust.describe(),
        )

    def _adopt(self, path: Path) -> None:
        """When run as root (sudo over SSH), give new files to the state directory's owner, the daemon's user."""
        if os.geteuid() != 0:
            return
        st = self.layout.state_dir.stat()
        if st.st_uid == 0 and st.st_gid == 0:
            return
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, st.st_uid, st.st_gid)

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
        with self.lock(who, f"activate {version}").held(wait_s, token):
            target = self.layout.release(version)
            if not target.is_dir():
                staged = ", ".join(r["version"] for r in self.installed()) or "none"
                raise ReleaseNotFound(
                    f"release {version} is not staged on this device (staged: "
                    f"{staged}); run `crackd models stage BUNDLE_DIR` first"
                )
            try:  # cheap re-check: a trust change, or corruption since staging
                self._check_trust(target)
                verify_files(read_manifest(target))
            except BundleError as exc:
                self.record("activate", version, "rejected", who, error=str(exc))
                raise
            old = self.current_version()
            result = self._switch("activate", version, old, who, reason)
            result.removed = self.prune()
            if wait_healthy_s is not None:
                self._await_health(result, who, wait_healthy_s, settle_s)
            return result

    def _await_health(self, result: SwitchResult, who: str, timeout_s: float, settle_s: float) -> None:
        health = self.wait_serving(result.version, result.at, timeout_s, settle_s)
        result.health = health.as_dict()
        if not health.ok:
            self.record("health", result.version, "unhealthy", who, message=health.message)
            raise NotHealthy(health.message, result)
        self.record("confirm", result.version, "healthy", who, message=health.message)

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
        with self.lock(who, "rollback").held(wait_s, token):
            old, prev = self.current_version(), self.previous_version()
            if not prev or not self.layout.release(prev).is_dir():
                raise NothingToRollBack(
                    f"{self.layout.models}: no previous release to roll back to (current: {old or 'none'})"
                )
            result = self._switch("rollback", prev, old, who, reason)
            if wait_healthy_s is not None:
                self._await_health(result, who, wait_healthy_s, settle_s)
            return result

    def confirm(
        self, version: str, who: str | None = None, token: str | None = None, message: str | None = None
    ) -> dict:
        """Record that `version` was seen serving and healthy after a deployment."""
        who = who or default_who()
        with self.lock(who, f"confirm {version}").held(0.0, token):
            return self.record("confirm", version, "healthy", who, message=message)

    def _switch(self, action: str, version: str, old: str | None, who: str, reason: str | None) -> SwitchResult:
        at = iso_utc(time.time())
        if old == version:
            daemon = {"signalled": False, "message": f"{version} is already current"}
        else:
            replace_symlink(self.layout.current, f"releases/{version}")
            if old and self.layout.release(old).is_dir():
                replace_symlink(self.layout.previous, f"releases/{old}")
            log.info("%s: current -> %s (was %s)", action, version, old)
            daemon = self.signal_daemon()
        outcome = "activated" if action == "activate" else "rolled back"
        self.record(action, version, outcome, who, from_version=old, reason=reason, daemon=daemon.get("message"))
        return SwitchResult(action, version, old, at, daemon)

    def signal_daemon(self) -> dict:
        """SIGHUP the daemon named by STATE/crackd.pid so it reloads; says what happened instead of failing."""
        try:
            pid = int(self.layout.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return {
                "pid": None,
                "signalled": False,
                "message": "daemon not running (no crackd.pid); it serves the new release when it starts",
            }
        if not pid_alive(pid) or not _looks_like_crackd(pid):
            return {
                "pid": pid,
                "signalled": False,
                "message": f"daemon not running (stale crackd.pid {pid}); it serves the new release when it starts",
            }
        try:
            os.kill(pid, signal.SIGHUP)
        except PermissionError:
            return {
                "pid": pid,
                "signalled": False,
                "message": (
                    f"no permission to signal daemon pid {pid}; run as root or the crackd user, "
                    "or `systemctl reload crackd`"
                ),
            }
        except ProcessLookupError:
            return {
                "pid": pid,
                "signalled": False,
                "message": f"daemon pid {pid} exited; it serves the new release when it starts",
            }
        return {"pid": pid, "signalled": True, "message": f"sent SIGHUP to daemon pid {pid}"}

    def prune(self) -> list[str]:
        """Delete releases beyond `keep` besides current (previous always
        kept), and stale staging copies. Call with the lock held."""
        if not self.layout.releases.is_dir():
            return []
        current, previous = self.current_version(), self.previous_version()
        removed = []
        for path in self.layout.releases.glob(f"*{STAGING_SUFFIX}"):
            shutil.rmtree(path, ignore_errors=True)
        others = [
            p
            for p in self.layout.releases.iterdir()
            if p.is_dir() and p.name not in (current, previous) and not p.name.endswith(STAGING_SUFFIX)
        ]
        others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        budget = max(0, self.policy.keep - (1 if previous and previous != current else 0))
        for path in others[budget:]:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
            log.info("pruned release %s (keeping %d besides current)", path.name, self.policy.keep)
        return removed


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
