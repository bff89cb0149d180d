"""Rolling a bundle out to devices: verify, copy, stage, activate, confirm health or roll back.

The device does the checking (`crackd models stage` runs the same bundle code,
the signature check and the golden samples on the device's own runtime) and
watches its own daemon (`activate --wait-healthy` reads STATE/status.json until
the new release serves with frames flowing, or the daemon refuses it); this
module orchestrates that over SSH and rolls back when the device says the new
release is not healthy. The whole sequence runs under the device lock
(`crackd models lock`, held open over SSH), so two deployments to one device
never interleave: the second waits (`--lock-wait`) or stops with a message
naming who holds the device.
"""

from __future__ import annotations

import json
import logging
import select
import shlex
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from deploy.ssh import Remote, RemoteError, SSHUnreachable, remote_join
from edge.engine.bundle import SIGNATURE, BundleError, Manifest, read_manifest, verify_files
from edge.releases.answers import JsonContract, LockAnswer, ModelsStatus, Refusal, StageReport, SwitchResult
from edge.releases.daemon_watch import describe_daemon

A = TypeVar("A", bound=JsonContract)

log = logging.getLogger(__name__)

Progress = Callable[[str, str], None]

# Outcomes in the summaries. A push succeeds only as DEPLOYED or ALREADY; "rolled back" means the
# new bundle is NOT serving. RESTORED (manual rollback serving again) and INSTALLED are successes too.
DEPLOYED, ALREADY, REJECTED, ROLLED_BACK, BUSY, FAILED, SKIPPED, UNREACHABLE = (
    "deployed",
    "already serving",
    "rejected",
    "rolled back",
    "busy",
    "failed",
    "skipped",
    "unreachable",
)
RESTORED, INSTALLED = "restored", "installed"
SUCCESS = {DEPLOYED, ALREADY, RESTORED, INSTALLED}


@dataclass(frozen=True)
class DeviceSettings:
    """How to reach crackd on the devices."""

    crackd: str = "/opt/crackd/venv/bin/crackd"  # remote command prefix, e.g. "sudo -n /opt/crackd/venv/bin/crackd"
    # Both None: the device's own defaults (/etc/crackd/crackd.yaml when present, else /var/lib/crackd).
    state_dir: str | None = None
    config: str | None = None  # remote daemon config: its state dir and release policy
    device_options: tuple[str, ...] = ()  # extra flags for `models stage`/`activate`, e.g. --max-latency-ms=80
    tmp_dir: str = "/tmp"  # where uploads land before staging

    def _where(self) -> list[str]:
        return (["--config", self.config] if self.config else []) + (
            ["--state-dir", self.state_dir] if self.state_dir else []
        )

    def models(self, action: str, *args: str, policy: bool = False) -> str:
        extra = list(self.device_options) if policy else []
        return remote_join(self.crackd, ["models", action, *args, *self._where(), "--json", *extra])

    def events(self, action: str, *args: str, json: bool = True) -> str:
        """A `crackd events` command line (crack-deploy pull)."""
        return remote_join(self.crackd, ["events", action, *self._where(), *(["--json"] if json else []), *args])


@dataclass(frozen=True)
class PushOptions:
    who: str
    source: str = ""  # where the bundle comes from, for the device history
    health_timeout_s: float = 60.0  # the new release must serve healthily within this
    settle_s: float = 3.0  # ... and keep processing frames for this long
    stage_timeout_s: float = 600.0  # models load + golden samples on a slow Pi
    copy_timeout_s: float = 600.0
    command_timeout_s: float = 60.0
    lock_wait_s: float = 0.0
    force: bool = False  # deploy even when the device is not serving healthily beforehand


@dataclass
class HostResult:
    host: str
    outcome: str
    old_version: str | None = None
    new_version: str | None = None
    seconds: float = 0.0
    message: str = ""
    canary: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome in SUCCESS

    def as_dict(self) -> dict:
        return {
            "host": self.host,
            "ok": self.ok,
            "outcome": self.outcome,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "seconds": round(self.seconds, 1),
            "message": self.message,
            "canary": self.canary,
        }


class LocalBundleInvalid(Exception):
    pass


class DeviceBusyRemote(RemoteError):
    pass


