"""`crackd models ...`: installed model releases (list, stage, activate, rollback, status, history).

Each command works by hand on the device and is what `crack-deploy` runs over
SSH; `--json` prints one JSON object on stdout for the deploy tool. Errors are
one line on stderr (and `{"ok": false, ...}` with --json); exit 1 when the
bundle or operation was refused, 2 for usage or configuration errors.

The signature policy is the device's: `/etc/crackd/crackd.yaml` (or `--config`, owned by root or the user
running crackd and writable by nobody else), else the built-in default (signatures required). Command-line
flags may only make it stricter, so nobody allowed to run this command can switch signing off with them.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import select
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import cast

from edge import layout
from edge.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    UsageError,
    add_config_arg,
    add_json_arg,
    add_state_dir_arg,
    locate,
    print_json,
    refuse,
)
from edge.engine.bundle import BundleError
from edge.engine.runtime import RuntimeUnavailable
from edge.layout import DEFAULT_ALLOWED_SIGNERS, DEFAULT_CONFIG
from edge.releases.answers import (
    ConfirmAnswer,
    HistoryAnswer,
    LockAnswer,
    LockHolder,
    ModelsStatus,
    Refusal,
    ReleaseList,
    StageReport,
    SwitchResult,
)
from edge.releases.lock import DeviceLock, Interrupted
from edge.releases.manager import NotHealthy, ReleaseError, ReleasePolicy, Releases, default_who
from edge.releases.owner import become_state_owner
from edge.state_location import RULE
from edge.vocabulary import RUNTIME_CHOICES

log = logging.getLogger(__name__)


def register(sub) -> None:
    models = sub.add_parser(
        "models",
        help="manage installed model bundles (stage, activate, rollback, status)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    def add(name: str, help_text: str, func, lock=False) -> argparse.ArgumentParser:
        p = msub.add_parser(name, help=help_text, description=help_text)
        add_config_arg(
            p,
            help=f"daemon config to read state_dir and release policy from (default {DEFAULT_CONFIG} when it exists)",
            type=Path,
            metavar=None,
        )
        add_state_dir_arg(p, help=f"state directory (default: {RULE})", type=Path)
        add_json_arg(p, help="print one JSON object (for crack-deploy)")
        if lock:
            p.add_argument("--who", help="who is deploying, for the history (default: user@ssh-client)")
            p.add_argument(
                "--wait",
                type=float,
                default=0.0,
                metavar="S",
                help="wait up to S seconds for another operation to finish (default: fail at once)",
            )
            p.add_argument("--lock-token", help=argparse.SUPPRESS)
        p.set_defaults(func=lambda args: _run(func, args))
        return p

    p = add("list", "list installed releases", _cmd_list)
    p = add(
        "status", "current release, daemon status and whether the current release is serving and healthy", _cmd_status
    )
    p = add("history", "recent deployments (deployments.jsonl)", _cmd_history)
    p.add_argument("-n", type=int, default=20, help="how many records (default 20)")

    p = add(
        "stage",
        "copy a bundle in and check it fully (checksums, signature, models load, golden samples, latency)",
        _cmd_stage,
        lock=True,
    )
    p.add_argument("bundle", type=Path, metavar="DIR", help="bundle directory (e.g. uploaded by crack-deploy)")
    p.add_argument("--source", help="where the bundle came from, for the history")
    _policy_flags(p)

    p = add(
        "activate",
        "serve a staged release: atomic switch of models/current, then SIGHUP the daemon",
        _cmd_activate,
        lock=True,
    )
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--reason", help="why, for the history")
    _wait_flags(p)
    _policy_flags(p)

    p = add("rollback", "serve the previous release again", _cmd_rollback, lock=True)
    p.add_argument("--reason", help="why, for the history")
    _wait_flags(p)

    p = add(
        "confirm",
        "record that VERSION is serving and healthy (crack-deploy does this after its health check)",
        _cmd_confirm,
        lock=True,
    )
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--message", help="details for the history")

    p = add(
        "lock",
        "hold the device lock until stdin closes (crack-deploy holds it for a whole deployment)",
        _cmd_lock,
        lock=True,
    )
    p.add_argument(
        "--max-hold",
        type=float,
        default=3600.0,
        metavar="S",
        help="release after S seconds even if stdin stays open (default 3600)",
    )


def _wait_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait-healthy",
        type=float,
        metavar="S",
        help="then wait up to S seconds for the daemon to serve it healthily (exit 1 if it does not; the switch stays)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=3.0,
        metavar="S",
        help="with --wait-healthy: frames must keep flowing this long (default 3)",
    )


def _policy_flags(p: argparse.ArgumentParser) -> None:
    # The device's config decides the signature policy; these flags may only make it stricter.
    p.add_argument(
        "--require-signature",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="refuse unsigned bundles (default: the config's releases.require_signature, else on); "
        "--no-require-signature is refused where the config requires signatures",
    )
    p.add_argument(
        "--allowed-signers",
        type=Path,
        help=f"a signature must ALSO verify against this allowed_signers file (where the config does not require "
        f"signatures: instead of its file; default {DEFAULT_ALLOWED_SIGNERS})",
    )
    p.add_argument(
        "--runtime", choices=RUNTIME_CHOICES, help="TFLite runtime for the check (default: the config's, else auto)"
    )
    p.add_argument("--threads", type=int, help="interpreter threads")
    p.add_argument("--keep", type=int, help="releases kept besides the current one (default 3)")
    p.add_argument(
        "--max-latency-ms",
        type=float,
        help="refuse a bundle slower than this per frame on this device (default: report only)",
    )


def _trusted_policy_file(path: Path) -> None:
    """The release policy is read only from a config nobody but root (or the user running crackd) can change.

    Otherwise anyone allowed to run `crackd models` (for instance through a sudo rule) could point --config at a
    file of their own that switches signatures off.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read config ({exc.strerror})") from None
    if st.st_uid not in (0, os.geteuid()):
        raise UsageError(
            f"{path}: owned by uid {st.st_uid}; the release policy is read only from a config owned by root "
            "(or by the user running crackd)"
        )
    if st.st_mode & 0o022:
        raise UsageError(
            f"{path}: writable by others (mode {st.st_mode & 0o777:o}); the release policy is read only from a "
            "config nobody else can change"
        )


