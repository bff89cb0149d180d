"""STATE/status.json as a typed contract: what the daemon reports about itself, written by one process, read by others.

The daemon rewrites status.json about every second; `crackd status`, `crackd models status`,
`crackd models activate --wait-healthy`, the deploy tool (through `crackd models status --json`)
and tools/soak.py read it. All of them go through `DaemonStatus`, so a key read under a wrong
name is an AttributeError (and a test failure), not a silent None. The MQTT `stats` payload is
derived from it too (`DaemonStatus.stats`), so the two never disagree.

Reading is lenient in one direction only: a file from an older crackd (a deploy replaces the CLI
before the daemon restarts) lacks newer keys, which read as their defaults; keys a newer crackd
added are ignored. A value of the wrong type is a ValueError naming the key.
Schema of the file: docs/schemas/state/status.schema.json (docs/schemas/status.schema.json is the MQTT status topic).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.atomic_write import write_json_atomic
from edge.json_contract import from_json, is_number
from edge.vocabulary import CameraState


@dataclass(frozen=True)
class Percentiles:
    """p50 and p95 over the last 1000 frames, in ms; None before the first frame."""

    p50: float | None = None
    p95: float | None = None


@dataclass(frozen=True)
class CameraStatus:
    """The frame source's counters (edge.sources.SourceHealth) and its type."""

    source: str | None = None
    frames: int = 0
    bad_frames: int = 0
    stalls: int = 0
    errors: int = 0
    reconnects: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class OutputStatus:
    """One event output's delivery (edge.outputs): its own outbox rows, consumed at its own pace."""

    name: str  # mqtt | webhook
    waiting: int = 0  # its outbox rows not delivered yet
    delivered: int = 0  # delivered since the start
    error: str | None = None  # why it is not delivering now; None when it is (or has nothing to do)


@dataclass(frozen=True)
class LastReload:
    """The outcome of the last SIGHUP reload."""

    time: str
    ok: bool
    error: str | None = None
    bundle_version: str | None = None  # the bundle served after the attempt


@dataclass(frozen=True)
class DaemonStatus:
    """One status.json; the field order is the file's key order."""

    pid: int | None = None
    state: str | None = None  # "running", or "stopped" in the last write of a clean stop
    version: str | None = None  # crackd's
    device_id: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    uptime_s: float = 0.0
    bundle_path: str | None = None
    bundle_version: str | None = None
    bundle_sha256: str | None = None
    frames_processed: int = 0
    frames_skipped: int = 0
    frames_failed: int = 0
    frames_bad: int = 0
    frames_recorded: int = 0
    fps: float = 0.0
    last_frame_age_s: float | None = None
    latency_ms: Percentiles = field(default_factory=Percentiles)
    inference_ms: Percentiles = field(default_factory=Percentiles)
    events_started: int = 0
    event_open: str | None = None  # the open event's uuid
    outbox_depth: int = 0
    mqtt_enabled: bool = False
    broker_connected: bool = False
    broker_error: str | None = None
    mqtt_delivered: int = 0
    mqtt_replayed: int = 0
    mqtt_snapshot_error: str | None = None  # the broker dropped the latest snapshot (too large for it)
    outputs: list[OutputStatus] = field(default_factory=list)
    pending_writes: int = 0
    journal_error: str | None = None
    journal_writes_dropped: int = 0
    frame_rows_dropped: int = 0
    detections_paused: str | None = None  # why no frame is taken now (a detection could not be kept); None: kept
    camera_state: CameraState | None = None
    camera: CameraStatus = field(default_factory=CameraStatus)
    healthy: bool = False
    last_reload: LastReload | None = None
    rss_mb: float | None = None

    # ------------------------------------------------------------------ the one writer

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def write(self, path: Path) -> None:
        """Replace `path` atomically (readers never see half a file)."""
        write_json_atomic(path, self.to_json())

    def stats(self, cpu_temp_c: float | None, disk_free_mb: float | None) -> dict:
        """The MQTT `stats` payload's fields (docs/schemas/stats.schema.json): the publisher adds
        schema_version, device_id and t."""
        return {
            "uptime_s": self.uptime_s,
            "fps": self.fps,
            "frames_processed": self.frames_processed,
            "frames_skipped": self.frames_skipped,
            "frames_failed": self.frames_failed,
            "frames_bad": self.frames_bad,
            "latency_ms": dataclasses.asdict(self.latency_ms),
            "inference_ms": dataclasses.asdict(self.inference_ms),
            "outbox_depth": self.outbox_depth,
            "events_started": self.events_started,
            "camera_state": self.camera_state,
            "cpu_temp_c": cpu_temp_c,
            "disk_free_mb": disk_free_mb,
            "rss_mb": self.rss_mb,
            "bundle_version": self.bundle_version,
            "journal_error": self.journal_error,
            "journal_writes_dropped": self.journal_writes_dropped,
            "detections_paused": self.detections_paused,
        }

    # ------------------------------------------------------------------ the one reader

    @classmethod
    def from_json(cls, data: Any) -> DaemonStatus:
        """Raises ValueError naming the key whose value has the wrong type."""
        return from_json(cls, data, what="status")

    @classmethod
    def read(cls, path: Path) -> DaemonStatus:
        """Raises FileNotFoundError when there is none and ValueError when it is not a status."""
        try:
            data = json.loads(Path(path).read_text())
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 ({exc.reason})") from None
        return cls.from_json(data)


@dataclass(frozen=True)
class StatusReading:
    """status.json as another process sees it: the status, how old it is, and whether its pid is alive.

    As JSON (`crackd status --json`, the `daemon` of `crackd models status --json`) the two
    observations are keys beside the status's own: `status_age_s` and `pid_alive`.
    """

    status: DaemonStatus
    age_s: float | None
    pid_alive: bool

    def to_json(self) -> dict:
        return {**self.status.to_json(), "status_age_s": self.age_s, "pid_alive": self.pid_alive}

    @classmethod
    def from_json(cls, data: Any) -> StatusReading:
        """From `to_json`'s form (the deploy tool gets it over SSH); raises ValueError like DaemonStatus.from_json."""
        status = DaemonStatus.from_json(data)
        age, alive = data.get("status_age_s"), data.get("pid_alive", False)
        if age is not None and not is_number(age):
            raise ValueError(f"status_age_s: expected a number, got {age!r}")
        if not isinstance(alive, bool):
            raise ValueError(f"pid_alive: expected true or false, got {alive!r}")
        return cls(status, age, alive)