def check_local_bundle(path: Path) -> Manifest:
    """The same first checks the device makes (manifest, checksums, file types), before anything is copied."""
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
    """`crackd models lock` kept open over SSH for the length of a deployment; closing stdin releases it.

    Its first answer carries the lock token and the device status at that moment.
    """

    def __init__(self, remote: Remote, dev: DeviceSettings, who: str, wait_s: float, timeout_s: float):
        self.remote = remote
        self.proc = remote.open(dev.models("lock", "--who", who, "--wait", f"{wait_s:g}"))
        stdout = self.proc.stdout
        assert stdout is not None  # Remote.open pipes it
        ready, _, _ = select.select([stdout], [], [], timeout_s + wait_s)
        line = stdout.readline() if ready else ""
        try:
            payload = json.loads(line) if line.strip().startswith("{") else None
        except ValueError:
            payload = None
        if not payload or payload.get("ok") is not True:
            self.close()
            refusal = refusal_of(payload or {})
            err = (refusal and refusal.error) or self._stderr_tail() or f"no answer within {timeout_s + wait_s:.0f} s"
            if refusal and refusal.kind == "DeviceBusy":
                raise DeviceBusyRemote(remote.destination, err, payload)
            if self.proc.returncode == 255:
                raise SSHUnreachable(remote.destination, f"ssh failed: {err}")
            raise RemoteError(remote.destination, f"could not take the device lock: {err}", payload or {})
        answer = read_answer(LockAnswer, payload, remote.destination, "crackd models lock")
        self.token: str = answer.token
        self.status: ModelsStatus = answer.status

    def _stderr_tail(self) -> str:
        try:
            _, err = self.proc.communicate(timeout=5)
        except Exception:
            return ""
        lines = [ln for ln in (err or "").splitlines() if ln.strip()]
        return lines[-1].strip() if lines else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            stdin = self.proc.stdin
            assert stdin is not None  # Remote.open pipes it
            try:
                stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=15)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream and not stream.closed:
                stream.close()


def read_answer(cls: type[A], payload: dict, host: str, command: str) -> A:
    """A device's `--json` answer through its contract (edge.releases.answers); one that does not fit is a
    RemoteError naming the key."""
    try:
        return cls.from_json(payload)
    except ValueError as exc:
        raise RemoteError(host, f"`{command}` answered something crack-deploy cannot read: {exc}", payload) from None


def refusal_of(payload: dict) -> Refusal | None:
    """The device's `{"ok": false, ...}` answer, or None when there was none (no JSON, or not a refusal)."""
    try:
        return Refusal.from_json(payload) if payload.get("ok") is False else None
    except ValueError:
        return None


def _device_error(exc: RemoteError) -> str:
    refusal = refusal_of(exc.payload)
    return refusal.error if refusal else str(exc)


