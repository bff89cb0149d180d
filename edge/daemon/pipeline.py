"""One frame's path through the daemon: cascade -> decision -> event pictures -> journal (+ outbox) -> publisher,
and frames worth labelling (edge.daemon.samples).

Runs on the main thread, one frame at a time, so the frame in hand is always finished before a
stop or a reload swaps anything. Events and their MQTT messages are handed to the journal writer
as one transaction; the publisher only sends what the outbox holds.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from edge.config import Config
from edge.daemon.engine import Engine, decision_params
from edge.daemon.journal_writer import JournalWriter
from edge.daemon.rate_limited_log import RateLimitedLog
from edge.daemon.samples import SampleKeeper
from edge.daemon.snapshots import SnapshotStore
from edge.events.decision import END, START, Decision, EventRecord, FrameObservation
from edge.events.journal import EventWrite, FrameRow, OutboxMessage
from edge.outputs.base import EventOut, EventOutput, Pictures
from edge.outputs.publisher import Publisher
from edge.sources import Frame
from edge.timestamps import iso_utc

if TYPE_CHECKING:
    from edge.engine.cascade import FrameResult
    from edge.outputs.metrics import Metrics

log = logging.getLogger(__name__)

WINDOW = 1000  # frames in the latency percentiles


def close_interrupted_events(writer: JournalWriter, outputs: list[EventOutput]) -> None:
    """Events left open by a crash or power cut are ended now (reason `interrupted`) and announced."""
    held = writer.held_event_ends()
    for row in writer.journal.list_events(state="open", newest_first=False):
        if row.uuid in held:  # its real end is among the held writes
            continue
        record = EventRecord(
            kind=END,
            uuid=row.uuid,
            revision=row.revision + 1,
            started_at=row.started_at,
            t=time.time(),
            ended_at=row.updated_at,
            frames=row.frames,
            peak_score=row.peak_score,
            peak_measurements=row.peak_measurements,
            peak_frame_seq=row.peak_frame_seq,
            first_frame_seq=row.first_frame_seq,
            last_frame_seq=row.last_frame_seq,
            end_reason="interrupted",
        )
        write = EventWrite(record, row.bundle_version, row.bundle_sha256, row.device_id or writer.cfg.device_id)
        pictures = Pictures(row.snapshot, row.overlay, None) if row.snapshot and row.overlay else None
        event = EventOut(write, pictures, new_pictures=False)
        messages = [m for output in outputs for m in output.messages(event)]
        log.warning("event %s was left open by an interrupted run; ended it (reason: interrupted)", record.uuid)
        writer.write_events(([], [write], messages))


def _percentile(values: deque[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.fromiter(values, float), q)), 2)


class FramePipeline:
    """Runs each frame through the engine and the debounce, records what it decided, and counts."""

    def __init__(
        self,
        cfg: Config,
        engine: Engine,
        writer: JournalWriter,
        snapshots: SnapshotStore,
        outputs: list[EventOutput],
        publisher: Publisher | None,
        metrics: Metrics | None,
    ):
        """`outputs`: where events go (edge.outputs.base); `publisher`: the MQTT connection, for `frame` messages."""
        self.cfg = cfg
        self.engine = engine
        self.decision = Decision(decision_params(cfg, engine))
        self.writer = writer
        self.snapshots = snapshots
        self.samples = SampleKeeper(cfg, writer.journal, snapshots)  # frames kept to be labelled
        self.outputs = outputs
        self.publisher = publisher
        self.metrics = metrics
        self.frames_processed = 0
        self.frames_failed = 0
        self.events_started = 0
        self.last_frame_mono: float | None = None
        self.latency_ms: deque[float] = deque(maxlen=WINDOW)
        self.inference_ms: deque[float] = deque(maxlen=WINDOW)
        self.fps = 0.0
        self._fps_count, self._fps_t = 0, time.monotonic()
        self._fail_log = RateLimitedLog(log)

    def swap(self, cfg: Config, engine: Engine) -> None:
        """A reload, between two frames: the next frame runs on the new engine and settings; an open event goes on."""
        self.cfg = cfg
        self.engine = engine
        self.decision.set_params(decision_params(cfg, engine))
        self.samples.use_config(cfg)

    # ------------------------------------------------------------------ figures

    def sample_fps(self, now: float) -> None:
        """Called about once a second: the frame rate since the last call, smoothed."""
        rate = (self.frames_processed - self._fps_count) / (now - self._fps_t)
        self.fps = rate if self.fps == 0 else 0.5 * self.fps + 0.5 * rate
        self._fps_count, self._fps_t = self.frames_processed, now

    def latency_percentiles(self) -> tuple[float | None, float | None]:
        return _percentile(self.latency_ms, 50), _percentile(self.latency_ms, 95)

    def inference_percentiles(self) -> tuple[float | None, float | None]:
        return _percentile(self.inference_ms, 50), _percentile(self.inference_ms, 95)

    def last_frame_age_s(self) -> float | None:
        return None if self.last_frame_mono is None else time.monotonic() - self.last_frame_mono

    # ------------------------------------------------------------------ the frame path

    def process(self, frame: Frame) -> None:
        engine = self.engine
        try:
            result = engine.cascade.process(frame.rgb)
        except Exception as exc:
            self.frames_failed += 1
            self._fail_log(logging.ERROR, "frame %d could not be processed: %s: %s", frame.seq, type(exc).__name__, exc)
            return
        measurements = result.measurements.to_dict() if result.measurements is not None else None
        obs = FrameObservation(
            seq=frame.seq, t=frame.t, score=float(result.score), measurements=measurements, confirmed=result.confirmed
        )
        records = self.decision.observe(obs)
        if self.decision.active and self.decision.peak_frame_seq == frame.seq:
            self.snapshots.note_peak(frame, result)
        event_uuid = self.decision.active or (records[-1].uuid if records else None)
        policy = self.cfg.storage.record_frames
        frame_row = None
        if policy == "all" or (policy == "cracks" and (result.crack or event_uuid)):
            frame_row = FrameRow(
                t=frame.t,
                seq=frame.seq,
                crack=bool(result.crack),
                score=float(result.score),
                segmented=bool(result.segmented),
                measurements=measurements,
                latency_ms=round(result.timings_ms.get("total", 0.0), 3),
                bundle_version=engine.bundle.version,
                event_uuid=event_uuid,
                ref=frame.ref,
            )
        self.writer.retry_held()
        self.record(records, frame_row, (frame, result))
        if not self.writer.blocked:
            self.samples.observe(
                frame, result, engine.cascade.threshold, self.decision.active is not None, engine.bundle
            )
        self.frames_processed += 1
        now = time.monotonic()
        self.last_frame_mono = now
        self.latency_ms.append((now - frame.mono) * 1000.0)
        if self.metrics is not None:
            self.metrics.observe_frame(result, now - frame.mono)
        self.inference_ms.append(result.timings_ms.get("total", 0.0))
        if self.publisher is not None:
            self.publisher.publish_frame(
                lambda: {
                    "seq": frame.seq,
                    "t": iso_utc(frame.t),
                    "crack": bool(result.crack),
                    "score": round(float(result.score), 4),
                    "segmented": bool(result.segmented),
                    "measurements": {k: v for k, v in measurements.items() if k != "components"}
                    if measurements
                    else None,
                    "event_uuid": event_uuid,
                    "latency_ms": round(result.timings_ms.get("total", 0.0), 2),
                    "bundle_version": engine.bundle.version,
                }
            )

    def record(
        self, records: list[EventRecord], frame_row: FrameRow | None, current: tuple[Frame, FrameResult] | None
    ) -> None:
        """Pictures for event records, then ONE journal transaction with every output's outbox messages."""
        b = self.engine.bundle
        writes: list[EventWrite] = []
        messages: list[OutboxMessage] = []
        for r in records:
            taken = self.snapshots.take(r, current, self.decision.active, self.writer.blocked)
            pictures = taken or self.snapshots.last(r.uuid)
            write = EventWrite(
                r,
                b.version,
                b.sha256,
                self.cfg.device_id,
                taken.frame if taken else None,
                taken.overlay if taken else None,
            )
            writes.append(write)
            event = EventOut(write, pictures, new_pictures=taken is not None)
            for output in self.outputs:
                messages += output.messages(event)
            if r.kind == START:
                self.events_started += 1
                log.warning(
                    "crack event %s started (score %.2f)",
                    r.uuid,
                    r.peak_score,
                    extra={"EVENT_UUID": r.uuid, "EVENT_TYPE": r.kind},
                )
            elif r.kind == END:
                log.info(
                    "crack event %s ended after %d frames (peak score %.2f)",
                    r.uuid,
                    r.frames,
                    r.peak_score,
                    extra={"EVENT_UUID": r.uuid, "EVENT_TYPE": r.kind},
                )
                self.snapshots.event_ended(r.uuid)
        self.writer.write(frame_row, writes, messages)

    def finish(self) -> None:
        """At a stop: the open event ends (reason `shutdown`) and is recorded."""
        records = self.decision.flush(time.time(), "shutdown")
        if records:
            self.record(records, None, None)
