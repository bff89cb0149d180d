"""`crackd events list | show | export | label | delete | pull-list | pack | flag-missed`: the recorded events in the
journal, and the frames the daemon keeps to be labelled (edge.daemon.samples: `--kind`).

`flag-missed` asks the running daemon to keep the frames of the last seconds as a crack the model missed, through a
request file in the state directory (StateLayout.flag_missed_request), and prints its answer.

`pull-list --json` and `pack UUID...` are what `crack-deploy pull` runs over SSH: the labelled events with the paths
of their pictures (a typed answer, edge/events/pull_answer.py), then those pictures as a tar on stdout.

Exit codes: 0 ok; 1 an export could not be written; 2 bad usage, an unknown event
or an unreadable journal (one line on stderr, no traceback). A reader that closes
the pipe early (`| head`) ends the command quietly (exit 141, see edge.cli.main).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import sys
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge.cli.common import UsageError, add_db_arg, add_json_arg, add_location_args, fail, locate, print_json
from edge.layout import StateLayout
from edge.timestamps import iso_utc
from edge.vocabulary import LABELS, RECORD_KINDS

if TYPE_CHECKING:
    from edge.events.journal import EventRow

EVENT_TIMES = ("started_at", "updated_at", "ended_at", "labelled_at")  # the journal's epoch seconds, shown as ISO
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection): such cells get a leading '.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
EXPORT_FIELDS = (
    "id",
    "uuid",
    "state",
    "started_at",
    "ended_at",
    "frames",
    "peak_score",
    "label",
    "label_note",
    "bundle_version",
    "device_id",
    "snapshot",
    "overlay",
    "length_px",
    "max_width_px",
    "total_area_px",
)


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
        raise UsageError(
            f"{text!r}: expected a time like 2h, 7d, 2024-05-01, 2024-05-01T12:00:00Z or epoch seconds"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _open_journal(args):
    from edge.events.journal import Journal

    where = locate(args)
    state_dir, db = where.state_dir, Path(args.db) if getattr(args, "db", None) else where.db
    if not db.exists():
        raise UsageError(f"{db}: no journal here (pass --state-dir, --config or --db)")
    return Journal(db, require_writable=getattr(args, "events_command", None) in ("label", "delete")), state_dir


def _flat(event: EventRow, state_dir: Path) -> dict:
    m = event.peak_measurements or {}
    fields = event.as_dict()
    row = {k: fields.get(k) for k in EXPORT_FIELDS}
    row["started_at"], row["ended_at"] = (
        iso_utc(event.started_at, "seconds"),
        iso_utc(event.ended_at, "seconds"),
    )
    for key in ("snapshot", "overlay"):
        if relpath := row[key]:
            row[key] = str((state_dir / relpath).resolve())
    row["length_px"], row["max_width_px"], row["total_area_px"] = (
        m.get("length_px"),
        m.get("max_width_px"),
        m.get("total_area_px"),
    )
    return row


def cmd_events(args) -> int:
    from edge.events.journal import JournalError

    if getattr(args, "limit", None) is not None and args.limit < 1:
        return fail(
            f"events {args.events_command}: --limit: expected at least 1 (leave it out for all), got {args.limit}"
        )
    try:
        journal, state_dir = _open_journal(args)
    except (UsageError, JournalError) as exc:
        return fail(str(exc))
    try:
        with journal:
            return EVENT_COMMANDS[args.events_command](args, journal, state_dir)
    except (UsageError, JournalError) as exc:
        return fail(str(exc))


def _filters(args) -> dict:
    return {
        "since": parse_when(args.since) if args.since else None,
        "until": parse_when(args.until) if args.until else None,
        "state": args.state,
        "min_score": args.min_score,
        "label": args.label,
        "kind": args.kind,
    }


def _ev_list(args, journal, state_dir) -> int:
    events = journal.list_events(**_filters(args), limit=args.limit)
    if args.json:
        print_json([_flat(e, state_dir) for e in events], indent=1)
        return 0
    print(
        f"{'id':>5}  {'uuid':<8}  {'started (UTC)':<20}  {'state':<6}  "
        f"{'frames':>6}  {'score':>5}  {'length px':>9}  {'kind':<10}  label"
    )
    for e in events:
        m = e.peak_measurements or {}
        print(
            f"{e.id:>5}  {e.uuid[:8]}  {iso_utc(e.started_at, 'seconds'):<20}  {e.state:<6}  "
            f"{e.frames:>6}  {e.peak_score:5.2f}  {m.get('length_px', '-')!s:>9}  {e.kind:<10}  {e.label or ''}"
        )
    print(f"{len(events)} event(s)")
    return 0


def _find(journal, ref: str) -> EventRow:
    try:
        event = journal.find_event(ref)
    except OverflowError:  # an all-digit reference beyond SQLite's 64-bit ids names no event
        event = None
    if event is None:
        raise UsageError(f"no event {ref!r} in {journal.path}")
    return event


def _ev_show(args, journal, state_dir) -> int:
    found = _find(journal, args.id)
    event = found.as_dict()
    # Times in ISO 8601 UTC, as `events list`, `events export`, `status` and the MQTT payloads print them.
    event.update({key: iso_utc(event[key]) for key in EVENT_TIMES if key in event})
    for key in ("snapshot", "overlay"):
        if event.get(key):
            event[key] = str((state_dir / event[key]).resolve())
    if args.frames:
        event["frame_results"] = [
            {**frame.as_dict(), "t": iso_utc(frame.t)} for frame in journal.event_frames(found.uuid)
        ]
    print_json(event, indent=1, default=str)
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
            row["peak_measurements"] = e.peak_measurements
            rows.append(row)
        json.dump(
            {"exported_at": iso_utc(time.time(), "seconds"), "journal": str(journal.path), "events": rows},
            out,
            indent=1,
        )
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
        return fail(f"events export: {path} exists; pass --force to overwrite it")
    created = False
    try:
        # "x": created here, never clobbered (no check-then-open race); --force writes in place (also /dev/...)
        with open(path, "w" if args.force else "x", newline="") as out:
            created = not args.force
            _write_export(args, journal, state_dir, events, out)
    except OSError as exc:
        if created:
            path.unlink(missing_ok=True)
        return fail(f"events export: {path}: cannot write the export ({exc.strerror or exc})", 1)
    print(f"exported {len(events)} event(s) to {args.out}", file=sys.stderr)
    return 0


def _ev_label(args, journal, state_dir) -> int:
    event = _find(journal, args.id)
    journal.set_label(event.uuid, args.label, args.note)
    print(f"event {event.id} ({event.uuid}) labelled {args.label}")
    return 0


def _ev_delete(args, journal, state_dir) -> int:
    targets = [_find(journal, ref) for ref in args.ids]
    for event in targets:
        for rel in journal.delete_event(event.uuid):
            for path in (rel, StateLayout.snapshot_mask(rel)):  # the predicted mask goes with its frame
                try:
                    (state_dir / path).unlink()
                except OSError:
                    pass
        print(f"deleted event {event.id} ({event.uuid})")
    return 0


def _pullable_events(journal, state_dir: Path) -> list:
    """The labelled events, oldest first, each with the pictures still on disk (edge.events.pull_answer)."""
    from edge.events.pull_answer import pullable

    out = []
    for event in journal.list_events(newest_first=False):
        if event.label is None:
            continue
        if event.snapshot and not (state_dir / event.snapshot).is_file():
            event = dataclasses.replace(event, snapshot=None)
        mask = StateLayout.snapshot_mask(event.snapshot) if event.snapshot else None
        out.append(pullable(event, mask if mask and (state_dir / mask).is_file() else None))
    return out


def _ev_pull_list(args, journal, state_dir) -> int:
    from edge import __version__
    from edge.events.pull_answer import EventsForPull

    events = _pullable_events(journal, state_dir)
    device_id = events[-1].device_id if events else ""
    answer = EventsForPull(device_id=device_id, crackd_version=__version__, events=events)
    print_json({"ok": True, **answer.to_json()})
    return 0


def _ev_pack(args, journal, state_dir) -> int:
    """The frame and mask of the events named, as an uncompressed tar streamed to stdout (JPEG and PNG are
    compressed already). An event deleted since `pull-list` (retention, the snapshot budget) is left out, not an
    error: the bench reports it as having no frame."""
    wanted = set()
    for ref in args.ids:
        event = journal.find_event(ref)
        if event is None:
            print(f"events pack: no event {ref!r} (deleted since it was listed?); left out", file=sys.stderr)
        else:
            wanted.add(event.uuid)
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as tar:
        for pictures in _pullable_events(journal, state_dir):
            if pictures.uuid in wanted:
                for rel in (pictures.frame, pictures.mask):
                    if rel:
                        tar.add(state_dir / rel, arcname=rel, recursive=False)
    sys.stdout.buffer.flush()
    return 0


def _ev_flag_missed(args, journal, state_dir) -> int:
    """Ask the running daemon to keep its last seconds of frames as a missed crack; print what it kept."""
    import uuid

    from edge.atomic_write import write_bytes_atomic

    if args.seconds <= 0:
        raise UsageError(f"events flag-missed: --seconds: expected more than 0, got {args.seconds}")
    layout = StateLayout(state_dir)
    if not layout.pid_file.exists():
        raise UsageError(f"events flag-missed: no daemon runs on {state_dir} (no {layout.pid_file.name})")
    request_id = str(uuid.uuid4())
    layout.flag_missed_answer.unlink(missing_ok=True)
    request = {"id": request_id, "seconds": args.seconds, "note": args.note}
    write_bytes_atomic(layout.flag_missed_request, json.dumps(request).encode())
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        try:
            answer = json.loads(layout.flag_missed_answer.read_text())
        except (FileNotFoundError, ValueError):
            answer = None
        if answer is not None and answer.get("id") == request_id:
            stored = answer.get("stored", [])
            if args.json:
                print_json({"ok": True, **answer})
            elif stored:
                print(f"kept {len(stored)} frame(s) of the last {args.seconds:g} s as a missed crack (label crack)")
            if not stored:
                why = (
                    "it held none from then (storage.missed_buffer_s is 0, or no frame came)"
                    if not answer.get("held")
                    else "their pictures could not be written (storage.snapshots off, or the disk full: see its log)"
                )
                print(f"events flag-missed: the daemon kept no frame: {why}", file=sys.stderr)
            return 0 if stored else 1
        time.sleep(0.1)
    layout.flag_missed_request.unlink(missing_ok=True)
    return fail(f"events flag-missed: the daemon on {state_dir} did not answer within {args.wait:g} s", 1)


EVENT_COMMANDS = {
    "pull-list": _ev_pull_list,
    "pack": _ev_pack,
    "list": _ev_list,
    "show": _ev_show,
    "export": _ev_export,
    "label": _ev_label,
    "delete": _ev_delete,
    "flag-missed": _ev_flag_missed,
}


def _filter_args(p) -> None:
    p.add_argument("--since", help="started at or after (2h, 7d, ISO time, epoch)")
    p.add_argument("--until", help="started before")
    p.add_argument("--state", choices=["open", "ended"])
    p.add_argument("--min-score", type=float, default=None)
    p.add_argument("--label", choices=[*LABELS, "none"], help="by operator label (none = unlabelled)")
    p.add_argument("--limit", type=int, default=None, help="at most this many (at least 1; default all)")
    p.add_argument("--kind", choices=RECORD_KINDS, help="events only (event), or one kind of frame kept to be labelled")


def _records_parser(esub, name: str, help_text: str):
    """One `crackd events ACTION` parser with the journal's location options."""
    e = esub.add_parser(name, help=help_text)
    add_location_args(e)
    add_db_arg(e)
    return e