def _load_config(args):
    path = args.config
    if path is None and layout.DEFAULT_CONFIG.is_file():
        path = layout.DEFAULT_CONFIG  # the installed device's policy applies
    if path is None:
        return None, None
    try:
        from edge.config import ConfigError, load_config
    except ImportError:
        raise UsageError(
            "--config needs edge.config, which this crackd does not have; pass --state-dir instead"
        ) from None
    _trusted_policy_file(Path(path))
    try:
        return load_config(path), Path(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _at_least_the_devices(policy: ReleasePolicy, device_config: Path) -> ReleasePolicy:
    """A --config beside the installed device's own config can only add to that config's signature policy."""
    from edge.config import ConfigError, load_config

    _trusted_policy_file(device_config)
    try:
        floor = load_config(device_config).releases
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    latency = [v for v in (policy.max_latency_ms, floor.max_latency_ms) if v is not None]
    policy = replace(policy, max_latency_ms=min(latency) if latency else None)
    if not floor.require_signature:
        return policy
    extra = (
        (policy.allowed_signers,)
        if policy.require_signature and Path(policy.allowed_signers) != Path(floor.allowed_signers)
        else ()
    )
    return replace(
        policy,
        require_signature=True,
        allowed_signers=Path(floor.allowed_signers),
        extra_allowed_signers=(*extra, *policy.extra_allowed_signers),
    )


def _resolve(args) -> Releases:
    """State dir and release policy. The config (else the built-in defaults: signatures required) decides the policy;
    command-line flags may only make it stricter. Runtime, threads and keep are plain settings that flags override."""
    cfg, cfg_path = _load_config(args)
    policy = ReleasePolicy()
    state_dir = locate(args).state_dir
    decided_by = (
        f"{cfg_path} (releases.require_signature)" if cfg_path else f"the default policy (no {layout.DEFAULT_CONFIG})"
    )
    if cfg is not None:
        r = cfg.releases
        policy = replace(
            policy,
            runtime=cfg.model.runtime,
            threads=cfg.model.threads,
            require_signature=r.require_signature,
            allowed_signers=Path(r.allowed_signers),
            keep=r.keep,
            max_latency_ms=r.max_latency_ms,
        )
    device = layout.DEFAULT_CONFIG
    if cfg_path is not None and device.is_file() and cfg_path.resolve() != device.resolve():
        policy, decided_by = _at_least_the_devices(policy, device), f"{device} (releases.require_signature)"
    require = getattr(args, "require_signature", None)
    if require is False and policy.require_signature:
        raise UsageError(
            f"--no-require-signature: {decided_by} requires signed "
            "bundles; command-line options may only make it stricter"
        )
    signers = getattr(args, "allowed_signers", None)
    if signers is not None:
        if policy.require_signature:  # the configured signers stay in force: the extra file narrows, never widens
            policy = replace(policy, extra_allowed_signers=(*policy.extra_allowed_signers, signers))
        else:
            policy = replace(policy, allowed_signers=signers)
    if require:
        policy = replace(policy, require_signature=True)
    latency = getattr(args, "max_latency_ms", None)
    if latency is not None:
        policy = replace(
            policy, max_latency_ms=latency if policy.max_latency_ms is None else min(latency, policy.max_latency_ms)
        )
    flags = {
        "runtime": getattr(args, "runtime", None),
        "threads": getattr(args, "threads", None),
        "keep": getattr(args, "keep", None),
    }
    policy = replace(policy, **{k: v for k, v in flags.items() if v is not None})
    if policy.keep < 1:
        raise UsageError(
            f"--keep: expected at least 1 (the previous release is needed for rollback), got {policy.keep}"
        )
    if not Path(state_dir).is_dir():
        raise UsageError(
            f"{state_dir}: state directory does not exist (is crackd installed? pass --state-dir or --config)"
        )
    become_state_owner(Path(state_dir))  # never root inside the service's state directory (edge.releases.owner)
    return Releases(state_dir, policy)


def _run(func, args) -> int:
    try:
        payload = func(_resolve(args), args)
    except UsageError as exc:
        return _refuse(args, exc, EXIT_USAGE)
    except (BundleError, ReleaseError, RuntimeUnavailable, OSError) as exc:
        return _refuse(args, exc, EXIT_FAILED)
    if payload is not None and args.json:
        print_json({"ok": True, **payload.to_json()}, flush=True)
    return 0


def _refuse(args, exc: Exception, code: int) -> int:
    """One line on stderr; with --json also {"ok": false, "error", "kind", ...} on stdout for crack-deploy."""
    message = str(exc) if not isinstance(exc, OSError) or not exc.filename else f"{exc.filename}: {exc.strerror}"
    answer = Refusal(message, type(exc).__name__, exc.result if isinstance(exc, NotHealthy) else None).to_json()
    return refuse(
        message,
        code,
        f"crackd models {args.models_command}",
        as_json=getattr(args, "json", False),
        kind=answer["kind"],
        extra={k: v for k, v in answer.items() if k not in ("error", "kind")},
    )


def _who(args) -> str:
    return getattr(args, "who", None) or default_who()


# ---------------------------------------------------------------------- commands


def _cmd_list(rel: Releases, args) -> ReleaseList | None:
    releases = rel.installed()
    if args.json:
        return ReleaseList(releases)
    if not releases:
        print(f"no releases installed in {rel.layout.releases}")
    for r in releases:
        mark = "*" if r.current else ("<" if r.previous else " ")
        print(
            f"{mark} {r.version:<24} installed {r.installed_at}  "
            f"{'signed' if r.signed else 'unsigned'}  {r.error or ''}".rstrip()
        )
    return None


def _cmd_status(rel: Releases, args) -> ModelsStatus | None:
    st = rel.status()
    if args.json:
        return st
    reading = st.daemon
    print(
        f"current:  {st.current or 'none'}   previous: "
        f"{st.previous or 'none'}   installed: {', '.join(st.releases) or 'none'}"
    )
    if reading is None:
        print("daemon:   no status.json (not running?)")
    elif reading.status.state == "stopped":  # its last write: a clean stop, as `crackd status` reports it
        d = reading.status
        print(f"daemon:   stopped cleanly at {d.updated_at} (pid {d.pid}), was serving {d.bundle_version}")
    else:
        d = reading.status
        print(
            f"daemon:   pid {d.pid} {'running' if reading.pid_alive else 'NOT running'}, "
            f"serving {d.bundle_version}, {'healthy' if d.healthy else 'UNHEALTHY'}, "
            f"{d.fps:.1f} fps, camera {d.camera_state}, status {reading.age_s} s old"
        )
        reload = d.last_reload
        if reload:
            print(f"reload:   {reload.time} {'ok' if reload.ok else 'FAILED: ' + str(reload.error)}")
    print(f"serving current release: {'yes' if st.serving_current else 'NO'}")
    origin = st.origin or {}
    if "base" in origin:
        base = origin["base"]
        print(f"base:     {base.get('bundle_version')} (manifest sha256 {str(base.get('manifest_sha256'))[:12]})")
    if "site" in origin:
        site = origin["site"]
        print(
            f"site:     {site.get('name')}, adapted on {site.get('images')} labelled images "
            f"(sha256 {str(site.get('sha256'))[:12]}), pixel threshold {site.get('threshold')}"
        )
    if st.busy:
        print(f"busy:     {st.busy.action} by {st.busy.who} since {st.busy.since}")
    if st.interrupted:
        print(f"interrupted: {st.interrupted} was stopped half-way; the next crackd models command undoes it")
    if st.last:
        last = st.last
        print(f"last:     {last.time} {last.action} {last.version} {last.outcome} by {last.who}")
    return None


def _cmd_history(rel: Releases, args) -> HistoryAnswer | None:
    if args.n < 1:
        raise UsageError(f"-n: expected at least 1 record, got {args.n}")
    records = rel.history(limit=args.n)
    if args.json:
        return HistoryAnswer(records)
    if not records:
        print(f"no deployments recorded in {rel.layout.history}")
    for r in records:
        extra = r.error or r.reason or r.message or ""
        frm = f" (from {r.from_version})" if r.from_version else ""
        print(f"{r.time}  {r.action:<8} {r.version}{frm}  {r.outcome}  by {r.who}  {extra}".rstrip())
    return None


def _interrupt(signum, frame) -> None:
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}; the partial staging copy was removed")


