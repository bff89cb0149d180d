"""Rolling a bundle out to devices: verify, copy, stage, activate, confirm health or roll back.

The device does the checking (`crackd models stage` runs the same bundle code,
the signature check and the golden samples on the device's own runtime); this
module orchestrates it over SSH and decides from the daemon's own status
whether the new release is serving and healthy. The whole sequence runs under
the device lock (`crackd models lock`, held open over SSH), so two deployments
to one device never interleave: the second one waits (`--lock-wait`) or stops
with a message naming who holds the device.
"""

from __future__ import annotations

import json
import logging
import select
import shlex
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from edge.bundle import SIGNATURE, Manifest, read_manifest, verify_files
from deploy.ssh import Remote, RemoteError, SSHUnreachable, remote_join

log = logging.getLogger(__name__)

Progress = Callable[[str, str], None]

# Outcomes in the summaries. A push succeeds only as DEPLOYED or ALREADY; "rolled back" means the
# new bundle is NOT serving. RESTORED (manual rollback serving again) and INSTALLED are successes too.
DEPLOYED, ALREADY, REJECTED, ROLLED_BACK, BUSY, FAILED, SKIPPED, UNREACHABLE = (
    "deployed", "already serving", "rejected", "rolled back", "busy", "failed", "skipped", "unreachable")
RESTORED, INSTALLED = "restored", "installed"
SUCCESS = {DEPLOYED, ALREADY, RESTORED, INSTALLED}


@dataclass(frozen=True)
class DeviceSettings:
    """How to reach crackd on the devices."""

    crackd: str = "/opt/crackd/venv/bin/crackd"  # remote command prefix, e.g. "sudo -n /opt/crackd/venv/bin/crackd"
    state_dir: str = "/var/lib/crackd"
    config: str | None = None  # remote daemon config; when set it names the state dir and policy instead of --state-dir
    device_options: tuple[str, ...] = ()  # extra flags for `models stage`/`activate`, e.g. --max-latency-ms=80
    tmp_dir: str = "/tmp"  # where uploads land before staging

    def models(self, action: str, *args: str, policy: bool = False) -> str:
        where = ["--config", self.config] if self.config else ["--state-dir", self.state_dir]
        extra = list(self.device_options) if policy else []
        return remote_join(self.crackd, ["models", action, *args, *where, "--json", *extra])


@dataclass(frozen=True)
class PushOptions:
    who: str
    source: str = ""  # where the bundle comes from, for the device history
    health_timeout_s: float = 60.0  # new release must be serving and healthy within this
    settle_s: float = 3.0  # ... and stay so (with frames counting up) for this long
    poll_s: float = 1.0
    stage_timeout_s: float = 600.0  # models load + golden samples on a slow Pi
    copy_timeout_s: float = 600.0
    command_timeout_s: float = 60.0
    lock_wait_s: float = 0.0


@dataclass
class HostResult:
    host: str
    outcome: str
    old_version: str | None = None
    new_version: str | None = None
    seconds: float = 0.0
    message: str = ""
    canary: bool = False
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome in SUCCESS

    def as_dict(self) -> dict:
        return {"host": self.host, "ok": self.ok, "outcome": self.outcome, "old_version": self.old_version, "new_version": self.new_version,
                "seconds": round(self.seconds, 1), "message": self.message, "canary": self.canary}


class LocalBundleInvalid(Exception):
    pass


def check_local_bundle(path: Path) -> Manifest:
    """The same checks the device starts with (manifest, checksums, file types), before anything is copied."""
    from edge.bundle import BundleError

    try:
        manifest = read_manifest(path)
        verify_files(manifest)
    except BundleError as exc:
        raise LocalBundleInvalid(f"{exc} (not deployed anywhere)") from None
    return manifest


def is_signed(path: Path) -> bool:
    return (Path(path) / SIGNATURE).is_file()


def read_hosts_file(path: Path) -> list[str]:
    """One host per line (anything ssh takes); blank lines and # comments ignored."""
    hosts = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            hosts.append(line)
    return hosts


class DeviceLockSession:
    """`crackd models lock` kept open over SSH for the length of a deployment; closing stdin releases it."""

    def __init__(self, remote: Remote, dev: DeviceSettings, who: str, wait_s: float, timeout_s: float):
        self.remote = remote
        cmd = dev.models("lock", "--who", who, "--wait", f"{wait_s:g}")
        self.proc = remote.open(cmd)
        self.token: str | None = None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s + wait_s)
        line = self.proc.stdout.readline() if ready else ""
        try:
            payload = json.loads(line) if line.strip().startswith("{") else None
        except ValueError:
            payload = None
        if not payload or not payload.get("ok"):
            self.close()
            err = (payload or {}).get("error") or self._stderr_tail() or ("no answer within %.0f s" % (timeout_s + wait_s))
            if payload and payload.get("kind") == "DeviceBusy":
                raise DeviceBusyRemote(remote.destination, err, payload)
            if self.proc.returncode == 255:
                raise SSHUnreachable(remote.destination, f"ssh failed: {err}")
            raise RemoteError(remote.destination, f"could not take the device lock: {err}", payload or {})
        self.token = payload["token"]

    def _stderr_tail(self) -> str:
        try:
            _, err = self.proc.communicate(timeout=5)
        except Exception:
            return ""
        lines = [ln for ln in (err or "").splitlines() if ln.strip()]
        return lines[-1].strip() if lines else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=15)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream and not stream.closed:
                stream.close()


