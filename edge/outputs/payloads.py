"""What the pipeline hands to the outputs (`EventOut`), and the event payload built from it in one place.

The payload is docs/schemas/event.schema.json.

The MQTT `event` message and the webhook's `event` carry the same object, so a consumer
reads both with one parser. `seq` and `replayed` are added by the output when it sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.events.decision import EventRecord
from edge.events.journal import EventWrite
from edge.timestamps import iso_utc

PAYLOAD_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Pictures:
    """An event's pictures, relative to the state directory (edge.daemon.snapshots writes them)."""

    frame: str
    overlay: str
    frame_seq: int | None  # the frame they show (None: not known, e.g. recovered after a crash)


@dataclass(frozen=True)
class EventOut:
    """One event record as the outputs receive it."""

    write: EventWrite  # the record and what the journal keeps with it (bundle, device id, picture paths)
    pictures: Pictures | None  # the event's latest pictures (the ones just taken, or the last ones)
    new_pictures: bool  # the pictures were (re)taken for this record: outputs that send pictures send them now

    @property
    def record(self) -> EventRecord:
        return self.write.record


@dataclass(frozen=True)
class PublishedPicture:
    """The picture published on the MQTT `snapshot` topic for an event (the JPEG's comment tag names the same)."""

    topic: str
    uuid: str
    revision: int


def snapshot_field(pictures: Pictures | None, published: PublishedPicture | None) -> dict[str, Any] | None:
    """The event payload's `snapshot`: the picture paths, and `mqtt` naming the published picture."""
    if pictures is None:
        return None
    field: dict[str, Any] = {"frame": pictures.frame, "overlay": pictures.overlay, "frame_seq": pictures.frame_seq}
    if published is not None:
        field["mqtt"] = {"topic": published.topic, "uuid": published.uuid, "revision": published.revision}
    return field


def event_payload(event: EventOut, published: PublishedPicture | None = None) -> dict[str, Any]:
    """The `event` message body (key order as documented; seq and replayed are added when it is sent)."""
    r, w = event.record, event.write
    return {
        "schema_version": PAYLOAD_SCHEMA_VERSION,
        "type": r.kind,
        "uuid": r.uuid,
        "revision": r.revision,
        "device_id": w.device_id,
        "started_at": iso_utc(r.started_at),
        "t": iso_utc(r.t),
        "ended_at": iso_utc(r.ended_at),
        "end_reason": r.end_reason,
        "frames": r.frames,
        "score": round(float(r.peak_score), 4),
        "measurements": r.peak_measurements,
        "peak_frame_seq": r.peak_frame_seq,
        "bundle_version": w.bundle_version,
        "bundle_sha256": w.bundle_sha256,
        "snapshot": snapshot_field(event.pictures, published),
    }
