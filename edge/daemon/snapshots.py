"""Event pictures: the frame (JPEG, or lossless PNG: storage.frame_format) and its overlay JPEG under STATE/snapshots,
within their disk budget, which frames kept to be labelled (edge.daemon.samples, `keep_sample`) share.

Beside them, when the segmenter ran on that frame, its predicted mask as a 0/255 PNG at frame size (small: a mask
is mostly zeros), so that `crack-deploy pull` brings a device's own prediction to the bench as the pre-annotation of
the frame. The journal names the two JPEGs; the mask is named after the frame (StateLayout.snapshot_mask) and goes
with it.

An event's pictures are taken at its start and retaken whenever a later frame becomes its peak, so
the files show the worst moment seen. Pictures come after events: none is taken while the journal
cannot be written or the disk is nearly full, and the oldest are deleted (orphans first) once
`storage.snapshot_budget_mb` is exceeded, the journal forgetting them.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edge.atomic_write import write_bytes_atomic
from edge.config import Config
from edge.daemon.rate_limited_log import RateLimitedLog
from edge.events.decision import START, EventRecord
from edge.events.journal import Journal
from edge.outputs.payloads import Pictures
from edge.sources import Frame

if TYPE_CHECKING:
    from edge.engine.cascade import FrameResult

log = logging.getLogger(__name__)

SNAPSHOT_MIN_FREE_BYTES = 4 * 1024 * 1024  # below this much free disk, pictures are shed so events keep their room


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _not_a_frame(rel: str) -> bool:
    """An overlay or a mask (whose own mask there is none), rather than a frame picture (.jpg or .png)."""
    return rel.endswith((".overlay.jpg", ".mask.png"))


class SnapshotStore:
    """Writes the pictures of events, remembers each open event's peak frame, keeps the budget."""

    def __init__(self, cfg: Config, journal: Journal):
        self.cfg = cfg
        self.journal = journal
        self.state_dir = cfg.state_dir
        self._peak: tuple[Frame, FrameResult] | None = None
        self._snap_seq: int | None = None  # the frame the open event's pictures show
        self._last: dict[str, Pictures] = {}  # per open event: its latest pictures (named again by later messages)
        self._log = RateLimitedLog(log)

    def use_config(self, cfg: Config) -> None:
        """A reload: budget, quality and on/off apply from the next picture (the state directory stays)."""
        self.cfg = cfg

    def note_peak(self, frame: Frame, result: FrameResult) -> None:
        """The open event's peak is this frame: a later record retakes the pictures from it."""
        self._peak = (frame, result)

    def last(self, uuid: str) -> Pictures | None:
        """The pictures last taken for an open event (an `end` without new pictures names them)."""
        return self._last.get(uuid)

    def event_ended(self, uuid: str) -> None:
        self._last.pop(uuid, None)
        self._peak, self._snap_seq = None, None

    def take(
        self, record: EventRecord, current: tuple[Frame, FrameResult] | None, active: str | None, journal_blocked: bool
    ) -> Pictures | None:
        """Write (or rewrite with a better peak) the event's frame + overlay JPEGs; returns their relative paths.

        `current`: the frame in hand (a start's pictures); `active`: the open event's uuid (None when none is open).
        """
        st = self.cfg.storage
        if not st.snapshots or st.snapshot_budget_mb <= 0:
            return None
        if record.kind == START and current is not None:
            source = current
        elif self._peak is not None and self._peak[0].seq != self._snap_seq and active in (None, record.uuid):
            source = self._peak
        else:
            return None
        if journal_blocked:
            self._log(
                logging.WARNING,
                "snapshot for event %s skipped: the journal cannot be written (events before pictures)",
                record.uuid,
            )
            return None
        if not self._room_for(f"snapshot for event {record.uuid}"):
            return None
        frame, result = source
        day = time.strftime("%Y%m%d", time.gmtime(record.started_at))
        layout = self.cfg.layout
        rel_frame, rel_overlay = layout.snapshot_pictures(day, record.uuid, self._frame_suffix())
        rel_mask = layout.snapshot_mask(rel_frame)
        try:
            from edge.engine.overlay import draw_overlay

            self._write_frame(rel_frame, frame)
            overlay = cv2.cvtColor(draw_overlay(frame.rgb, result), cv2.COLOR_RGB2BGR)
            self._write_jpeg(rel_overlay, overlay)
            self._write_mask(rel_mask, result)
        except Exception as exc:
            self._log(logging.ERROR, "snapshot for event %s failed: %s", record.uuid, exc)
            return None
        self._snap_seq = frame.seq
        pictures = Pictures(rel_frame, rel_overlay, frame.seq)
        self._last[record.uuid] = pictures
        self._enforce_budget(keep={rel_frame, rel_overlay, rel_mask})
        return pictures

    def keep_sample(self, uuid: str, frame: Frame, result: FrameResult | None) -> str | None:
        """A frame kept to be labelled (edge.daemon.samples): its picture (and predicted mask) within the budget.

        Returns the frame's path relative to the state directory; None when pictures are off or cannot be taken."""
        st = self.cfg.storage
        if not st.snapshots or st.snapshot_budget_mb <= 0:
            return None
        if not self._room_for(f"frame to label {uuid}"):
            return None
        day = time.strftime("%Y%m%d", time.gmtime(frame.t))
        rel_frame = self.cfg.layout.snapshot_pictures(day, uuid, self._frame_suffix())[0]
        rel_mask = self.cfg.layout.snapshot_mask(rel_frame)
        try:
            self._write_frame(rel_frame, frame)
            if result is not None:
                self._write_mask(rel_mask, result)
        except Exception as exc:
            self._log(logging.ERROR, "frame to label %s could not be written: %s", uuid, exc)
            return None
        self._enforce_budget(keep={rel_frame, rel_mask})
        return rel_frame

    def _room_for(self, what: str) -> bool:
        """False (and a warning) when the disk is nearly full: pictures are shed so that events keep their room."""
        free = _free_bytes(self.state_dir)
        if free is not None and free < SNAPSHOT_MIN_FREE_BYTES:
            self._log(
                logging.WARNING,
                "%s skipped: only %.1f MB free in %s (events before pictures)",
                what,
                free / 1024 / 1024,
                self.state_dir,
            )
            return False
        return True

    def _frame_suffix(self) -> str:
        return ".png" if self.cfg.storage.frame_format == "png" else ".jpg"

    def _write_frame(self, rel: str, frame: Frame) -> None:
        """PNG: exactly the frame the model saw (lossless, the predicted mask's size); JPEG: as events always had."""
        (self.state_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".png"):
            ok, data = cv2.imencode(".png", np.ascontiguousarray(cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)))
            if not ok:
                raise OSError("PNG encoding failed")
            write_bytes_atomic(self.state_dir / rel, data.tobytes())
            return
        picture = frame.main_bgr if frame.main_bgr is not None else cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)
        self._write_jpeg(rel, picture)

    def _write_jpeg(self, rel: str, bgr: np.ndarray) -> None:
        ok, data = cv2.imencode(
            ".jpg", np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, self.cfg.storage.snapshot_quality]
        )
        if not ok:
            raise OSError("JPEG encoding failed")
        write_bytes_atomic(self.state_dir / rel, data.tobytes())  # no half-written picture left behind

    def _write_mask(self, rel_mask: str, result: FrameResult) -> None:
        """The frame's predicted mask beside it; a mask of an earlier peak is removed when this frame has none."""
        mask = result.mask
        if mask is None:
            (self.state_dir / rel_mask).unlink(missing_ok=True)
            return
        ok, data = cv2.imencode(".png", np.ascontiguousarray(np.where(mask > 0, 255, 0).astype(np.uint8)))
        if not ok:
            raise OSError("PNG encoding failed")
        write_bytes_atomic(self.state_dir / rel_mask, data.tobytes())

    def delete(self, relpaths: list[str]) -> None:
        """Remove pictures the journal no longer names (retention), a frame's mask with it; missing files are fine."""
        for rel in relpaths:
            for path in (rel,) if _not_a_frame(rel) else (rel, self.cfg.layout.snapshot_mask(rel)):
                try:
                    (self.state_dir / path).unlink()
                except OSError:
                    pass

    def _enforce_budget(self, keep: set[str]) -> None:
        root = self.cfg.layout.snapshots
        budget = self.cfg.storage.snapshot_budget_mb * 1024 * 1024
        files = {}
        for dirpath, _dirs, names in os.walk(root):
            for n in names:
                p = Path(dirpath) / n
                try:
                    files[str(p.relative_to(self.state_dir))] = p.stat()
                except OSError:
                    pass
        total = sum(s.st_size for s in files.values())
        if total <= budget:
            return
        known = self.journal.snapshot_order()
        mask_of = self.cfg.layout.snapshot_mask
        # A frame's mask is not in the journal but belongs to the frame: deleted with it, not as an orphan.
        owned = set(known) | {mask_of(rel) for rel in known}
        orphans = sorted((r for r in files if r not in owned), key=lambda r: files[r].st_mtime)
        for rel in orphans + known:
            if total <= budget:
                break
            if rel in keep or rel not in files:
                continue
            try:
                (self.state_dir / rel).unlink()
            except OSError:
                continue
            total -= files[rel].st_size
            self.journal.forget_snapshot(rel)
            log.info("snapshot budget: deleted %s", rel)
            mask = mask_of(rel)
            if mask in files and mask not in keep:
                try:
                    (self.state_dir / mask).unlink()
                    total -= files[mask].st_size
                except OSError:
                    pass
