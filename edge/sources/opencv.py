"""The OpenCV camera: cv2.VideoCapture on a V4L2 device, an RTSP/HTTP stream or a video file."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.config_fields import option
from edge.sources.base import Frame, Pacer, SourceAdapter, SourceError, SourceExhausted, SourceFailed


@dataclass(frozen=True)
class OpenCVOptions:
    url: str | None = option(
        None, "RTSP/HTTP URL, video file or device path (/dev/video0); or leave null and set index"
    )
    index: int | None = option(None, "V4L2 device index (0 = /dev/video0)", min=0, max=63)
    width: int | None = option(None, "requested capture width (devices only; null = device default)", min=16, max=8192)
    height: int | None = option(None, "requested capture height (devices only)", min=16, max=8192)
    fps: float = option(
        0.0,
        "replay rate for video files (0 = as fast as the pipeline takes them, no frame skipped); "
        "live sources are never paced",
        min=0,
        max=1000,
    )
    loop: bool = option(False, "video files: start again at the end")
    open_timeout_s: float = option(10.0, "how long opening a stream may take", gt=0, max=600)


class OpenCVSource(SourceAdapter):
    """cv2.VideoCapture: a V4L2 index or device path, an RTSP/HTTP URL, or a video file (BGR -> RGB)."""

    name = "opencv"
    Options = OpenCVOptions
    live = True

    def __init__(
        self,
        url=None,
        index=None,
        width=None,
        height=None,
        fps=0.0,
        loop=False,
        open_timeout_s=10.0,
        read_timeout_s=5.0,
        stop=None,
    ):
        super().__init__()
        self.url, self.index = url, index
        self.width, self.height = width, height
        self.loop = loop
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self.is_file = bool(url) and "://" not in url and not str(url).startswith("/dev/") and Path(url).is_file()
        # A video file is read as fast as the pipeline takes it (lossless: no frame skipped) unless a
        # replay rate is set; then it behaves like a live source and frames are dropped when busy.
        # Decided here, not in open(): the daemon asks before the capture thread opens the source.
        self.lossless = self.is_file and not fps
        self.pacer = Pacer(fps if self.is_file else 0.0, stop)
        self._cap: Any = None
        self._pass_frames = 0  # frames decoded since the file was opened or rewound

    @classmethod
    def from_config(
        cls, options: OpenCVOptions, *, read_timeout_s: float, stop: threading.Event | None = None
    ) -> OpenCVSource:
        o = options
        return cls(o.url, o.index, o.width, o.height, o.fps, o.loop, o.open_timeout_s, read_timeout_s, stop=stop)

    @classmethod
    def nominal_fps(cls, options: OpenCVOptions) -> float:
        return options.fps

    @classmethod
    def option_problems(cls, options: OpenCVOptions) -> list[tuple[str, str]]:
        if (options.url is None) == (options.index is None):
            return [("", "set exactly one of url or index when source.type is opencv")]
        return []

    @property
    def target(self):
        return self.index if self.url is None else self.url

    def open(self) -> None:
        import cv2

        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self.read_timeout_s * 1000),
        ]
        try:
            cap = cv2.VideoCapture(self.target, cv2.CAP_ANY, params)
        except cv2.error:
            cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            if self.is_file:  # it exists (checked at construction): unreadable, not missing
                raise SourceFailed(f"opencv: {self.target}: cannot open the video file (corrupt or unsupported format)")
            raise SourceError(f"opencv: cannot open {self.target!r}")
        self._pass_frames = 0
        if self.width and self.height and not self.is_file:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self._cap = cap

    def read(self, timeout: float) -> Frame:
        import cv2

        if self._cap is None:
            raise SourceError("opencv: source not open")
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            if self.is_file:
                self._check_complete()
                if self.loop and self.health.frames:
                    self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    self._pass_frames = 0
                    ok, bgr = self._cap.read()
                if not ok or bgr is None:
                    if self.loop:
                        raise SourceError(f"opencv: cannot read {self.target!r}")
                    raise SourceExhausted(f"{self.target}: end of video")
            else:
                raise SourceError(f"opencv: no frame from {self.target!r} (stream ended or device lost)")
        self._pass_frames += 1
        self.pacer.wait()
        if bgr.ndim == 2:
            return self._frame(cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB))
        return self._frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def _check_complete(self) -> None:
        """At the end of a video file: fewer frames than its header announces is a corrupt or truncated file."""
        import cv2

        announced = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        short = announced - max(2, int(0.02 * announced))  # container frame counts may be estimates
        if self._pass_frames == 0 or (announced > 0 and self._pass_frames < short):
            of = f" of the {announced} its header announces" if announced > 0 else ""
            raise SourceFailed(
                f"opencv: {self.target}: video file is corrupt or truncated: decoding failed after "
                f"{self._pass_frames} frames{of}"
            )

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
