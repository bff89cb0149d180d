"""Debounce per-frame results into events: a crack passing the camera gives one alert, not fifty.

A pure state machine (no clock, no I/O): the caller feeds each frame's score,
time and measurements; it returns the `EventRecord`s to journal and publish.

- idle -> open: a frame counts as a crack when `score >= threshold` and the
  segmenter, if it ran on the frame, measured a crack (edge.engine.verdict: the
  classifier is a gate, the segmenter confirms); an event starts when k of the
  last n frames counted.
- open: a frame still counts while `score >= threshold - hysteresis` (and the
  segmenter, if it ran, measured a crack), so a score wobbling around the
  threshold does not split one crack into several events.
  The largest measurements seen are kept (peak); an `update` is emitted when the
  peak improved, at most every `update_interval_s`.
- open -> idle: after m consecutive clear frames, `end`.
"""

from __future__ import annotations

import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.engine.verdict import counts_as_crack

START, UPDATE, END = "start", "update", "end"


@dataclass(frozen=True)
class DecisionParams:
    threshold: float
    hysteresis: float = 0.1
    start_k: int = 2
    start_n: int = 3
    end_m: int = 5
    update_interval_s: float = 2.0

    def __post_init__(self):
        if not 1 <= self.start_k <= self.start_n:
            raise ValueError(f"decision: need 1 <= k <= n, got k={self.start_k} n={self.start_n}")
        if self.end_m < 1:
            raise ValueError(f"decision: end_m must be >= 1, got {self.end_m}")

    @property
    def threshold_off(self) -> float:
        return max(0.0, self.threshold - self.hysteresis)


@dataclass(frozen=True)
class FrameObservation:
    """What the decision needs from one processed frame."""

    seq: int
    t: float  # wall-clock seconds (time.time())
    score: float
    measurements: dict | None = None  # CrackMeasurements.to_dict() when the frame was segmented
    confirmed: bool | None = None  # the segmenter measured a crack (FrameResult.confirmed); None: it did not run


@dataclass(frozen=True)
class EventRecord:
    """One change of an event: `start`, `update` (peak improved) or `end`."""

    kind: str
    uuid: str
    revision: int  # 0 for start, then 1, 2, ... per record of this event
    started_at: float
    t: float  # time of the frame that produced this record
    ended_at: float | None
    frames: int  # frames that counted as crack so far
    peak_score: float
    peak_measurements: dict | None
    peak_frame_seq: int
    first_frame_seq: int
    last_frame_seq: int
    end_reason: str | None = None  # "clear" | "shutdown"

    @property
    def state(self) -> str:
        return "ended" if self.kind == END else "open"


def _size(measurements: dict | None) -> float:
    """How 'big' a measured crack is, for choosing the peak: area first, then length."""
    if not measurements:
        return -1.0
    return float(measurements.get("total_area_px", 0)) + 1e-6 * float(measurements.get("length_px", 0))


@dataclass
class _Open:
    uuid: str
    started_at: float
    first_frame_seq: int
    frames: int = 0
    peak_score: float = 0.0
    peak_measurements: dict | None = None
    peak_frame_seq: int = 0
    last_frame_seq: int = 0
    last_t: float = 0.0
    clear_run: int = 0
    revision: int = 0
    dirty: bool = False  # peak improved since the last record
    last_record_t: float = 0.0


@dataclass
class Decision:
    """The debounce state machine; feed it with `observe()` once per processed frame."""

    params: DecisionParams
    _window: deque = field(init=False)
    _open: _Open | None = field(init=False, default=None)
    new_uuid: Callable[[], str] = field(default=lambda: str(uuidlib.uuid4()))

    def __post_init__(self):
        self._window = deque(maxlen=self.params.start_n)

    @property
    def peak_frame_seq(self) -> int | None:
        """Frame seq of the open event's peak (the daemon keeps that frame for the snapshot)."""
        return self._open.peak_frame_seq if self._open else None

    @property
    def active(self) -> str | None:
        """uuid of the open event, if any."""
        return self._open.uuid if self._open else None

    def set_params(self, params: DecisionParams) -> None:
        """Swap thresholds (config reload) without losing an open event."""
        self.params = params
        window = list(self._window)[-params.start_n :]
        self._window = deque(window, maxlen=params.start_n)

    def observe(self, obs: FrameObservation) -> list[EventRecord]:
        p = self.params
        if self._open is None:
            self._window.append(obs if counts_as_crack(obs.score, p.threshold, obs.confirmed) else None)
            hits = [o for o in self._window if o is not None]
            if len(hits) < p.start_k:
                return []
            ev = _Open(uuid=self.new_uuid(), started_at=hits[0].t, first_frame_seq=hits[0].seq)
            for o in hits:
                self._absorb(ev, o)
            ev.dirty = False
            ev.last_record_t = obs.t
            self._open = ev
            self._window.clear()
            return [self._record(ev, START, obs.t)]
        ev = self._open
        if counts_as_crack(obs.score, p.threshold_off, obs.confirmed):
            ev.clear_run = 0
            self._absorb(ev, obs)
            if ev.dirty and obs.t - ev.last_record_t >= p.update_interval_s:
                ev.dirty = False
                ev.last_record_t = obs.t
                ev.revision += 1
                return [self._record(ev, UPDATE, obs.t)]
            return []
        ev.clear_run += 1
        if ev.clear_run >= p.end_m:
            return [self._close(ev, obs.t, "clear")]
        return []

    def flush(self, t: float, reason: str = "shutdown") -> list[EventRecord]:
        """End the open event now (daemon stopping); returns its `end` record, if any."""
        if self._open is None:
            return []
        return [self._close(self._open, t, reason)]

    def _close(self, ev: _Open, t: float, reason: str) -> EventRecord:
        ev.revision += 1
        record = self._record(ev, END, t, ended_at=ev.last_t, reason=reason)
        self._open = None
        self._window.clear()
        return record

    @staticmethod
    def _absorb(ev: _Open, obs: FrameObservation) -> None:
        ev.frames += 1
        ev.last_frame_seq = obs.seq
        ev.last_t = obs.t
        better_shape = _size(obs.measurements) > _size(ev.peak_measurements)
        better_score = obs.score > ev.peak_score
        if better_score:
            ev.peak_score = obs.score
            if ev.peak_measurements is None:
                ev.peak_frame_seq = obs.seq
        if better_shape:
            ev.peak_measurements = obs.measurements
            ev.peak_frame_seq = obs.seq
        if better_score or better_shape:
            ev.dirty = True

    @staticmethod
    def _record(
        ev: _Open, kind: str, t: float, ended_at: float | None = None, reason: str | None = None
    ) -> EventRecord:
        return EventRecord(
            kind=kind,
            uuid=ev.uuid,
            revision=ev.revision,
            started_at=ev.started_at,
            t=t,
            ended_at=ended_at,
            frames=ev.frames,
            peak_score=ev.peak_score,
            peak_measurements=ev.peak_measurements,
            peak_frame_seq=ev.peak_frame_seq,
            first_frame_seq=ev.first_frame_seq,
            last_frame_seq=ev.last_frame_seq,
            end_reason=reason,
        )
