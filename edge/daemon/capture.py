"""The capture thread: reads the camera (through ResilientSource) into the FrameSlot the inference loop takes from.

Capture and inference run apart so a slow model never makes the camera's buffers overflow:
a live camera keeps only its newest frame (the ones replaced are counted as skipped), while
file and generated sources with fps 0 wait for the slot instead, so bench replays skip nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from edge.config import SourceConfig
from edge.sources import Frame, FrameSource, ResilientSource, SourceExhausted, SourceFailed, SourceHealth
from edge.vocabulary import CameraState

log = logging.getLogger(__name__)


class FrameSlot:
    """The mailbox between capture and inference.

    Live sources (`put(wait=False)`): one frame, the newest wins, each replaced frame counted
    as skipped, so inference always works on the latest picture and nothing queues up.
    Replayed sources (`wait=True`: files at fps 0): a short bounded queue the source blocks on,
    so every frame is processed and decoding runs ahead of inference.
    """

    def __init__(self, depth: int = 2):
        self._cond = threading.Condition()
        self._frames: deque[Frame] = deque()
        self.depth = depth
        self.skipped = 0
        self.closed = False

    def put(self, frame: Frame, wait: bool = False, stop: threading.Event | None = None) -> None:
        with self._cond:
            if wait:
                while len(self._frames) >= self.depth and not self.closed and not (stop and stop.is_set()):
                    self._cond.wait(0.1)
            else:
                self.skipped += len(self._frames)
                self._frames.clear()
            self._frames.append(frame)
            self._cond.notify_all()

    def get(self, timeout: float) -> Frame | None:
        with self._cond:
            if not self._frames and not self.closed:
                self._cond.wait(timeout)
            frame = self._frames.popleft() if self._frames else None
            self._cond.notify_all()
            return frame

    @property
    def pending(self) -> int:
        return len(self._frames)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class Capture:
    """Owns the source and the thread reading it; reports the camera's state and a capture call that hangs."""

    def __init__(
        self,
        source: FrameSource,
        options: SourceConfig,
        slot: FrameSlot,
        stop: threading.Event,
        on_state: Callable[[CameraState, dict], None] | None = None,
    ):
        """`on_state(state, info)`: called on every camera state change (the supervisor publishes it)."""
        self.source = source
        self.options = options
        self.slot = slot
        self.stop_event = stop
        self.state: CameraState = "starting"
        self.last_capture_mono: float | None = None
        self.exit_code = 0  # 1 once the source failed for good (not a normal end)
        self._on_state = on_state
        self.resilient = ResilientSource(
            source,
            options.read_timeout_s,
            options.retry_initial_s,
            options.retry_max_s,
            on_state=self._state_changed,
            stop=stop,
        )
        self._thread: threading.Thread | None = None

    @property
    def health(self) -> SourceHealth:
        return self.resilient.health

    @property
    def busy_since(self) -> float | None:
        """When the call into the camera driver now running began (monotonic), None between calls."""
        return self.resilient.busy_since

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="capture", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def close(self) -> None:
        """Close the source (after the thread was asked to stop); a failing close is not an error at a stop."""
        try:
            self.resilient.close()
        except Exception:
            pass

    def check_hang(self, now: float, limit_s: float) -> None:
        """A capture call that never returns (a driver hang no timeout catches) is reported as a stall.

        The thread cannot be interrupted; frames stop, so the watchdog pings stop and systemd restarts us.
        """
        if self.last_capture_mono is None:
            return
        waiting_for_frames = not self.slot.pending and not self.slot.closed  # not merely blocked on a full queue
        if self.resilient.state == "ok" and waiting_for_frames and now - self.last_capture_mono > limit_s:
            self.resilient.mark_stalled(f"no frame from the source for {now - self.last_capture_mono:.0f}s")

    def _loop(self) -> None:
        wait = bool(getattr(self.source, "lossless", False))
        while not self.stop_event.is_set():
            try:
                frame = self.resilient.read()
            except SourceExhausted:
                log.info("source finished: stopping after the last frame")
                self.slot.close()
                return
            except SourceFailed as exc:  # not an end: exit non-zero so Restart=on-failure (and whoever watches) acts
                log.error("%s; stopping with exit code 1", exc)
                self.exit_code = 1
                self.slot.close()
                return
            except ResilientSource.Stopped:
                return
            except Exception:
                log.exception("capture thread: unexpected error; retrying")
                self.stop_event.wait(1.0)
                continue
            self.last_capture_mono = time.monotonic()
            self.slot.put(frame, wait=wait, stop=self.stop_event)

    def _state_changed(self, state: CameraState, info: dict) -> None:
        self.state = state
        if self._on_state is not None:
            self._on_state(state, info)
