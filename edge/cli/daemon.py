"""`crackd run | check-config | status`: the daemon from the command line (its records: edge.cli.events).

Exit codes: 0 ok; 1 the daemon was not found / not healthy; 2 bad usage or
configuration (one line on stderr, no traceback); 3 (`status`) the daemon stopped
cleanly (SIGTERM, or a finite source ended) and is not running, as LSB's
"program is not running".
"""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path

from edge.cli.common import (
    UsageError,
    add_config_arg,
    add_json_arg,
    add_location_args,
    add_state_dir_arg,
    fail,
    locate,
    print_json,
)
from edge.cli.demo import add_demo_args, demo_config, demo_mqtt_port
from edge.config import ConfigError, load_config
from edge.layout import DEMO_STATE_DIR, SHIPPED_BUNDLE, StateLayout
from edge.releases.daemon_watch import STATUS_FRESH_S, read_daemon_status

log = logging.getLogger(__name__)

DEFAULT_DEMO_STATE = DEMO_STATE_DIR
EXIT_STOPPED = 3  # `crackd status`: stopped cleanly, not running


# --------------------------------------------------------------------------- run


def _broker_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def cmd_run(args) -> int:
    from edge.daemon.notify import setup_logging
    from edge.daemon.supervisor import StartupError, Supervisor

    if args.demo and args.config:
        return fail("run: give either --config FILE or --demo")
    try:
        mqtt_port = demo_mqtt_port(args)
    except ValueError as exc:
        return fail(f"run: {exc}")
    try:
        if args.demo:
            cfg = demo_config(args.state_dir or DEFAULT_DEMO_STATE, mqtt_port)
        elif args.config:
            cfg = load_config(args.config)
        else:
            return fail("run: --config FILE or --demo is required")
        if args.state_dir and not args.demo:
            import dataclasses

            cfg = dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage, state_dir=args.state_dir))
        if cfg.mqtt.enabled:
            cfg.mqtt_password()  # a missing secret is a config error, found now rather than at the first connect
        if cfg.metrics.http:
            cfg.metrics_password()
    except ConfigError as exc:
        return fail(str(exc))
    setup_logging("debug" if args.verbose else cfg.logging.level, cfg.logging.journald)
    if args.demo:
        log.info(
            "demo: synthetic camera, bundle %s, state in %s", SHIPPED_BUNDLE, Path(cfg.storage.state_dir).resolve()
        )
        if not _broker_answers(cfg.mqtt.host, cfg.mqtt.port):
            log.warning(
                "demo: no MQTT broker answers at %s:%d; events wait in the outbox until one does "
                "(scripts/demo.sh starts a private mosquitto when none answers)",
                cfg.mqtt.host,
                cfg.mqtt.port,
            )
    state_dir = Path(cfg.storage.state_dir)
    created = not state_dir.exists()
    sup = Supervisor(cfg, None if args.demo else args.config)
    sup.install_signal_handlers()
    try:
        sup.start()
    except StartupError as exc:
        return fail(str(exc))
    if created:  # never silently: as root this makes a root-owned directory the service user cannot write
        st = state_dir.stat()
        log.warning(
            "created the state directory %s (it did not exist; owner uid %d); a service running as another user "
            "needs it to be theirs (deploy/install.sh makes it)",
            state_dir.resolve(),
            st.st_uid,
        )
    return sup.run()


def cmd_check_config(args) -> int:
    try:
        cfg = load_config(args.file)
        if cfg.mqtt.enabled:
            cfg.mqtt_password()
        if cfg.metrics.http:
            cfg.metrics_password()
    except ConfigError as exc:
        return fail(str(exc))
    from edge.outputs.metrics import endpoint_url, exposure_warning
    from edge.outputs.metrics_http import tls_context

    tls = cfg.metrics.tls
    if cfg.metrics.http and tls.cert and tls.key:
        try:
            tls_context(tls.cert, tls.key, tls.client_ca)
        except OSError as exc:  # ssl.SSLError included: not a certificate, not its key, not a CA
            files = f"cert {tls.cert}, key {tls.key}" + (f", client_ca {tls.client_ca}" if tls.client_ca else "")
            return fail(f"{args.file}: metrics.tls: cannot use {files} ({exc})")
    warning = exposure_warning(cfg.metrics)
    if warning:
        print(f"{args.file}: WARNING: {warning}", file=sys.stderr)
    bundle_dir = cfg.bundle_dir()
    try:
        from edge.engine.bundle import BundleError, read_manifest, verify_files
        from edge.releases.signing import check_bundle_trust

        manifest = read_manifest(bundle_dir)
        check_bundle_trust(bundle_dir, cfg.releases.require_signature, Path(cfg.releases.allowed_signers))
        verify_files(manifest)
    except BundleError as exc:
        return fail(f"{args.file}: model.bundle: {exc}")
    missing = "" if Path(cfg.storage.state_dir).is_dir() else " (does not exist yet: `crackd run` creates it)"
    print(
        f"{args.file}: ok (device {cfg.device_id}, source {cfg.source.type}, bundle "
        f"{manifest.bundle_version} at {bundle_dir}, state {cfg.storage.state_dir}{missing}, "
        f"MQTT {f'{cfg.mqtt.host}:{cfg.mqtt.port:d}' if cfg.mqtt.enabled else 'off'}, "
        f"metrics {endpoint_url(cfg.metrics) if cfg.metrics.http else 'off'})"
    )
    return 0


