"""The frame source contract: what an adapter returns, how it fails, and what a registered adapter declares.

`FrameSource.open() / read(timeout) -> Frame / close()`. Every adapter returns RGB uint8 frames. Failures are
exceptions of a few kinds, so the wrapper (edge.sources.resilient) knows what to do with them:

- `SourceTimeout`: no frame within the timeout (a stalled camera) -> retried;
- `SourceError`: the source failed (unplugged, stream dropped, folder gone) -> closed and reopened with
  exponential backoff;
- `SourceExhausted`: a finite source (folder or video file, not looped) ended;
- `SourceFailed`: the source can never deliver (a corrupt or truncated video file): not an end, so the daemon
  exits non-zero and systemd's `Restart=on-failure` acts.

`SourceAdapter` adds what `source.type` needs to choose and build an adapter from the config.
"""

from __future__ import annotations

import abc
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np


class SourceError(Exception):
    """The source failed and should be reopened."""


class SourceTimeout(SourceError):
    """No frame arrived within the timeout (stall)."""


class SourceExhausted(Exception):
    """A finite source has no more frames."""


class SourceFailed(Exception):
    """The source can never deliver again (corrupt or truncated video file); the message says why."""


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray  # HxWx3 uint8, RGB
    seq: int  # 1, 2, ... per source, across reconnects
    t: float  # wall-clock capture time (time.time())
    ref: str | None = None  # where it came from (file name), if meaningful
    # Full-size frame for snapshots, in OpenCV's B, G, R order: picamera2's main stream as libcamera
    # delivers it, left unconverted because only the few frames that become snapshots are ever encoded.
    main_bgr: np.ndarray | None = None
    mono: float = field(default_factory=time.monotonic)  # capture time on the monotonic clock (latency)


@dataclass
class SourceHealth:
    frames: int = 0
    bad_frames: int = 0  # unreadable frames skipped (corrupt files, empty buffers)
    stalls: int = 0  # reads that timed out
    errors: int = 0  # failures that needed a reconnect
    reconnects: int = 0  # successful reopenings after a failure
    last_error: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class FrameSource(abc.ABC):
    """Interface: adapters implement `open` and `read`, and `close` when they hold something."""

    name: ClassVar[str] = "source"
    # True for sources whose frames wait for us (files, generated): the daemon does
    # not skip their frames unless they are paced (fps > 0).
    lossless = False

    def __init__(self) -> None:
        self.health = SourceHealth()
        self._seq = 0

    @abc.abstractmethod
    def open(self) -> None:
        """Start delivering frames; raise SourceError (retried) or SourceFailed (never will)."""

    @abc.abstractmethod
    def read(self, timeout: float) -> Frame:
        """The next frame, within `timeout` seconds where the source can bound its wait."""

    def close(self) -> None:  # noqa: B027  (optional: a source with nothing to release keeps this)
        """Release the device; the default has nothing to release."""

    def _frame(self, rgb: np.ndarray, ref: str | None = None, main_bgr: np.ndarray | None = None) -> Frame:
        self._seq += 1
        self.health.frames += 1
        return Frame(rgb=rgb, seq=self._seq, t=time.time(), ref=ref, main_bgr=main_bgr)


class SourceAdapter(FrameSource):
    """A frame source that `source.type` can choose (edge.sources.registry lists them).

    The class declares its type name (`name`: the `source.type` value, the name of its option section
    `source.<name>` and of the camera in log lines), its options (`Options`: a frozen dataclass whose fields are
    declared with `edge.config_fields.option`, validated by edge.config like every other key), whether it is
    `live` (a camera or stream whose reads can hang: the daemon's health window then covers the read timeout), how
    it is built from its options and the rate those options ask for.
    """

    Options: ClassVar[type]
    live: ClassVar[bool]

    @classmethod
    @abc.abstractmethod
    def from_config(cls, options: Any, *, read_timeout_s: float, stop: threading.Event | None = None) -> SourceAdapter:
        """The adapter for its option section; `read_timeout_s` is source.read_timeout_s, `stop` ends waits early."""

    @classmethod
    @abc.abstractmethod
    def nominal_fps(cls, options: Any) -> float:
        """Frames per second these options ask for (0 = as fast as the pipeline takes them)."""

    @classmethod
    def option_problems(cls, options: Any) -> list[tuple[str, str]]:
        """Rules between this adapter's keys, checked when it is the configured type.

        Each problem is (key under `source.<name>`, or "" for the section itself; message).
        """
        return []


class Pacer:
    """Sleeps so that frames leave at `fps` (0 = no pacing); interruptible by `stop`."""

    def __init__(self, fps: float, stop: threading.Event | None = None):
        self.period = 1.0 / fps if fps and fps > 0 else 0.0
        self.next_t: float | None = None
        self.stop = stop or threading.Event()

    def wait(self) -> None:
        if not self.period:
            return
        now = time.monotonic()
        if self.next_t is None or now - self.next_t > 1.0:  # first frame, or fell far behind: resync
            self.next_t = now
        delay = self.next_t - now
        if delay > 0:
            self.stop.wait(delay)
        self.next_t += self.period
