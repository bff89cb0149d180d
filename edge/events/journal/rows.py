"""What goes into the journal and what comes out of it, as frozen dataclasses (no string-keyed rows)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.events.decision import EventRecord

# ---------------------------------------------------------------------------------------------- written


@dataclass(frozen=True)
class FrameRow:
    t: float
    seq: int
    crack: bool
    score: float
    segmented: bool
    measurements: dict | None = None
    latency_ms: float | None = None
    bundle_version: str | None = None
    event_uuid: str | None = None
    ref: str | None = None


@dataclass(frozen=True)
class EventWrite:
    """An EventRecord (edge.events.decision) plus what the journal stores beside it."""

    record: EventRecord
    bundle_version: str
    bundle_sha256: str
    device_id: str
    snapshot: str | None = None
    overlay: str | None = None


@dataclass(frozen=True)
class SampleWrite:
    """A frame kept to be labelled (edge.daemon.samples): one ended row of `events` with its picture, never announced.

    `label`: the verdict it comes with (a `missed` frame is a crack the operator says the model missed), else None."""

    uuid: str
    kind: str  # edge.vocabulary.SAMPLE_KINDS
    t: float
    seq: int
    score: float
    bundle_version: str
    bundle_sha256: str
    device_id: str
    snapshot: str | None
    label: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class OutboxMessage:
    """`payload`: a dict (sent as JSON with seq/replayed added) or bytes (sent as they are: pictures).

    `replace_pending`: delete any unsent row of the same output on the same topic first (only the newest
    picture waits). `output`: the output (edge.outputs) that delivers it and alone consumes the row."""

    topic: str
    payload: dict | bytes
    qos: int = 1
    retain: bool = False
    event_uuid: str | None = None
    replace_pending: bool = False
    output: str = "mqtt"


# ---------------------------------------------------------------------------------------------- read


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    payload: str | bytes  # bytes: send as is (see OutboxMessage)
    qos: int
    retain: bool
    created_at: float
    event_uuid: str | None
    output: str = "mqtt"

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> OutboxRow:
        return cls(
            r["id"],
            r["topic"],
            r["payload"],
            r["qos"],
            bool(r["retain"]),
            r["created_at"],
            r["event_uuid"],
            r["output"],
        )


@dataclass(frozen=True)
class EventRow:
    """One recorded event with its operator label (if any); the fields are the `events` columns, in order."""

    id: int
    uuid: str
    state: str  # 'open' | 'ended'
    started_at: float
    updated_at: float
    ended_at: float | None
    end_reason: str | None
    revision: int
    frames: int
    peak_score: float
    peak_measurements: dict | None
    # The columns below allow NULL, but every row is written from an EventWrite, which always has them.
    peak_frame_seq: int
    first_frame_seq: int
    last_frame_seq: int
    bundle_version: str
    bundle_sha256: str
    device_id: str
    snapshot: str | None  # relative to the state directory
    overlay: str | None
    label: str | None = None  # 'crack' | 'no-crack' | None (unlabelled)
    label_note: str | None = None
    labelled_at: float | None = None
    kind: str = "event"  # edge.vocabulary.RECORD_KINDS: an event, or a frame kept to be labelled

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> EventRow:
        values = dict(r)
        if values.get("peak_measurements"):
            values["peak_measurements"] = json.loads(values["peak_measurements"])
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready fields (what `crackd events show` prints)."""
        return asdict(self)


@dataclass(frozen=True)
class RecordedFrame:
    """One frame result as the `frames` table holds it (crack/segmented as 0/1, measurements as JSON text)."""

    id: int
    t: float
    seq: int
    ref: str | None
    crack: int
    score: float
    segmented: int
    measurements: str | None
    latency_ms: float | None
    bundle_version: str | None
    event_uuid: str | None

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> RecordedFrame:
        return cls(**dict(r))

    def as_dict(self) -> dict[str, Any]:
        """The columns as stored: `crackd events show --frames` has always printed them so."""
        return asdict(self)


@dataclass(frozen=True)
class JournalCounts:
    frames: int
    events: int
    outbox: int
    labels: int


@dataclass
class PruneReport:
    frames: int = 0
    events: int = 0
    files: list[str] = field(
        default_factory=list
    )  # snapshot paths (relative to the state dir) whose events were deleted
    used_mb: float = 0.0
    over_budget: bool = False


def to_json(value: object) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))
