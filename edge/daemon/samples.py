"""Frames worth labelling, kept on the device beside the events: crack-free samples, uncertain frames, missed cracks.

Each kept frame is a row of the journal's events table with a `kind` (edge.vocabulary.SAMPLE_KINDS), ended and never
announced (no MQTT, no outbox), and its picture under STATE/snapshots within `storage.snapshot_budget_mb` (the oldest
unlabelled pictures go first). `crackd events list --kind ...` shows them, `crackd events label` gives them a verdict,
and `crack-deploy pull` brings the labelled ones to the bench.

- crack-free: a frame with no crack and no open event, at most one every `storage.sample_crack_free_every_s`;
- uncertain: a frame whose classifier score lies within `storage.sample_uncertain_band` of the gate threshold, at
  most one every `storage.sample_uncertain_every_s`;
- missed: the frames of the last seconds, held in memory (MissedBuffer), stored when an operator runs
  `crackd events flag-missed` (a crack went by and the model said nothing): labelled `crack`.

`flag-missed` talks to the running daemon through two files in the state directory (StateLayout.flag_missed_request
and flag_missed_answer): the command writes the request, the main loop takes it between two frames (`poll`) and
answers. Runs on the main thread, like the rest of a frame's path.
"""

from __future__ import annotations

import json
import logging
import time
import uuid as uuidlib
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge.atomic_write import write_bytes_atomic
from edge.config import Config
from edge.daemon.rate_limited_log import RateLimitedLog
from edge.daemon.snapshots import SnapshotStore
from edge.events.journal import Journal, SampleWrite
from edge.sources import Frame

if TYPE_CHECKING:
    from edge.engine.bundle import LoadedBundle as Bundle
    from edge.engine.cascade import FrameResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldFrame:
    """A recent frame as the model saw it (a copy: a source may reuse its buffers)."""

    rgb: np.ndarray
    seq: int
    t: float
    score: float


class MissedBuffer:
    """The last `seconds` of frames, at most `capacity` of them spread evenly over that time (memory stays bounded:
    capacity x one frame's bytes); older ones fall out."""

    def __init__(self, seconds: float, capacity: int):
        self.seconds = seconds
        self.frames: deque[HeldFrame] = deque(maxlen=capacity)

    def resize(self, seconds: float, capacity: int) -> None:
        if capacity != self.frames.maxlen:
            self.frames = deque(self.frames, maxlen=capacity)
        self.seconds = seconds

    def offer(self, frame: Frame, score: float) -> None:
        if self.seconds <= 0:
            self.frames.clear()
            return
        assert self.frames.maxlen is not None
        spacing = self.seconds / self.frames.maxlen
        if self.frames and frame.t - self.frames[-1].t < spacing:
            return
        self.frames.append(HeldFrame(np.array(frame.rgb, copy=True), frame.seq, frame.t, score))

    def last(self, seconds: float, now: float) -> list[HeldFrame]:
        return [f for f in self.frames if f.t >= now - seconds]

    @property
    def nbytes(self) -> int:
        return sum(f.rgb.nbytes for f in self.frames)


class SampleKeeper:
    """Decides which frames are kept to be labelled and writes them (picture, then journal row)."""

    def __init__(self, cfg: Config, journal: Journal, snapshots: SnapshotStore):
        self.cfg = cfg
        self.journal = journal
        self.snapshots = snapshots
        st = cfg.storage
        self.missed = MissedBuffer(st.missed_buffer_s, st.missed_buffer_frames)
        self.kept: dict[str, int] = {}  # per kind, since start (status, tests)
        self._last_kept: dict[str, float] = {}
        self._log = RateLimitedLog(log)

    def use_config(self, cfg: Config) -> None:
        self.cfg = cfg
        self.missed.resize(cfg.storage.missed_buffer_s, cfg.storage.missed_buffer_frames)

    def observe(self, frame: Frame, result: FrameResult, threshold: float, event_open: bool, bundle: Bundle) -> None:
        """One processed frame: held for flag-missed, and kept when it is a crack-free or uncertain sample."""
        st = self.cfg.storage
        score = float(result.score)
        self.missed.offer(frame, score)
        if st.sample_uncertain_band > 0 and abs(score - threshold) <= st.sample_uncertain_band:
            self._maybe_keep("uncertain", st.sample_uncertain_every_s, frame, result, bundle)
        elif st.sample_crack_free_every_s > 0 and not result.crack and not event_open:
            self._maybe_keep("crack-free", st.sample_crack_free_every_s, frame, result, bundle)

    def _maybe_keep(self, kind: str, every_s: float, frame: Frame, result: FrameResult, bundle: Bundle) -> None:
        last = self._last_kept.get(kind)
        if last is not None and frame.t - last < every_s:
            return
        self._last_kept[kind] = frame.t
        self._keep(kind, frame, result, float(result.score), bundle)

    def _keep(
        self,
        kind: str,
        frame: Frame,
        result: FrameResult | None,
        score: float,
        bundle: Bundle,
        label: str | None = None,
        note: str | None = None,
    ) -> str | None:
        uuid = str(uuidlib.uuid4())
        rel = self.snapshots.keep_sample(uuid, frame, result)
        if rel is None:
            return None
        sample = SampleWrite(
            uuid, kind, frame.t, frame.seq, score, bundle.version, bundle.sha256, self.cfg.device_id, rel, label, note
        )
        try:
            self.journal.record_samples([sample])
        except Exception as exc:  # a frame to label never stops the daemon (JournalError, sqlite3, OSError)
            self._log(logging.ERROR, "%s frame %d not kept: the journal could not record it (%s)", kind, frame.seq, exc)
            self.snapshots.delete([rel])
            return None
        self.kept[kind] = self.kept.get(kind, 0) + 1
        return uuid

    # ------------------------------------------------------------------ crackd events flag-missed

    def poll(self, bundle: Bundle) -> None:
        """Between two frames: serve a waiting `crackd events flag-missed` request, if any."""
        layout = self.cfg.layout
        request_path = layout.flag_missed_request
        try:
            raw = request_path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            self._log(logging.ERROR, "%s: cannot read the flag-missed request (%s)", request_path, exc)
            return
        request_path.unlink(missing_ok=True)
        try:
            request = json.loads(raw)
            request_id, seconds = str(request["id"]), float(request["seconds"])
            note = request.get("note")
        except (ValueError, KeyError, TypeError) as exc:
            log.error("%s: not a flag-missed request (%s); ignored", request_path, exc)
            return
        held = self.missed.last(seconds, time.time())
        stored = []
        for f in held:
            frame = Frame(rgb=f.rgb, seq=f.seq, t=f.t)
            uuid = self._keep("missed", frame, None, f.score, bundle, "crack", note)
            if uuid is not None:
                stored.append(uuid)
        log.warning("flag-missed: %d frame(s) of the last %.0f s kept as a missed crack", len(stored), seconds)
        answer = {"id": request_id, "held": len(held), "stored": stored}
        try:
            write_bytes_atomic(layout.flag_missed_answer, json.dumps(answer).encode())
        except OSError as exc:
            self._log(logging.ERROR, "%s: cannot answer flag-missed (%s)", layout.flag_missed_answer, exc)
