"""`crackd run | check-config | status | events ...`: the daemon and its records from the command line.

Exit codes: 0 ok; 1 a record or the daemon was not found / not healthy, or an
output could not be written; 2 bad usage or configuration (one line on stderr,
no traceback); 3 (`status`) the daemon stopped cleanly (SIGTERM, or a finite
source ended) and is not running, as LSB's "program is not running".
A reader that closes the pipe early (`| head`) ends the command quietly (exit 141).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from edge.config import Config, ConfigError, config_from_dict, load_config
from edge.releases.manager import STATUS_FRESH_S, read_daemon_status
from edge.layout import DEMO_STATE_DIR, RULE, SHIPPED_BUNDLE, StateLayout, locate_state
from edge.timestamps import iso_utc

log = logging.getLogger(__name__)

DEFAULT_DEMO_STATE = DEMO_STATE_DIR
EXIT_STOPPED = 3  # `crackd status`: stopped cleanly, not running
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection): such cells get a leading '.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
EXPORT_FIELDS = (
    "id", "uuid", "state", "started_at", "ended_at", "frames", "peak_score", "label", "label_note",
    "bundle_version", "device_id", "snapshot", "overlay", "length_px", "max_width_px", "total_area_px",
)


def _fail(message: str, code: int = 2) -> int:
    print(f"crackd: {message}", file=sys.stderr)
    return code


# --------------------------------------------------------------------------- run


def demo_config(state_dir: str) -> Config:
    """`crackd run --demo`: synthetic camera, shipped bundle, local state, MQTT on localhost if one answers."""
    return config_from_dict({
        "device_id": "demo",
        "source": {"type": "synthetic", "synthetic": {"fps": 10, "crack_probability": 0.3, "hold_frames": 8}},
        "model": {"bundle": str(SHIPPED_BUNDLE)},
        "storage": {"state_dir": state_dir, "retention_days": 7, "max_db_mb": 200, "snapshot_budget_mb": 100},
        "mqtt": {"enabled": True, "host": "localhost", "port": 1883, "reconnect_max_s": 30},
        "logging": {"journald": False},
        "stats_interval_s": 10,
    }, "<demo>")


def _broker_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def cmd_run(args) -> int:
    from edge.daemon.supervisor import StartupError, Supervisor
    from edge.daemon.notify import setup_logging

    if args.demo and args.config:
        return _fail("run: give either --config FILE or --demo")
    try:
        if args.demo:
            cfg = demo_config(args.state_dir or DEFAULT_DEMO_STATE)
        elif args.config:
            cfg = load_config(args.config)
        else:
            return _fail("run: --config FILE or --demo is required")
        if args.state_dir and not args.demo:
            import dataclasses

            cfg = dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage, state_dir=args.state_dir))
        if cfg.mqtt.enabled:
            cfg.mqtt_password()  # a missing secret is a config error, found now rather than at the first connect
    except ConfigError as exc:
        return _fail(str(exc))
    setup_logging("debug" if args.verbose else cfg.logging.level, cfg.logging.journald)
    if args.demo:
        log.info("demo: synthetic camera, bundle %s, state in %s", SHIPPED_BUNDLE, Path(cfg.storage.state_dir).resolve())
        if not _broker_answers(cfg.mqtt.host, cfg.mqtt.port):
            log.warning("demo: no MQTT broker answers at %s:%d; events wait in the outbox until one does", cfg.mqtt.host, cfg.mqtt.port)
    state_dir = Path(cfg.storage.state_dir)
    created = not state_dir.exists()
    sup = Supervisor(cfg, None if args.demo else args.config)
    sup.install_signal_handlers()
    try:
        sup.start()
    except StartupError as exc:
        return _fail(str(exc))
    if created:  # never silently: as root this makes a root-owned directory the service user cannot write
        st = state_dir.stat()
        log.warning("created the state directory %s (it did not exist; owner uid %d); a service running as another user "
                    "needs it to be theirs (deploy/install.sh makes it)", state_dir.resolve(), st.st_uid)
    return sup.run()


def cmd_check_config(args) -> int:
    try:
        cfg = load_config(args.file)
        if cfg.mqtt.enabled:
            cfg.mqtt_password()
    except ConfigError as exc:
        return _fail(str(exc))
    bundle_dir = cfg.bundle_dir()
    try:
        from edge.engine.bundle import BundleError, read_manifest, verify_files
        from edge.releases.signing import check_bundle_trust

        manifest = read_manifest(bundle_dir)
        check_bundle_trust(bundle_dir, cfg.releases.require_signature, Path(cfg.releases.allowed_signers))
        verify_files(manifest)
    except BundleError as exc:
        return _fail(f"{args.file}: model.bundle: {exc}")
    missing = "" if Path(cfg.storage.state_dir).is_dir() else " (does not exist yet: `crackd run` creates it)"
    print(f"{args.file}: ok (device {cfg.device_id}, source {cfg.source.type}, bundle {manifest.bundle_version} at {bundle_dir}, "
          f"state {cfg.storage.state_dir}{missing}, MQTT {'%s:%d' % (cfg.mqtt.host, cfg.mqtt.port) if cfg.mqtt.enabled else 'off'})")
    return 0


# --------------------------------------------------------------------------- status


def _state_paths(args) -> tuple[Path, Path]:
    """(state directory, journal file) by the one rule of edge.layout."""
    try:
        where = locate_state(getattr(args, "state_dir", None), getattr(args, "config", None))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    return where.state_dir, where.db


def _state_dir(args) -> Path:
    return _state_paths(args)[0]


class UsageError(Exception):
    pass


def cmd_status(args) -> int:
    try:
        state_dir = _state_dir(args)
    except UsageError as exc:
        return _fail(str(exc))
    path = StateLayout(state_dir).status_file
    try:
        reading = read_daemon_status(path)
    except FileNotFoundError:
        return _fail(f"{path}: no status file; the daemon has not run with this state directory", 1)
    except ValueError as exc:
        return _fail(f"{path}: unreadable ({exc})", 1)
    d = reading.status
    running = d.state == "running" and reading.pid_alive
    stopped = d.state == "stopped"  # its last write; a pid reused since says nothing
    age = reading.age_s
    healthy = running and d.healthy and age is not None and age <= STATUS_FRESH_S
    code = 0 if healthy else EXIT_STOPPED if stopped else 1
    if args.json:
        print(json.dumps({**reading.to_json(), "running": running}, indent=1))
        return code
    if stopped:
        print("\n".join([
            f"crackd {d.version} on {d.device_id}: stopped cleanly at {d.updated_at} "
            f"(pid {d.pid}, started {d.started_at}, up {d.uptime_s} s)",
            f"  bundle       {d.bundle_version}  sha256 {str(d.bundle_sha256)[:12]}  {d.bundle_path}",
            f"  frames       {d.frames_processed} processed, {d.frames_skipped} skipped, "
            f"{d.frames_failed} failed, {d.frames_bad} bad",
            f"  outbox       {d.outbox_depth} message(s) waiting for the next start",
        ]))
        return code
    lat = d.latency_ms
    lines = [
        f"crackd {d.version} on {d.device_id}: "
        + ("running" if running else "NOT RUNNING") + f" (pid {d.pid}), " + ("healthy" if healthy else "NOT HEALTHY"),
        f"  started      {d.started_at}  (uptime {d.uptime_s} s, status written {age} s ago)",
        f"  bundle       {d.bundle_version}  sha256 {str(d.bundle_sha256)[:12]}  {d.bundle_path}",
        f"  frames       {d.frames_processed} processed, {d.frames_skipped} skipped, "
        f"{d.frames_failed} failed, {d.frames_bad} bad; {d.fps} fps; last {d.last_frame_age_s} s ago",
        f"  latency      p50 {lat.p50} ms, p95 {lat.p95} ms",
        f"  camera       {d.camera_state}",
        "  mqtt         " + ("off" if not d.mqtt_enabled else
                              ("connected" if d.broker_connected else f"DISCONNECTED ({d.broker_error})"))
        + f", outbox {d.outbox_depth} waiting",
    ]
    if d.journal_error:
        lines.append(f"  journal      PROBLEM: {d.journal_error}")
    if d.last_reload:
        r = d.last_reload
        lines.append(f"  last reload  {r.time}: " + ("ok" if r.ok else f"FAILED: {r.error}"))
    print("\n".join(lines))
    return code


# --------------------------------------------------------------------------- events


def parse_when(text: str) -> float:
    """'2h', '30m', '7d', '45s' ago, an ISO date/time, or epoch seconds -> epoch seconds."""
    text = text.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return time.time() - float(m.group(1)) * unit
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{text!r}: expected a time like 2h, 7d, 2024-05-01, 2024-05-01T12:00:00Z or epoch seconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _open_journal(args):
    from edge.events.journal import Journal

    state_dir, db = _state_paths(args)
    db = Path(args.db) if getattr(args, "db", None) else db
    if not db.exists():
        raise UsageError(f"{db}: no journal here (pass --state-dir, --config or --db)")
    return Journal(db, require_writable=getattr(args, "events_command", None) in ("label", "delete")), state_dir


def _flat(event: dict, state_dir: Path) -> dict:
    m = event.get("peak_measurements") or {}
    row = {k: event.get(k) for k in EXPORT_FIELDS}
    row["started_at"], row["ended_at"] = iso_utc(event.get("started_at"), "seconds"), iso_utc(event.get("ended_at"), "seconds")
    for key in ("snapshot", "overlay"):
        if row[key]:
            row[key] = str((state_dir / row[key]).resolve())
    row["length_px"], row["max_width_px"], row["total_area_px"] = m.get("length_px"), m.get("max_width_px"), m.get("total_area_px")
    return row


def cmd_events(args) -> int:
    from edge.events.journal import JournalError

    if getattr(args, "limit", None) is not None and args.limit < 1:
        return _fail(f"events {args.events_command}: --limit: expected at least 1 (leave it out for all), got {args.limit}")
    try:
        journal, state_dir = _open_journal(args)
    except (UsageError, JournalError) as exc:
        return _fail(str(exc))
    try:
        with journal:
            return EVENT_COMMANDS[args.events_command](args, journal, state_dir)
    except (UsageError, JournalError) as exc:
        return _fail(str(exc))


def _filters(args) -> dict:
    return {
        "since": parse_when(args.since) if args.since else None,
        "until": parse_when(args.until) if args.until else None,
        "state": args.state,
        "min_score": args.min_score,
        "label": args.label,
    }


def _ev_list(args, journal, state_dir) -> int:
    events = journal.list_events(**_filters(args), limit=args.limit)
    if args.json:
        print(json.dumps([_flat(e, state_dir) for e in events], indent=1))
        return 0
    print(f"{'id':>5}  {'uuid':<8}  {'started (UTC)':<20}  {'state':<6}  {'frames':>6}  {'score':>5}  {'length px':>9}  label")
    for e in events:
        m = e.get("peak_measurements") or {}
        print(f"{e['id']:>5}  {e['uuid'][:8]}  {iso_utc(e['started_at'], 'seconds'):<20}  {e['state']:<6}  {e['frames']:>6}  {e['peak_score']:5.2f}  "
              f"{m.get('length_px', '-')!s:>9}  {e.get('label') or ''}")
    print(f"{len(events)} event(s)")
    return 0


def _find(journal, ref: str) -> dict:
    try:
        event = journal.find_event(ref)
    except OverflowError:  # an all-digit reference beyond SQLite's 64-bit ids names no event
        event = None
    if event is None:
        raise UsageError(f"no event {ref!r} in {journal.path}")
    return event


def _ev_show(args, journal, state_dir) -> int:
    event = _find(journal, args.id)
    event = {**event, "started_at_iso": iso_utc(event["started_at"], "seconds"), "ended_at_iso": iso_utc(event.get("ended_at"), "seconds")}
    for key in ("snapshot", "overlay"):
        if event.get(key):
            event[key] = str((state_dir / event[key]).resolve())
    if args.frames:
        event["frame_results"] = journal.event_frames(event["uuid"])
    print(json.dumps(event, indent=1, default=str))
    return 0


def _csv_safe(value):
    """A cell a spreadsheet would run as a formula (=, +, -, @, tab, CR first) is prefixed with ' (CSV injection)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _write_export(args, journal, state_dir, events, out) -> None:
    if args.format == "json":
        rows = []
        for e in events:
            row = _flat(e, state_dir)
            row["peak_measurements"] = e.get("peak_measurements")
            rows.append(row)
        json.dump({"exported_at": iso_utc(time.time(), "seconds"), "journal": str(journal.path), "events": rows}, out, indent=1)
        out.write("\n")
    else:
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
        writer.writeheader()
        for e in events:
            writer.writerow({k: _csv_safe(v) for k, v in _flat(e, state_dir).items()})