def push_host(
    host: str,
    bundle: Path,
    manifest: Manifest,
    dev: DeviceSettings,
    opts: PushOptions,
    remote: Remote,
    progress: Progress,
) -> HostResult:
    """Deploy to one device; never raises for device-side problems (they become the result)."""
    t0 = time.monotonic()
    version = manifest.bundle_version
    result = HostResult(host, FAILED, new_version=version)
    session = None
    try:
        progress(host, "connecting, taking the device lock")
        session = DeviceLockSession(remote, dev, opts.who, opts.lock_wait_s, opts.command_timeout_s)
        token = ["--lock-token", session.token]
        before = session.status
        result.old_version = before.current
        if before.current == version:
            if before.serving_current:
                result.outcome, result.message = ALREADY, f"{version} is already serving"
            else:
                why = describe_daemon(before.daemon, version)
                result.message = (
                    f"{version} is already the current release but not serving healthily ({why}); nothing changed"
                )
            return result
        if not before.serving_current and not opts.force:
            why = (
                describe_daemon(before.daemon, result.old_version)
                if result.old_version
                else "no release installed in models/current"
            )
            result.message = (
                f"device is not serving healthily before the deploy ({why}); "
                "nothing changed (fix the daemon first, or --force to deploy anyway)"
            )
            return result

        # A fresh upload directory named after the lock token (random, known only to this deployment).
        upload = f"{dev.tmp_dir.rstrip('/')}/crackd-upload.{session.token}"
        progress(host, f"copying bundle {version} to {upload}")
        try:
            tool = remote.upload_dir(bundle, upload, opts.copy_timeout_s)
        except RemoteError:
            remote.run(f"rm -rf -- {shlex.quote(upload)}", opts.command_timeout_s, check=False)
            raise
        progress(
            host,
            f"copied with {tool}; device checks the bundle (checksums, "
            "signature, models load, golden samples, latency)",
        )
        stage = dev.models("stage", upload, "--who", opts.who, "--source", opts.source, *token, policy=True)
        try:  # the upload is removed in the same SSH command, whatever the outcome
            answer = remote.run_json(f"{stage}; rc=$?; rm -rf -- {shlex.quote(upload)}; exit $rc", opts.stage_timeout_s)
        except SSHUnreachable:
            raise
        except RemoteError as exc:
            result.outcome, result.message = REJECTED, f"device refused the bundle: {_device_error(exc)}"
            progress(host, f"REFUSED, nothing changed: {_device_error(exc)}")
            return result
        staged = read_answer(StageReport, answer, host, "crackd models stage")
        lat = staged.latency_ms.total_ms_p50 if staged.latency_ms else None
        signer = staged.signer.principal if staged.signer else "unsigned"
        progress(
            host,
            f"staged: signer {signer}, golden samples ok, {lat} ms/frame; activating (was {result.old_version}) "
            f"and waiting up to {opts.health_timeout_s:g} s for it to serve healthily",
        )

        wait = ["--wait-healthy", f"{opts.health_timeout_s:g}", "--settle", f"{opts.settle_s:g}"]
        try:
            activated = read_answer(
                SwitchResult,
                remote.run_json(
                    dev.models("activate", version, "--who", opts.who, *wait, *token, policy=True),
                    opts.command_timeout_s + opts.health_timeout_s,
                ),
                host,
                "crackd models activate",
            )
        except SSHUnreachable:
            raise
        except RemoteError as exc:
            refusal = refusal_of(exc.payload)
            if not (refusal and refusal.kind == "NotHealthy"):
                result.outcome, result.message = REJECTED, f"activation refused: {_device_error(exc)}"
                return result
            return _roll_back(remote, dev, opts, result, token, _device_error(exc), progress)
        result.outcome, result.message = DEPLOYED, activated.health.message if activated.health else "serving"
        progress(host, f"OK: {result.message}")
        return result
    except DeviceBusyRemote as exc:
        result.outcome, result.message = BUSY, _device_error(exc)
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
        remote.close_shared_connection()
        result.seconds = time.monotonic() - t0


def _roll_back(
    remote: Remote,
    dev: DeviceSettings,
    opts: PushOptions,
    result: HostResult,
    token: list[str],
    why: str,
    progress: Progress,
) -> HostResult:
    progress(result.host, f"NOT HEALTHY: {why}; rolling back to {result.old_version}")
    result.outcome, result.message = ROLLED_BACK, f"{why}; rolled back"
    wait = ["--wait-healthy", f"{opts.health_timeout_s:g}", "--settle", f"{opts.settle_s:g}"]
    try:
        back = read_answer(
            SwitchResult,
            remote.run_json(
                dev.models("rollback", "--who", opts.who, "--reason", why, *wait, *token),
                opts.command_timeout_s + opts.health_timeout_s,
            ),
            result.host,
            "crackd models rollback",
        )
        result.message = f"{why}; rolled back to {back.version}, which serves again"
    except SSHUnreachable as exc:
        result.outcome, result.message = FAILED, f"{why}; ROLLBACK NOT CONFIRMED: {exc}"
    except RemoteError as exc:
        refusal = refusal_of(exc.payload)
        if refusal and refusal.kind == "NotHealthy" and refusal.switch:
            result.message = f"{why}; rolled back to {refusal.switch.version} (but: {_device_error(exc)})"
        else:
            result.outcome, result.message = FAILED, f"{why}; ROLLBACK FAILED: {_device_error(exc)}"
    progress(result.host, result.message)
    return result


def rollout(
    hosts: list[str],
    bundle: Path,
    manifest: Manifest,
    dev: DeviceSettings,
    opts: PushOptions,
    make_remote: Callable[[str], Remote],
    progress: Progress,
    canary: int = 0,
    parallel: int = 4,
) -> list[HostResult]:
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
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def summary_table(results: list[HostResult]) -> str:
    rows = [
        [
            r.host + (" (canary)" if r.canary else ""),
            r.old_version or "-",
            r.new_version or "-",
            r.outcome,
            f"{r.seconds:.1f}",
            r.message,
        ]
        for r in results
    ]
    return format_table(rows, ["HOST", "OLD", "NEW", "OUTCOME", "SECONDS", "MESSAGE"])


def make_progress(stream) -> Progress:
    lock = threading.Lock()

    def progress(host: str, message: str) -> None:
        with lock:
            stream.write(f"[{time.strftime('%H:%M:%S')}] {host}: {message}\n")
            stream.flush()

    return progress
