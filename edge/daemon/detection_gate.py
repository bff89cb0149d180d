"""Whether the pipeline may take the next frame: never a detection the daemon cannot keep.

A detection is kept when the journal takes it, or when the held-writes reserve keeps it across a stop
(edge.daemon.journal_writer). When neither is sure (a start on a full disk left no reserve, or the held
writes near the reserve's budget) the main loop takes no frame: a replayed source's frames stay where
they are, a live camera's newest frame waits in the slot (older ones are counted as skipped, as always).
While closed, the gate retries (journal the held writes, make the reserves again) and opens by itself
once there is room. Each change is logged and handed to `on_change` (status.json, MQTT status, metrics).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edge.daemon.journal_writer import JournalWriter

log = logging.getLogger(__name__)

RETRY_S = 1.0  # while closed: how often to retry the held writes and the reserves


class DetectionGate:
    def __init__(self, writer: JournalWriter, on_change: Callable[[str | None], None] | None = None):
        self.writer = writer
        self.reason: str | None = None  # why frames are not taken now; None while detections are kept
        self._on_change = on_change
        self._next_try = 0.0

    @property
    def open(self) -> bool:
        return self.reason is None

    def check(self) -> bool:
        """True when the next frame may be taken (called by the main loop before each frame)."""
        if self.reason is not None:
            now = time.monotonic()
            if now >= self._next_try:
                self._next_try = now + RETRY_S
                self.writer.make_room_again()
        reason = self.writer.not_keeping_reason()
        if reason != self.reason:
            self._changed(reason)
        return reason is None

    def _changed(self, reason: str | None) -> None:
        was, self.reason = self.reason, reason
        if reason is None:
            log.warning("keeping detections again: taking frames (there is room to keep what is detected)")
        elif was is None:
            log.error("%s; no frame is taken until space returns (frames are left to the camera)", reason)
        if self._on_change is not None:
            self._on_change(reason)