def _ev_export(args, journal, state_dir) -> int:
    events = journal.list_events(**_filters(args), limit=args.limit, newest_first=False)
    if args.out in (None, "-"):
        _write_export(args, journal, state_dir, events, sys.stdout)
        sys.stdout.flush()
        return 0
    path = Path(args.out)
    if not args.force and (path.exists() or path.is_symlink()):
        return _fail(f"events export: {path} exists; pass --force to overwrite it")
    created = False
    try:
        # "x": created here, never clobbered (no check-then-open race); --force writes in place (also /dev/...)
        with open(path, "w" if args.force else "x", newline="") as out:
            created = not args.force
            _write_export(args, journal, state_dir, events, out)
    except OSError as exc:
        if created:
            path.unlink(missing_ok=True)
        return _fail(f"events export: {path}: cannot write the export ({exc.strerror or exc})", 1)
    print(f"exported {len(events)} event(s) to {args.out}", file=sys.stderr)
    return 0


def _ev_label(args, journal, state_dir) -> int:
    event = _find(journal, args.id)
    journal.set_label(event["uuid"], args.label, args.note)
    print(f"event {event['id']} ({event['uuid']}) labelled {args.label}")
    return 0


def _ev_delete(args, journal, state_dir) -> int:
    targets = [_find(journal, ref) for ref in args.ids]
    for event in targets:
        for rel in journal.delete_event(event["uuid"]):
            try:
                (state_dir / rel).unlink()
            except OSError:
                pass
        print(f"deleted event {event['id']} ({event['uuid']})")
    return 0