class DeviceBusyRemote(RemoteError):
    pass


def _iso_ts(text) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def describe_daemon(status: dict, version: str) -> str:
    """One phrase saying why the daemon does not count as serving `version` healthily."""
    d = status.get("daemon")
    if not d:
        return "daemon not running (no status.json)"
    if not d.get("pid_alive"):
        return f"daemon not running (pid {d.get('pid')} is gone)"
    age = d.get("status_age_s")
    if age is None or age > 10:
        return f"daemon status is {age} s old (daemon hung?)"
    if d.get("bundle_version") != version:
        return f"daemon serves {d.get('bundle_version')}, not {version}"
    if not d.get("healthy"):
        return (f"daemon unhealthy: camera {d.get('camera_state')}, last frame {d.get('last_frame_age_s')} s ago, "
                f"{d.get('frames_failed', 0)} frames failed, {d.get('fps', 0)} fps")
    return "healthy"


def wait_until_serving(remote: Remote, dev: DeviceSettings, version: str, since_iso: str, opts: PushOptions,
                       timeout_s: float | None = None) -> tuple[bool, str, dict]:
    """Poll `crackd models status` until the daemon serves `version`, healthy, with frames counting up for settle_s.

    Fails early when the daemon reports a reload after `since_iso` that failed
    (it refused the bundle and kept the old one). Returns (ok, message, last status).
    """
    timeout_s = opts.health_timeout_s if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    since = _iso_ts(since_iso) or 0.0
    healthy_since: float | None = None
    frames0 = 0
    last = "no status yet"
    status: dict = {}
    while time.monotonic() < deadline:
        try:
            status = remote.run_json(dev.models("status"), opts.command_timeout_s)
        except RemoteError as exc:
            last = str(exc)
            healthy_since = None
            time.sleep(opts.poll_s)
            continue
        d = status.get("daemon") or {}
        reload = d.get("last_reload") or {}
        reload_ts = _iso_ts(reload.get("time"))
        if reload and reload.get("ok") is False and reload_ts is not None and reload_ts >= since:
            return False, f"daemon refused {version} at reload: {reload.get('error')}", status
        if status.get("current") != version:
            return False, f"models/current changed to {status.get('current')} during the deployment (someone else?)", status
        if status.get("serving_current") and d.get("bundle_version") == version:
            frames = int(d.get("frames_processed") or 0)
            now = time.monotonic()
            if healthy_since is None:
                healthy_since, frames0 = now, frames
            elif now - healthy_since >= opts.settle_s and frames > frames0:
                return True, f"serving {version}, healthy, {d.get('fps', 0):.1f} fps", status
            last = f"serving {version}, healthy, settling"
        else:
            healthy_since = None
            last = describe_daemon(status, version)
        time.sleep(opts.poll_s)
    if healthy_since is not None:
        last = "no new frames processed while settling"
    return False, f"not serving {version} healthily within {timeout_s:.0f} s: {last}", status


