"""The Raspberry Pi camera through picamera2 (libcamera), imported only when the camera opens."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from edge.config_fields import option
from edge.sources.base import Frame, SourceAdapter, SourceError, SourceTimeout

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Picamera2Options:
    camera: int = option(0, "camera number (Picamera2(camera))", min=0, max=16)
    main: tuple[int, int] = option(
        (1280, 960), "main stream size [width, height]; used for snapshots", min=16, max=8192
    )
    lores: tuple[int, int] = option((320, 240), "lores stream size [width, height] fed to the models", min=16, max=4096)
    lores_format: Literal["YUV420", "RGB888"] = option(
        "YUV420", "YUV420 (Pi 4 and older: converted to RGB with OpenCV) or RGB888 (Pi 5)"
    )
    fps: float = option(10.0, "sensor frame rate", gt=0, max=240)
    snapshot_from_main: bool = option(True, "take event snapshots from the full-size main stream")
    still: bool = option(
        False, "use create_still_configuration instead of create_video_configuration (slow, high resolution rigs)"
    )


def yuv420_to_rgb(yuv: np.ndarray, width: int, height: int) -> np.ndarray:
    """Convert picamera2's planar YUV420 (I420) lores array (H*3/2 x stride) to RGB."""
    import cv2
    import numpy as np

    if yuv.shape[0] != height * 3 // 2:
        raise SourceError(f"picamera2: lores YUV420 array has {yuv.shape[0]} rows, expected {height * 3 // 2}")
    if yuv.shape[1] != width:  # rows padded to the stride
        yuv = np.ascontiguousarray(yuv[:, :width])
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)


class Picamera2Source(SourceAdapter):
    """Raspberry Pi camera via picamera2 (libcamera): `lores` stream for the models, `main` for snapshots.

    picamera2 is imported when the source opens, so the module works on any
    machine. Captures are dispatched with `wait=False` and collected with
    `Picamera2.wait(job, timeout)`: a hung camera raises TimeoutError, which
    becomes a SourceTimeout instead of a frozen daemon.
    """

    name = "picamera2"
    Options = Picamera2Options
    live = True

    def __init__(
        self,
        camera=0,
        main=(1280, 960),
        lores=(320, 240),
        lores_format="YUV420",
        fps=10.0,
        snapshot_from_main=True,
        still=False,
        factory: Callable | None = None,
    ):
        super().__init__()
        self.camera, self.main_size, self.lores_size = camera, tuple(main), tuple(lores)
        self.lores_format, self.fps = lores_format, fps
        self.snapshot_from_main, self.still = snapshot_from_main, still
        self._factory = factory
        self._cam: Any = None

    @classmethod
    def from_config(
        cls, options: Picamera2Options, *, read_timeout_s: float, stop: threading.Event | None = None
    ) -> Picamera2Source:
        o = options
        return cls(o.camera, o.main, o.lores, o.lores_format, o.fps, o.snapshot_from_main, o.still)

    @classmethod
    def nominal_fps(cls, options: Picamera2Options) -> float:
        return options.fps

    def _make(self):
        if self._factory is not None:
            return self._factory(self.camera)
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError(
                f"picamera2 is not installed ({exc}); on Raspberry Pi OS: sudo apt install python3-picamera2"
            ) from None
        return Picamera2(self.camera)

    def open(self) -> None:
        try:
            cam = self._make()
            create = cam.create_still_configuration if self.still else cam.create_video_configuration
            config = create(
                main={"size": self.main_size, "format": "RGB888"},
                lores={"size": self.lores_size, "format": self.lores_format},
                controls={"FrameRate": float(self.fps)},
                buffer_count=4 if not self.still else 2,
            )
            cam.configure(config)
            cam.start()
        except SourceError:
            raise
        except Exception as exc:  # libcamera raises RuntimeError/IndexError/... for a missing or busy camera
            raise SourceError(f"picamera2: cannot start camera {self.camera} ({type(exc).__name__}: {exc})") from None
        self._cam = cam

    def read(self, timeout: float) -> Frame:
        import cv2
        import numpy as np

        if self._cam is None:
            raise SourceError("picamera2: camera not open")
        names = ["lores", "main"] if self.snapshot_from_main else ["lores"]
        try:
            job = self._cam.capture_arrays(names, wait=False)
            arrays, _metadata = self._cam.wait(job, timeout=timeout)
        except TimeoutError:
            raise SourceTimeout(f"picamera2: no frame within {timeout:g}s") from None
        except Exception as exc:
            raise SourceError(f"picamera2: capture failed ({type(exc).__name__}: {exc})") from None
        lores = arrays[0]
        w, h = self.lores_size
        try:
            if self.lores_format == "YUV420":
                rgb = yuv420_to_rgb(lores, w, h)
            else:  # libcamera's RGB888 is B, G, R in memory
                rgb = cv2.cvtColor(np.ascontiguousarray(lores[:, :, :3]), cv2.COLOR_BGR2RGB)
            main_bgr = arrays[1][:, :, :3] if len(arrays) > 1 else None
        except (cv2.error, SourceError) as exc:
            self.health.bad_frames += 1
            raise SourceError(f"picamera2: bad buffer ({exc})") from None
        return self._frame(rgb, main_bgr=main_bgr)

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        for method in ("stop", "close"):
            try:
                getattr(cam, method)()
            except Exception as exc:  # closing a broken camera must not raise
                log.debug("picamera2: %s failed: %s", method, exc)
