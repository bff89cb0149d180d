"""`crackd events pull-list --json`: the labelled events a bench may fetch, as a typed contract.

One writer (edge/cli/events.py), one reader (deploy/pull.py through `EventsForPull.from_json`), so a key read under a
wrong name fails a test instead of reading None. The pictures themselves come in a second call, `crackd events pack`,
as a tar whose member names are the `frame` and `mask` paths listed here (relative to the state directory).
Schema: docs/schemas/events/pull.schema.json (one definition per class, the same fields in the same order).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edge.events.journal.rows import EventRow
from edge.json_contract import JsonContract
from edge.timestamps import iso_utc


@dataclass(frozen=True)
class PullableEvent(JsonContract):
    """One labelled event and the pictures the device keeps of it."""

    uuid: str
    label: str  # the operator's verdict (`crackd events label`): crack | no-crack
    label_note: str | None
    labelled_at: str | None  # ISO 8601 UTC, device clock
    started_at: str
    ended_at: str | None
    peak_score: float
    bundle_version: str
    device_id: str
    frame: str | None  # the frame picture, relative to the state directory; None when the budget removed it
    mask: str | None  # the predicted mask (0/255 PNG) beside it; None when the segmenter did not run on that frame
    # edge.vocabulary.RECORD_KINDS: an event, or a frame kept to be labelled (`missed`: a crack the model missed).
    # Last and defaulted: a bench older than it reads the answer as before.
    kind: str = "event"


@dataclass(frozen=True)
class EventsForPull(JsonContract):
    """What `crack-deploy pull` asks a device first: who it is, and its labelled events, oldest first."""

    device_id: str
    crackd_version: str
    events: list[PullableEvent] = field(default_factory=list)


def pullable(event: EventRow, mask: str | None) -> PullableEvent:
    """The contract's event from a labelled journal row (epoch seconds become ISO 8601 UTC)."""
    if event.label is None:
        raise ValueError(f"event {event.uuid} has no label: only labelled events are pulled")
    return PullableEvent(
        uuid=event.uuid,
        label=event.label,
        label_note=event.label_note,
        labelled_at=iso_utc(event.labelled_at),
        started_at=iso_utc(event.started_at),
        ended_at=iso_utc(event.ended_at),
        peak_score=float(event.peak_score),
        bundle_version=event.bundle_version,
        device_id=event.device_id,
        frame=event.snapshot,
        mask=mask,
        kind=event.kind,
    )


PULLED_MANIFEST = "pulled.jsonl"  # SITE/pulled.jsonl: one line per event pulled (written by crack-deploy pull)


def read_pulled(path: Path) -> tuple[dict[tuple[str, str], dict], int | None]:
    """The bench's record of pulled events, by (host, uuid), the last line of an event winning (a later verdict
    appends one); and, when the file ends in a line cut short by an interrupted pull, the length of its whole lines
    (that event is simply fetched again). Read by crack-deploy pull and crack-train site."""
    entries: dict[tuple[str, str], dict] = {}
    if not path.is_file():
        return entries, None
    data = path.read_bytes()
    whole = data.rfind(b"\n") + 1 if data and not data.endswith(b"\n") else None
    for line in data.decode(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            entries[(entry["host"], entry["uuid"])] = entry
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by an interrupted pull
    return entries, whole