# --------------------------------------------------------------------------- status


def cmd_status(args) -> int:
    try:
        state_dir = locate(args).state_dir
    except UsageError as exc:
        return fail(str(exc))
    path = StateLayout(state_dir).status_file
    try:
        reading = read_daemon_status(path)
    except FileNotFoundError:
        return fail(f"{path}: no status file; the daemon has not run with this state directory", 1)
    except ValueError as exc:
        return fail(f"{path}: unreadable ({exc})", 1)
    d = reading.status
    running = d.state == "running" and reading.pid_alive
    stopped = d.state == "stopped"  # its last write; a pid reused since says nothing
    age = reading.age_s
    healthy = running and d.healthy and age is not None and age <= STATUS_FRESH_S
    code = 0 if healthy else EXIT_STOPPED if stopped else 1
    if args.json:
        print_json({**reading.to_json(), "running": running}, indent=1)
        return code
    if stopped:
        print(
            "\n".join(
                [
                    f"crackd {d.version} on {d.device_id}: stopped cleanly at {d.updated_at} "
                    f"(pid {d.pid}, started {d.started_at}, up {d.uptime_s} s)",
                    f"  bundle       {d.bundle_version}  sha256 {str(d.bundle_sha256)[:12]}  {d.bundle_path}",
                    f"  frames       {d.frames_processed} processed, {d.frames_skipped} skipped, "
                    f"{d.frames_failed} failed, {d.frames_bad} bad",
                    f"  outbox       {d.outbox_depth} message(s) waiting for the next start",
                ]
            )
        )
        return code
    lat = d.latency_ms
    lines = [
        f"crackd {d.version} on {d.device_id}: "
        + ("running" if running else "NOT RUNNING")
        + f" (pid {d.pid}), "
        + (
            "NOT HEALTHY"
            if not healthy
            else "healthy"
            if d.broker_connected or not d.mqtt_enabled
            else "healthy, not publishing"
        ),  # detections are kept in the outbox until the broker is back
        f"  started      {d.started_at}  (uptime {d.uptime_s} s, status written {age} s ago)",
        f"  bundle       {d.bundle_version}  sha256 {str(d.bundle_sha256)[:12]}  {d.bundle_path}",
        f"  frames       {d.frames_processed} processed, {d.frames_skipped} skipped, "
        f"{d.frames_failed} failed, {d.frames_bad} bad; {d.fps} fps; last {d.last_frame_age_s} s ago",
        f"  latency      p50 {lat.p50} ms, p95 {lat.p95} ms",
        f"  camera       {d.camera_state}",
        "  mqtt         "
        + ("off" if not d.mqtt_enabled else ("connected" if d.broker_connected else f"DISCONNECTED ({d.broker_error})"))
        + f", outbox {d.outbox_depth} waiting",
    ]
    for output in d.outputs:
        if output.name != "mqtt":  # the mqtt line above says the same
            lines.append(
                f"  {output.name:<12} {output.waiting} waiting, {output.delivered} delivered"
                + (f"; NOT DELIVERING: {output.error}" if output.error else "")
            )
    if d.mqtt_snapshot_error:
        lines.append(f"  snapshots    NOT ARRIVING: {d.mqtt_snapshot_error}")
    if d.journal_error:
        lines.append(f"  journal      PROBLEM: {d.journal_error}")
    if d.detections_paused:
        lines.append(f"  detections   PAUSED: {d.detections_paused}")
    if d.last_reload:
        r = d.last_reload
        lines.append(f"  last reload  {r.time}: " + ("ok" if r.ok else f"FAILED: {r.error}"))
    print("\n".join(lines))
    return code


def register(sub) -> None:
    p = sub.add_parser("run", help="run the inspection daemon")
    add_config_arg(p, help="YAML config (see config/crackd.example.yaml)")
    add_demo_args(p, help="synthetic camera, shipped bundle, ./crackd-state, MQTT on localhost if a broker answers")
    add_state_dir_arg(p, help="override storage.state_dir (demo default ./crackd-state)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file (and its bundle) without running")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("status", help="the running daemon's status (STATE/status.json)")
    add_location_args(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_status)
