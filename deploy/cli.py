"""`crack-deploy`: install crackd on Raspberry Pis and roll model bundles out to them over SSH.

    crack-deploy install pi@cam-01                       # once per device (runs deploy/install.sh there)
    crack-deploy sign models/2024-06-01 --key ~/.ssh/id_ed25519
    crack-deploy push models/2024-06-01 cam-01 cam-02 cam-03 --canary 1
    crack-deploy status cam-01 cam-02
    crack-deploy rollback cam-02
    crack-deploy pull sites/line-3 cam-01 cam-02          # labelled events' frames + predicted masks, to label

Hosts are anything ssh accepts (aliases from ~/.ssh/config, user@host,
ssh://user@host:port). Exit code 0 only when every host succeeded.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import logging
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deploy.pull import PullResult, pull
from deploy.push import (
    FAILED,
    INSTALLED,
    RESTORED,
    UNREACHABLE,
    DeviceSettings,
    HostResult,
    LocalBundleInvalid,
    PushOptions,
    check_local_bundle,
    format_table,
    is_signed,
    make_progress,
    read_answer,
    read_hosts_file,
    refusal_of,
    rollout,
    summary_table,
)
from deploy.ssh import Remote, RemoteError, SSHOptions, SSHUnreachable
from edge.cli.common import EXIT_FAILED, EXIT_USAGE, UsageError, add_json_arg, fail, print_json, refuse
from edge.releases.answers import ModelsStatus, SwitchResult
from edge.releases.daemon_watch import describe_daemon

log = logging.getLogger("crack-deploy")

REPO_ROOT = Path(__file__).resolve().parent.parent
# What `install` copies to the device (the package source, the default bundle, config example, unit, installer).
INSTALL_PAYLOAD = ("pyproject.toml", "setup.py", "README.md", "edge", "deploy", "systemd", "config", "models/default")


def _common(p: argparse.ArgumentParser, hosts: bool = True) -> None:
    if hosts:
        p.add_argument(
            "hosts", nargs="*", metavar="HOST", help="devices: ssh aliases, user@host or ssh://user@host:port"
        )
        p.add_argument("--hosts-file", type=Path, help="more hosts, one per line (# comments allowed)")
        p.add_argument("--parallel", type=int, default=4, metavar="N", help="devices handled at once (default 4)")
    p.add_argument(
        "-F", "--ssh-config", type=Path, help="ssh config file (default: ~/.ssh/config as ssh itself reads it)"
    )
    p.add_argument(
        "-o",
        "--ssh-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra ssh option, repeatable (e.g. -o Port=2222)",
    )
    p.add_argument("--connect-timeout", type=int, default=10, metavar="S", help="ssh connect timeout (default 10)")
    p.add_argument(
        "--no-multiplex",
        action="store_true",
        help="one SSH connection per command instead of one shared connection per device",
    )
    p.add_argument(
        "--remote-crackd",
        default="/opt/crackd/venv/bin/crackd",
        metavar="CMD",
        help=(
            "crackd command on the device, used verbatim as a shell prefix (e.g. 'sudo -n /opt/crackd/venv/bin/crackd')"
        ),
    )
    p.add_argument(
        "--remote-state-dir",
        metavar="DIR",
        help="state directory on the device (default: the device's config, else /var/lib/crackd)",
    )
    p.add_argument(
        "--remote-config",
        metavar="FILE",
        help=(
            "daemon config on the device, for its state_dir and release policy (default /etc/crackd/crackd.yaml there)"
        ),
    )
    add_json_arg(p, help="print the summary as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (ssh command lines)")


class _Parser(argparse.ArgumentParser):
    """With --json anywhere on the command line, a usage error is a JSON answer too (and the usual line on stderr)."""

    def error(self, message: str):
        if "--json" in _ARGV:
            print_json({"ok": False, "error": message, "kind": "UsageError", "hosts": []}, indent=1)
            self.exit(2, f"{self.prog}: error: {message}\n")
        super().error(message)


_ARGV: list[str] = []


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crack-deploy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("push", help="deploy a bundle: verify, copy, stage, activate, confirm health or roll back")
    p.add_argument(
        "bundle", type=Path, metavar="BUNDLE", help="bundle directory (manifest.json, models, golden samples)"
    )
    _common(p)
    p.add_argument(
        "--canary",
        type=int,
        default=0,
        metavar="N",
        help="deploy to the first N hosts first; stop if any of them fails",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds for the daemon to serve the new bundle healthily (default 60)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=3.0,
        metavar="S",
        help="it must stay healthy, frames counting up, this long (default 3)",
    )
    p.add_argument(
        "--stage-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="seconds allowed for the device-side checks (default 600)",
    )
    p.add_argument(
        "--lock-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for another deployment on a device (default: fail at once)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help=(
            "deploy even to a device that is not serving healthily "
            "before the deploy (the health check after it still applies)"
        ),
    )
    p.add_argument(
        "--device-option",
        action="append",
        default=[],
        metavar="FLAG",
        help=(
            "extra flag for the device's `crackd models stage/activate`, "
            "repeatable (e.g. --device-option=--max-latency-ms=80)"
        ),
    )
    p.add_argument("--remote-tmp", default="/tmp", metavar="DIR", help="upload directory on the device (default /tmp)")
    p.add_argument("--who", help="name for the device history (default user@this-host)")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("status", help="what each device serves, and whether it is healthy")
    _common(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("rollback", help="serve the previous release again, and wait until it is healthy")
    _common(p)
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds for the previous release to serve healthily (default 60)",
    )
    p.add_argument(
        "--settle", type=float, default=3.0, metavar="S", help="it must keep processing frames this long (default 3)"
    )
    p.add_argument(
        "--lock-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for a deployment in progress (default: fail at once)",
    )
    p.add_argument("--reason", default="manual rollback (crack-deploy)", help="why, for the device history")
    p.add_argument("--who", help="name for the device history")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser(
        "install",
        help="install or upgrade crackd on devices (copies this source tree and runs deploy/install.sh as root)",
    )
    _common(p)
    p.add_argument(
        "--sudo",
        default="sudo -n",
        metavar="CMD",
        help="how to become root on the device (default 'sudo -n'; '' when logging in as root)",
    )
    p.add_argument(
        "--install-option",
        action="append",
        default=[],
        metavar="FLAG",
        help="extra flag for install.sh, repeatable (e.g. --install-option=--purge)",
    )
    p.add_argument("--source", type=Path, default=REPO_ROOT, help="crackd source tree to install (default: this one)")
    p.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        metavar="S",
        help="seconds allowed for the install (pip on a Pi is slow; default 1800)",
    )
    p.set_defaults(func=cmd_install)

    p = sub.add_parser(
        "pull",
        help="fetch labelled events' frames and predicted masks from devices into a site dataset folder",
        description=(
            "Fetch the events operators labelled (`crackd events label`) from each device: the event's frame into "
            "SITE/images/, the device's predicted mask into SITE/predicted/ (the pre-annotation `crack-train label "
            "export` starts from), and an all-zero mask into SITE/masks/ for a no-crack verdict (a false alarm is a "
            "crack-free example). Files are named HOST-UUID; SITE/pulled.jsonl records where each came from "
            "(host, uuid, verdict, times, sha256). Incremental: a second pull fetches only events the site lacks. "
            "Exit code 0 only when every host was pulled."
        ),
    )
    p.add_argument("site", type=Path, metavar="SITE", help="site dataset folder (created if missing)")
    _common(p)
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("sign", help="sign a bundle's manifest with an OpenSSH ed25519 key (ssh-keygen -Y sign)")
    p.add_argument("bundle", type=Path, metavar="BUNDLE")
    p.add_argument(
        "--key", type=Path, required=True, help="private key, or public key whose private half is in ssh-agent"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_sign)
    return parser


def main(argv: list[str] | None = None) -> int:
    _ARGV[:] = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        return _refuse(args, exc, EXIT_USAGE)
    except KeyboardInterrupt:
        return _refuse(args, "interrupted", 130, kind="Interrupted")


def _refuse(args, error, code: int, kind: str | None = None) -> int:
    """Stop before any device was touched: one line on stderr, and with --json the same as a JSON answer on stdout."""
    return refuse(
        str(error),
        code,
        f"crack-deploy {args.command}",
        as_json=getattr(args, "json", False),
        kind=kind or type(error).__name__,
        extra={"hosts": []},
        indent=1,
    )


def _check_wait_options(args) -> None:
    """--timeout/--settle/--lock-wait that can never succeed are refused before anything is connected."""
    if args.timeout <= 0:
        raise UsageError(f"--timeout: expected more than 0 seconds, got {args.timeout:g}")
    if args.settle < 0:
        raise UsageError(f"--settle: expected 0 seconds or more, got {args.settle:g}")
    if args.settle >= args.timeout:
        raise UsageError(
            f"--settle {args.settle:g} must be shorter than --timeout {args.timeout:g} (the release must serve "
            "healthily, frames counting up, for --settle seconds within --timeout)"
        )
    if getattr(args, "lock_wait", 0) < 0:
        raise UsageError(f"--lock-wait: expected 0 seconds or more, got {args.lock_wait:g}")
    if getattr(args, "stage_timeout", 1) <= 0:
        raise UsageError(f"--stage-timeout: expected more than 0 seconds, got {args.stage_timeout:g}")


# ---------------------------------------------------------------------- helpers


def _hosts(args) -> list[str]:
    hosts = list(args.hosts)
    if args.hosts_file:
        try:
            hosts += read_hosts_file(args.hosts_file)
        except OSError as exc:
            raise UsageError(f"{args.hosts_file}: cannot read hosts file ({exc.strerror})") from None
    hosts = list(dict.fromkeys(hosts))  # duplicates dropped, order kept
    if not hosts:
        raise UsageError("no hosts given (HOST arguments or --hosts-file)")
    if args.parallel < 1:
        raise UsageError(f"--parallel: expected at least 1, got {args.parallel}")
    return hosts


def _ssh(args) -> SSHOptions:
    if args.ssh_config is not None and not args.ssh_config.is_file():
        raise UsageError(f"{args.ssh_config}: ssh config file not found")
    return SSHOptions(
        config_file=args.ssh_config, options=tuple(args.ssh_option), connect_timeout_s=args.connect_timeout
    )


class RemoteFactory:
    """Makes one Remote per host, each with its own shared-connection socket directory (removed at the end)."""

    def __init__(self, ssh: SSHOptions, multiplex: bool):
        self.ssh = ssh
        self._dir = Path(tempfile.mkdtemp(prefix="crackd-ssh-")) if multiplex else None
        self._count = 0
        self._lock = threading.Lock()

    def __call__(self, host: str) -> Remote:
        if self._dir is None:
            return Remote(host, self.ssh)
        with self._lock:
            self._count += 1
            control = self._dir / f"h{self._count}"
        control.mkdir(mode=0o700)
        return Remote(host, dataclasses.replace(self.ssh, control_dir=control))

    def __enter__(self) -> RemoteFactory:
        return self

    def __exit__(self, *exc) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def _device(args) -> DeviceSettings:
    return DeviceSettings(
        crackd=args.remote_crackd,
        state_dir=args.remote_state_dir,
        config=args.remote_config,
        device_options=tuple(getattr(args, "device_option", ()) or ()),
        tmp_dir=getattr(args, "remote_tmp", "/tmp"),
    )


def _who(args) -> str:
    return getattr(args, "who", None) or f"{getpass.getuser()}@{socket.gethostname()}"


def _finish(results: Sequence[HostResult | PullResult], args, table: str) -> int:
    if args.json:
        print_json({"ok": all(r.ok for r in results), "hosts": [r.as_dict() for r in results]}, indent=1)
    else:
        print(table)
        ok = sum(r.ok for r in results)
        print(f"\n{ok}/{len(results)} host(s) succeeded")
    return 0 if all(r.ok for r in results) else 1


# ---------------------------------------------------------------------- commands


def cmd_push(args) -> int:
    _check_wait_options(args)
    hosts = _hosts(args)
    if args.canary < 0:
        raise UsageError(f"--canary: expected 0 or more, got {args.canary}")
    progress = make_progress(sys.stderr)
    try:
        manifest = check_local_bundle(args.bundle)
    except LocalBundleInvalid as exc:
        return _refuse(args, exc, EXIT_FAILED)
    signed = is_signed(args.bundle)
    progress(
        "*",
        f"bundle {manifest.bundle_version} from {args.bundle}: manifest and checksums ok, "
        f"{'signed' if signed else 'UNSIGNED (devices that require signatures will refuse it)'}",
    )
    opts = PushOptions(
        who=_who(args),
        source=f"{socket.gethostname()}:{args.bundle.resolve()}",
        health_timeout_s=args.timeout,
        settle_s=args.settle,
        force=args.force,
        stage_timeout_s=args.stage_timeout,
        lock_wait_s=args.lock_wait,
        command_timeout_s=max(30.0, args.connect_timeout + 30.0),
    )
    with RemoteFactory(_ssh(args), not args.no_multiplex) as remotes:
        results = rollout(
            hosts,
            args.bundle,
            manifest,
            _device(args),
            opts,
            remotes,
            progress,
            canary=args.canary,
            parallel=args.parallel,
        )
    return _finish(results, args, summary_table(results))


def _status_one(host: str, ssh: SSHOptions, dev: DeviceSettings) -> tuple[str, ModelsStatus | None, str]:
    try:
        answer = Remote(host, ssh).run_json(dev.models("status"), 60)
        return host, read_answer(ModelsStatus, answer, host, "crackd models status"), ""
    except RemoteError as exc:
        return host, None, str(exc)


def cmd_status(args) -> int:
    hosts = _hosts(args)
    ssh, dev = _ssh(args), _device(args)
    with ThreadPoolExecutor(max_workers=min(args.parallel, len(hosts))) as pool:
        answers = list(pool.map(lambda h: _status_one(h, ssh, dev), hosts))
    rows, payload, all_ok = [], [], True
    for host, st, err in answers:
        if st is None:
            all_ok = False
            rows.append([host, "-", "-", "-", "-", "unreachable", err])
            payload.append({"host": host, "ok": False, "error": err})
            continue
        d = st.daemon.status if st.daemon else None
        ok = st.serving_current
        all_ok &= ok
        last = st.last
        last_txt = f"{last.time} {last.action} {last.version} {last.outcome}" if last else ""
        state = "healthy" if ok else describe_daemon(st.daemon, st.current or "")
        rows.append(
            [
                host,
                st.current or "-",
                st.previous or "-",
                (d and d.bundle_version) or "-",
                f"{d.fps if d else 0:.1f}",
                state,
                last_txt,
            ]
        )
        payload.append({"host": host, "ok": ok, "status": st.to_json()})
    if args.json:
        print_json({"ok": all_ok, "hosts": payload}, indent=1, default=str)
    else:
        print(format_table(rows, ["HOST", "CURRENT", "PREVIOUS", "SERVING", "FPS", "STATE", "LAST DEPLOYMENT"]))
    return 0 if all_ok else 1


def _rollback_one(host: str, ssh: SSHOptions, dev: DeviceSettings, args, progress) -> HostResult:
    t0 = time.monotonic()
    remote = Remote(host, ssh)
    result = HostResult(host, FAILED)
    try:
        progress(host, f"rolling back, waiting up to {args.timeout:g} s for the previous release to serve healthily")
        answer = remote.run_json(
            dev.models(
                "rollback",
                "--who",
                _who(args),
                "--reason",
                args.reason,
                "--wait",
                f"{args.lock_wait:g}",
                "--wait-healthy",
                f"{args.timeout:g}",
                "--settle",
                f"{args.settle:g}",
            ),
            60 + args.timeout + args.lock_wait,
        )
        back = read_answer(SwitchResult, answer, host, "crackd models rollback")
        result.old_version, result.new_version = back.from_version, back.version
        health = back.health.message if back.health else "serving"
        result.outcome, result.message = RESTORED, f"previous release {back.version} serving again: {health}"
    except SSHUnreachable as exc:
        result.outcome, result.message = UNREACHABLE, str(exc)
    except RemoteError as exc:
        refusal = refusal_of(exc.payload)
        switch = refusal.switch if refusal else None
        if switch:
            result.old_version, result.new_version = switch.from_version, switch.version
        result.message = (refusal.error if refusal else str(exc)) + (" (the switch was made)" if switch else "")
    result.seconds = time.monotonic() - t0
    return result


def cmd_rollback(args) -> int:
    _check_wait_options(args)
    hosts = _hosts(args)
    ssh, dev, progress = _ssh(args), _device(args), make_progress(sys.stderr)
    with ThreadPoolExecutor(max_workers=min(args.parallel, len(hosts))) as pool:
        results = list(pool.map(lambda h: _rollback_one(h, ssh, dev, args, progress), hosts))
    rows = [
        [r.host, r.old_version or "-", r.new_version or "-", r.outcome, f"{r.seconds:.1f}", r.message] for r in results
    ]
    return _finish(results, args, format_table(rows, ["HOST", "FROM", "TO", "OUTCOME", "SECONDS", "MESSAGE"]))


def cmd_pull(args) -> int:
    hosts = _hosts(args)
    if args.site.exists() and not args.site.is_dir():
        raise UsageError(f"{args.site}: not a folder (the site dataset folder to pull into)")
    progress = make_progress(sys.stderr)
    with RemoteFactory(_ssh(args), not args.no_multiplex) as remotes:
        results = pull(hosts, args.site, _device(args), remotes, progress, parallel=args.parallel)
    rows = [[r.host, r.outcome, str(r.new), str(r.known), f"{r.seconds:.1f}", r.message] for r in results]
    for r in results:
        if not r.ok:  # one line per failed host, after the progress lines, whatever the output format
            print(f"crack-deploy pull: {r.message}", file=sys.stderr)
    return _finish(results, args, format_table(rows, ["HOST", "OUTCOME", "NEW", "KNOWN", "SECONDS", "MESSAGE"]))


def cmd_install(args) -> int:
    hosts = _hosts(args)
    ssh, progress = _ssh(args), make_progress(sys.stderr)
    source = args.source.resolve()
    missing = [p for p in INSTALL_PAYLOAD if not (source / p).exists() and p != "README.md"]
    if missing:
        raise UsageError(f"{source}: not a crackd source tree (missing {', '.join(missing)})")
    results = []
    with tempfile.TemporaryDirectory(prefix="crackd-install-") as tmp:
        payload = Path(tmp) / "crackd"
        for rel in INSTALL_PAYLOAD:
            src = source / rel
            if src.is_dir():
                shutil.copytree(src, payload / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "reference"))
            elif src.is_file():
                (payload / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, payload / rel)
        for host in hosts:  # one at a time: the installer's output streams to this terminal
            t0 = time.monotonic()
            result = HostResult(host, FAILED)
            remote = Remote(host, ssh)
            try:
                upload = remote.run("mktemp -d /tmp/crackd-install.XXXXXX", 60).stdout.strip()
                progress(host, f"copying crackd source to {upload}")
                remote.upload_dir(payload, upload, args.timeout)
                installer = shlex.quote(upload + "/deploy/install.sh")
                options = shlex.join(args.install_option)
                cmd = f"{args.sudo} bash {installer} --source {shlex.quote(upload)} {options}".strip()
                progress(host, f"running: {cmd}")
                rc = subprocess.run(remote.command(cmd), timeout=args.timeout).returncode
                remote.run(f"{args.sudo} rm -rf -- {shlex.quote(upload)}".strip(), 60, check=False)
                result.outcome, result.message = (
                    (INSTALLED, "install.sh finished") if rc == 0 else (FAILED, f"install.sh exited {rc}")
                )
            except SSHUnreachable as exc:
                result.outcome, result.message = UNREACHABLE, str(exc)
            except (RemoteError, subprocess.TimeoutExpired) as exc:
                result.message = str(exc)
            result.seconds = time.monotonic() - t0
            results.append(result)
    rows = [[r.host, r.outcome, f"{r.seconds:.1f}", r.message] for r in results]
    return _finish(results, args, format_table(rows, ["HOST", "OUTCOME", "SECONDS", "MESSAGE"]))


def cmd_sign(args) -> int:
    from edge.releases.signing import SignatureError, sign_bundle

    try:
        check_local_bundle(args.bundle)
        path = sign_bundle(args.bundle, args.key)
    except (LocalBundleInvalid, SignatureError) as exc:
        return fail(str(exc), EXIT_FAILED, "crack-deploy sign")
    print(f"signed {args.bundle} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