def _cmd_stage(rel: Releases, args) -> StageReport | None:
    for sig in (signal.SIGTERM, signal.SIGHUP):  # clean up the staging copy, record the refusal, one line
        signal.signal(sig, _interrupt)
    report = rel.stage(args.bundle, who=_who(args), origin=args.source, wait_s=args.wait, token=args.lock_token)
    if args.json:
        return report
    if report.already_staged or report.latency_ms is None:
        print(f"release {report.version} is already staged (same content)")
    else:
        print(
            f"staged release {report.version}: checksums ok, {report.trust}, "
            f"golden samples {len(report.golden.get('samples', []))} ok, "
            f"{report.latency_ms.total_ms_p50 or 0:.1f} ms per frame ({report.runtime})"
        )
        print(f"activate it with: crackd models activate {report.version}")
    return None


def _switch_output(result: SwitchResult, args) -> SwitchResult | None:
    if args.json:
        return result
    verb = "activated" if result.action == "activate" else "rolled back to"
    print(f"{verb} {result.version} (was {result.from_version or 'none'}); {result.daemon.message}")
    if result.health:
        print(result.health.message)
    if result.removed:
        print(f"removed old releases: {', '.join(result.removed)}")
    return None


def _check_health_wait(args) -> None:
    if args.wait_healthy is not None and (args.wait_healthy <= 0 or not 0 <= args.settle < args.wait_healthy):
        raise UsageError(
            f"--wait-healthy {args.wait_healthy:g} --settle {args.settle:g}: "
            "expected --settle from 0 to less than --wait-healthy"
        )