def register(sub) -> None:
    p = sub.add_parser(
        "events", help="recorded events: list, show, export, label, delete, pull-list, pack, flag-missed"
    )
    esub = p.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    e = _records_parser(esub, "list", "list events (newest first)")
    _filter_args(e)
    add_json_arg(e)
    e = _records_parser(esub, "show", "one event in full")
    e.add_argument("id", help="event id, uuid or uuid prefix")
    e.add_argument("--frames", action="store_true", help="include the recorded frame results")
    e = _records_parser(esub, "export", "export events as CSV or JSON (labels included: training data)")
    _filter_args(e)
    e.add_argument("--format", choices=["csv", "json"], default="csv")
    e.add_argument(
        "--out", "-o", default="-", help="output file (default stdout); an existing file is kept unless --force"
    )
    e.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    e = _records_parser(esub, "label", "an operator's verdict, kept for retraining")
    e.add_argument("id")
    e.add_argument("label", choices=LABELS)
    e.add_argument("--note", default=None)
    e = _records_parser(esub, "delete", "delete events with their frames, label and snapshots")
    e.add_argument("ids", nargs="+", metavar="ID")
    e = _records_parser(
        esub, "pull-list", "the labelled events and their pictures, for `crack-deploy pull` (JSON, oldest first)"
    )
    add_json_arg(e, help="accepted for symmetry: the answer is always JSON")
    e = _records_parser(esub, "pack", "the frame and predicted mask of events as a tar on stdout (crack-deploy pull)")
    e.add_argument("ids", nargs="+", metavar="ID", help="event ids or uuids")
    e = _records_parser(
        esub,
        "flag-missed",
        "the running daemon keeps its last seconds of frames as a crack it missed (label crack), for pull",
    )
    e.add_argument(
        "--seconds", type=float, default=10.0, help="how far back (default 10; at most storage.missed_buffer_s)"
    )
    e.add_argument("--note", default=None, help="kept with the label, e.g. where the crack was")
    e.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the daemon's answer (default 10)")
    add_json_arg(e)
    p.set_defaults(func=cmd_events)