EVENT_COMMANDS = {"list": _ev_list, "show": _ev_show, "export": _ev_export, "label": _ev_label, "delete": _ev_delete}


def _location_args(p) -> None:
    p.add_argument("--state-dir", default=None, help=f"daemon state directory (default: {RULE})")
    p.add_argument("--config", default=None, metavar="FILE", help="take the state directory from this config")


def _filter_args(p) -> None:
    p.add_argument("--since", help="started at or after (2h, 7d, ISO time, epoch)")
    p.add_argument("--until", help="started before")
    p.add_argument("--state", choices=["open", "ended"])
    p.add_argument("--min-score", type=float, default=None)
    p.add_argument("--label", choices=["crack", "no-crack", "none"], help="by operator label (none = unlabelled)")
    p.add_argument("--limit", type=int, default=None, help="at most this many (at least 1; default all)")


def register(sub) -> None:
    p = sub.add_parser("run", help="run the inspection daemon")
    p.add_argument("--config", metavar="FILE", help="YAML config (see config/crackd.example.yaml)")
    p.add_argument("--demo", action="store_true", help="synthetic camera, shipped bundle, ./crackd-state, MQTT on localhost if a broker answers")
    p.add_argument("--state-dir", default=None, help="override storage.state_dir (demo default ./crackd-state)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file (and its bundle) without running")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("status", help="the running daemon's status (STATE/status.json)")
    _location_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("events", help="recorded events: list, show, export, label, delete")
    esub = p.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    e = esub.add_parser("list", help="list events (newest first)")
    _location_args(e); _filter_args(e)
    e.add_argument("--db", help=argparse.SUPPRESS)
    e.add_argument("--json", action="store_true")
    e = esub.add_parser("show", help="one event in full")
    _location_args(e)
    e.add_argument("--db", help=argparse.SUPPRESS)
    e.add_argument("id", help="event id, uuid or uuid prefix")
    e.add_argument("--frames", action="store_true", help="include the recorded frame results")
    e = esub.add_parser("export", help="export events as CSV or JSON (labels included: training data)")
    _location_args(e); _filter_args(e)
    e.add_argument("--db", help=argparse.SUPPRESS)
    e.add_argument("--format", choices=["csv", "json"], default="csv")
    e.add_argument("--out", "-o", default="-", help="output file (default stdout); an existing file is kept unless --force")
    e.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    e = esub.add_parser("label", help="an operator's verdict, kept for retraining")
    _location_args(e)
    e.add_argument("--db", help=argparse.SUPPRESS)
    e.add_argument("id")
    e.add_argument("label", choices=["crack", "no-crack"])
    e.add_argument("--note", default=None)
    e = esub.add_parser("delete", help="delete events with their frames, label and snapshots")
    _location_args(e)
    e.add_argument("--db", help=argparse.SUPPRESS)
    e.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(func=cmd_events)