def push_host(host: str, bundle: Path, manifest: Manifest, dev: DeviceSettings, opts: PushOptions, remote: Remote,
              progress: Progress) -> HostResult:
    """Deploy to one device; never raises for device-side problems (they become the result)."""
    t0 = time.monotonic()
    version = manifest.bundle_version
    result = HostResult(host, FAILED, new_version=version)
    session = None
    try:
        progress(host, "taking the device lock")
        session = DeviceLockSession(remote, dev, opts.who, opts.lock_wait_s, opts.command_timeout_s)
        token = ["--lock-token", session.token]
        before = remote.run_json(dev.models("status"), opts.command_timeout_s)
        result.old_version = before.get("current")
        if before.get("current") == version:
            if before.get("serving_current"):
                result.outcome, result.message = ALREADY, f"{version} is already serving"
            else:
                result.message = f"{version} is already the current release but not serving healthily ({describe_daemon(before, version)}); nothing changed"
            return result

        tmp_template = shlex.quote(f"{dev.tmp_dir.rstrip('/')}/crackd-upload.XXXXXX")
        upload = remote.run(f"mktemp -d {tmp_template}", opts.command_timeout_s).stdout.strip()
        try:
            progress(host, f"copying bundle {version} to {upload}")
            tool = remote.upload_dir(bundle, upload, opts.copy_timeout_s)
            progress(host, f"copied with {tool}; staging (checksums, signature, model load, golden samples, latency)")
            try:
                staged = remote.run_json(dev.models("stage", upload, "--who", opts.who, "--source", opts.source, *token, policy=True), opts.stage_timeout_s)
            except RemoteError as exc:
                if isinstance(exc, SSHUnreachable):
                    raise
                result.outcome, result.message = REJECTED, f"device refused the bundle: {exc.payload.get('error') or exc}"
                return result
        finally:
            remote.run(f"rm -rf -- {shlex.quote(upload)}", opts.command_timeout_s, check=False)
        lat = (staged.get("latency_ms") or {}).get("total_ms_p50")
        signer = (staged.get("signer") or {}).get("principal", "unsigned")
        result.details["stage"] = staged
        progress(host, f"staged: signer {signer}, golden ok, {lat} ms/frame; activating (was {result.old_version})")

        try:
            activated = remote.run_json(dev.models("activate", version, "--who", opts.who, *token, policy=True), opts.command_timeout_s)
        except RemoteError as exc:
            if isinstance(exc, SSHUnreachable):
                raise
            result.outcome, result.message = REJECTED, f"activation refused: {exc.payload.get('error') or exc}"
            return result
        progress(host, f"activated; {activated.get('daemon', {}).get('message', '')}; waiting up to {opts.health_timeout_s:.0f} s for it to serve healthily")

        ok, why, _ = wait_until_serving(remote, dev, version, activated.get("at", ""), opts)
        if ok:
            remote.run_json(dev.models("confirm", version, "--who", opts.who, "--message", why, *token), opts.command_timeout_s)
            result.outcome, result.message = DEPLOYED, why
            progress(host, f"OK: {why}")
            return result

        progress(host, f"FAILED: {why}; rolling back to {result.old_version}")
        result.outcome = ROLLED_BACK
        result.message = f"{why}; rolled back"
        try:
            back = remote.run_json(dev.models("rollback", "--who", opts.who, "--reason", why, *token), opts.command_timeout_s)
        except RemoteError as exc:
            result.outcome, result.message = FAILED, f"{why}; ROLLBACK FAILED: {exc}"
            return result
        if result.old_version:
            ok_back, why_back, _ = wait_until_serving(remote, dev, back["version"], back.get("at", ""), opts)
            result.message = f"{why}; rolled back to {back['version']}" + ("" if ok_back else f" (but: {why_back})")
        progress(host, result.message)
        return result
    except DeviceBusyRemote as exc:
        result.outcome, result.message = BUSY, str(exc.payload.get("error") or exc)
        return result
    except SSHUnreachable as exc:
        result.outcome, result.message = UNREACHABLE, str(exc)
        return result
    except RemoteError as exc:
        result.outcome, result.message = FAILED, str(exc)
        return result
    finally:
        if session is not None:
            session.close()
        result.seconds = time.monotonic() - t0


def rollout(hosts: list[str], bundle: Path, manifest: Manifest, dev: DeviceSettings, opts: PushOptions, make_remote: Callable[[str], Remote],
            progress: Progress, canary: int = 0, parallel: int = 4) -> list[HostResult]:
    """Deploy to `hosts`: the first `canary` hosts first; if any of them fails the rest are skipped."""
    canaries, rest = hosts[:canary], hosts[canary:]
    results: list[HostResult] = []

    def wave(group: list[str], is_canary: bool) -> list[HostResult]:
        with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(group)))) as pool:
            out = list(pool.map(lambda h: push_host(h, bundle, manifest, dev, opts, make_remote(h), progress), group))
        for r in out:
            r.canary = is_canary
        return out

    if canaries:
        progress("*", f"canary wave: {', '.join(canaries)}")
        results += wave(canaries, True)
        failed = [r.host for r in results if not r.ok]
        if failed:
            msg = f"canary failed on {', '.join(failed)}; rollout stopped"
            progress("*", msg)
            return results + [HostResult(h, SKIPPED, new_version=manifest.bundle_version, message=msg) for h in rest]
        if rest:
            progress("*", f"canaries healthy; deploying to the remaining {len(rest)} host(s)")
    if rest:
        results += wave(rest, False)
    return results


def format_table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def summary_table(results: list[HostResult]) -> str:
    rows = [[r.host + (" (canary)" if r.canary else ""), r.old_version or "-", r.new_version or "-", r.outcome, f"{r.seconds:.1f}", r.message] for r in results]
    return format_table(rows, ["HOST", "OLD", "NEW", "OUTCOME", "SECONDS", "MESSAGE"])


def make_progress(stream) -> Progress:
    lock = threading.Lock()

    def progress(host: str, message: str) -> None:
        with lock:
            stream.write(f"[{time.strftime('%H:%M:%S')}] {host}: {message}\n")
            stream.flush()

    return progress