def _switch_options(args) -> dict:
    """What activate and rollback both take from their command line."""
    _check_health_wait(args)
    return {
        "who": _who(args),
        "wait_s": args.wait,
        "token": args.lock_token,
        "reason": args.reason,
        "wait_healthy_s": args.wait_healthy,
        "settle_s": args.settle,
    }


def _cmd_activate(rel: Releases, args) -> SwitchResult | None:
    return _switch_output(rel.activate(args.version, **_switch_options(args)), args)


def _cmd_rollback(rel: Releases, args) -> SwitchResult | None:
    return _switch_output(rel.rollback(**_switch_options(args)), args)


def _cmd_confirm(rel: Releases, args) -> ConfirmAnswer | None:
    entry = rel.confirm(args.version, who=_who(args), token=args.lock_token, message=args.message)
    if args.json:
        return ConfirmAnswer(entry)
    print(f"recorded: {args.version} healthy")
    return None


def _cmd_lock(rel: Releases, args) -> None:
    """Hold the lock while stdin is open; prints the token commands inside the deployment pass with --lock-token."""
    lock = DeviceLock(rel.layout, _who(args), "deploy")
    lock.acquire(args.wait)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    try:
        if args.json:
            holder = LockHolder.from_json(lock.holder() or {})
            print_json({"ok": True, **LockAnswer(True, lock.token, holder, rel.status()).to_json()}, flush=True)
        else:
            print(f"locked {rel.layout.models} (token {lock.token}); close stdin to release", flush=True)
        deadline = time.monotonic() + args.max_hold
        while not stop and time.monotonic() < deadline:
            ready, _, _ = select.select([sys.stdin], [], [], 0.5)
            if ready and not cast(io.BufferedReader, sys.stdin.buffer).read1(4096):  # read1: what is there, no waiting
                break
        if not stop and time.monotonic() >= deadline:
            log.warning("releasing the device lock after --max-hold %.0f s", args.max_hold)
    finally:
        lock.release()
    return None
