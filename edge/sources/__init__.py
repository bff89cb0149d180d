"""Frame sources: one small interface, one adapter per kind of camera.

`FrameSource.open() / read(timeout) -> Frame / close()`. Every adapter returns
RGB uint8 frames. Failures are exceptions of three kinds, so the wrapper knows
what to do with them:

- `SourceTimeout`: no frame within the timeout (a stalled camera) -> retried;
- `SourceError`: the source failed (unplugged, stream dropped, folder gone) ->
  closed and reopened with exponential backoff;
- `SourceExhausted`: a finite source (folder or video file, not looped) ended.
- `SourceFailed`: the source can never deliver (a corrupt or truncated video file):
  not an end, so the daemon exits non-zero and systemd's `Restart=on-failure` acts.

Bad single frames (a corrupt file in a folder) are counted and skipped inside
the adapter; they never stop the source. `ResilientSource` wraps any adapter
with the retry/reconnect policy, the counters, and a camera state
("ok" | "stalled" | "reconnecting" | "failed" | "finished") reported to a callback.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from edge.sources.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, ImageTooLarge, decode_rgb, image_files

log = logging.getLogger(__name__)


class SourceError(Exception):
    """The source failed and should be reopened."""


class SourceTimeout(SourceError):
    """No frame arrived within the timeout (stall)."""


class SourceExhausted(Exception):
    """A finite source has no more frames."""


class SourceFailed(Exception):
    """The source can never deliver again (corrupt or truncated video file); the message says why."""


BAD_FILE_LOG_INTERVAL_S = 600.0  # a bad file in a looped folder is logged once, then at most this often


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray  # HxWx3 uint8, RGB
    seq: int  # 1, 2, ... per source, across reconnects
    t: float  # wall-clock capture time (time.time())
    ref: Optional[str] = None  # where it came from (file name), if meaningful
    # Full-size frame for snapshots, in OpenCV's B, G, R order: picamera2's main stream as libcamera
    # delivers it, left unconverted because only the few frames that become snapshots are ever encoded.
    main_bgr: Optional[np.ndarray] = None
    mono: float = field(default_factory=time.monotonic)  # capture time on the monotonic clock (latency)


@dataclass
class SourceHealth:
    frames: int = 0
    bad_frames: int = 0  # unreadable frames skipped (corrupt files, empty buffers)
    stalls: int = 0  # reads that timed out
    errors: int = 0  # failures that needed a reconnect
    reconnects: int = 0  # successful reopenings after a failure
    last_error: Optional[str] = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class FrameSource:
    """Interface: adapters implement `open`, `read`, `close`."""

    name = "source"
    # True for sources whose frames wait for us (files, generated): the daemon does
    # not skip their frames unless they are paced (fps > 0).
    lossless = False

    def __init__(self):
        self.health = SourceHealth()
        self._seq = 0

    def open(self) -> None:
        raise NotImplementedError

    def read(self, timeout: float) -> Frame:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _frame(self, rgb: np.ndarray, ref: Optional[str] = None, main_bgr: Optional[np.ndarray] = None) -> Frame:
        self._seq += 1
        self.health.frames += 1
        return Frame(rgb=rgb, seq=self._seq, t=time.time(), ref=ref, main_bgr=main_bgr)


class _Pacer:
    """Sleeps so that frames leave at `fps` (0 = no pacing); interruptible by `stop`."""

    def __init__(self, fps: float, stop: Optional[threading.Event] = None):
        self.period = 1.0 / fps if fps and fps > 0 else 0.0
        self.next_t: Optional[float] = None
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


# --------------------------------------------------------------------------- synthetic


class SyntheticSource(FrameSource):
    """Procedurally generated surfaces with cracks at known places (edge.sources.synth); the demo camera.

    Each generated scene stays in view for `hold_frames` frames, shifted by a few
    pixels each frame like a surface sliding past, so a crack gives one event.
    `last_mask` is the ground truth of the frame just returned.
    """

    name = "synthetic"

    def __init__(self, width=320, height=240, fps=10.0, crack_probability=0.3, hold_frames=5, seed=None, stop=None):
        super().__init__()
        self.width, self.height = width, height
        self.crack_probability, self.hold_frames = crack_probability, hold_frames
        self.rng = np.random.default_rng(seed)
        self.pacer = _Pacer(fps, stop)
        self.lossless = not fps
        self._scene = None
        self._left = 0
        self.last_mask: Optional[np.ndarray] = None
        self.last_has_crack = False

    def open(self) -> None:
        from edge.sources import synth# noqa: F401  (fail at open, not at the first frame)

    def read(self, timeout: float) -> Frame:
        from edge.sources.synth import generate

        self.pacer.wait()
        if self._left <= 0:
            self._scene = generate(self.rng, self.height, self.width, self.crack_probability)
            self._left = self.hold_frames
        k = self.hold_frames - self._left
        self._left -= 1
        shift = int(k * 2)
        rgb = np.roll(self._scene.image, shift, axis=1) if shift else self._scene.image.copy()
        self.last_mask = np.roll(self._scene.mask, shift, axis=1) if shift else self._scene.mask
        self.last_has_crack = self._scene.n_cracks > 0
        return self._frame(rgb, ref=f"synthetic:{self._scene.surface}:{self._scene.n_cracks}")


# --------------------------------------------------------------------------- folder


class FolderSource(FrameSource):
    """Image files of a directory in sorted name order, at `fps` (0 = as fast as taken), once or looped.

    The listing is refreshed at each pass. A file that cannot be decoded is
    counted in `health.bad_frames` and skipped; the folder disappearing is a
    `SourceError` (the wrapper reconnects when it is back). With `cache_mb`, a
    looped replay keeps decoded frames (read-only arrays) up to that budget, so
    bench rigs measure the pipeline rather than JPEG decoding; a file that
    changes (size or mtime) is read again.
    """

    name = "folder"

    def __init__(self, path, fps=10.0, loop=True, stop=None, cache_mb: float = 0.0,
                 max_pixels: Optional[int] = DEFAULT_MAX_PIXELS):
        super().__init__()
        self.path = Path(path)
        self.max_pixels = max_pixels
        self._bad_logged: dict[Path, tuple[float, int]] = {}  # file -> (last logged, times bad since)
        self.loop = loop
        self.pacer = _Pacer(fps, stop)
        self.lossless = not fps
        self.cache_bytes = int(cache_mb * 1024 * 1024) if loop else 0
        self._cache: dict[Path, tuple[int, int, np.ndarray]] = {}
        self._cached_bytes = 0
        self._files: list[Path] = []
        self._pos = 0
        self._good_this_pass = 0

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError(f"{self.path}: folder not found")
        try:
            self._files = image_files(self.path)
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot list folder ({exc.strerror})") from None
        if not self._files:
            raise SourceError(f"{self.path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._pos = min(self._pos, len(self._files))

    def read(self, timeout: float) -> Frame:
        while True:
            if self._pos >= len(self._files):
                if not self.loop:
                    raise SourceExhausted(f"{self.path}: all {len(self._files)} files replayed")
                if self._good_this_pass == 0 and self._files:
                    raise SourceError(f"{self.path}: none of the {len(self._files)} files could be decoded")
                self._pos, self._good_this_pass = 0, 0
                self.open()
            path = self._files[self._pos]
            self._pos += 1
            if self.cache_bytes:
                rgb = self._cached(path)
                if rgb is not None:
                    self._good_this_pass += 1
                    self.pacer.wait()
                    return self._frame(rgb, ref=path.name)
            data = None
            try:
                data = np.fromfile(path, dtype=np.uint8)
            except OSError as exc:
                if not self.path.is_dir():
                    self._pos -= 1
                    raise SourceError(f"{self.path}: folder disappeared") from None
                self._bad_file(path, f"cannot be read ({exc.strerror})")
                self.health.bad_frames += 1
                continue
            try:
                rgb = decode_rgb(data, self.max_pixels, path.name)
            except ImageTooLarge as exc:
                self.health.bad_frames += 1
                self._bad_file(path, str(exc).split(": ", 1)[1])
                continue
            if rgb is None:
                self.health.bad_frames += 1
                self._bad_file(path, "is not a readable image")
                continue
            self._good_this_pass += 1
            if self.cache_bytes:
                self._remember(path, rgb)
            self.pacer.wait()
            return self._frame(rgb, ref=path.name)

    def _bad_file(self, path: Path, why: str) -> None:
        """Log a skipped file the first time, then at most every BAD_FILE_LOG_INTERVAL_S (a looped folder meets it each pass)."""
        now = time.monotonic()
        last, since = self._bad_logged.get(path, (None, 0))
        if last is not None and now - last < BAD_FILE_LOG_INTERVAL_S:
            self._bad_logged[path] = (last, since + 1)
            return
        again = f"; skipped {since} more times since it was last reported" if since else ""
        log.warning("folder source: %s %s; skipped (%d bad frames so far%s)", path, why, self.health.bad_frames, again)
        self._bad_logged[path] = (now, 0)

    def _cached(self, path: Path) -> Optional[np.ndarray]:
        entry = self._cache.get(path)
        if entry is None:
            return None
        try:
            st = path.stat()
        except OSError:
            return None
        return entry[2] if (st.st_size, st.st_mtime_ns) == entry[:2] else None

    def _remember(self, path: Path, rgb: np.ndarray) -> None:
        if self._cached_bytes + rgb.nbytes > self.cache_bytes:
            return
        try:
            st = path.stat()
        except OSError:
            return
        rgb.flags.writeable = False  # shared by every replay of this file: nobody may draw on it
        old = self._cache.get(path)
        if old is not None:
            self._cached_bytes -= old[2].nbytes
        self._cache[path] = (st.st_size, st.st_mtime_ns, rgb)
        self._cached_bytes += rgb.nbytes


# --------------------------------------------------------------------------- opencv


class OpenCVSource(FrameSource):
    """cv2.VideoCapture: a V4L2 index or device path, an RTSP/HTTP URL, or a video file (BGR -> RGB)."""

    name = "opencv"

    def __init__(self, url=None, index=None, width=None, height=None, fps=0.0, loop=False, open_timeout_s=10.0, read_timeout_s=5.0, stop=None):
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
        self.pacer = _Pacer(fps if self.is_file else 0.0, stop)
        self._cap = None
        self._pass_frames = 0  # frames decoded since the file was opened or rewound

    @property
    def target(self):
        return self.index if self.url is None else self.url

    def open(self) -> None:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000), cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000)]
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
        """At the end of a video file: fewer frames than its header announces means corrupt or truncated, not the end."""
        announced = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        short = announced - max(2, int(0.02 * announced))  # container frame counts may be estimates
        if self._pass_frames == 0 or (announced > 0 and self._pass_frames < short):
            of = f" of the {announced} its header announces" if announced > 0 else ""
            raise SourceFailed(f"opencv: {self.target}: video file is corrupt or truncated: decoding failed after "
                               f"{self._pass_frames} frames{of}")

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# --------------------------------------------------------------------------- picamera2


def yuv420_to_rgb(yuv: np.ndarray, width: int, height: int) -> np.ndarray:
    """Convert picamera2's planar YUV420 (I420) lores array (H*3/2 x stride) to RGB."""
    if yuv.shape[0] != height * 3 // 2:
        raise SourceError(f"picamera2: lores YUV420 array has {yuv.shape[0]} rows, expected {height * 3 // 2}")
    if yuv.shape[1] != width:  # rows padded to the stride
        yuv = np.ascontiguousarray(yuv[:, :width])
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)


class Picamera2Source(FrameSource):
    """Raspberry Pi camera via picamera2 (libcamera): `lores` stream for the models, `main` for snapshots.

    picamera2 is imported when the source opens, so the module works on any
    machine. Captures are dispatched with `wait=False` and collected with
    `Picamera2.wait(job, timeout)`: a hung camera raises TimeoutError, which
    becomes a SourceTimeout instead of a frozen daemon.
    """

    name = "picamera2"

    def __init__(self, camera=0, main=(1280, 960), lores=(320, 240), lores_format="YUV420", fps=10.0,
                 snapshot_from_main=True, still=False, factory: Optional[Callable] = None):
        super().__init__()
        self.camera, self.main_size, self.lores_size = camera, tuple(main), tuple(lores)
        self.lores_format, self.fps = lores_format, fps
        self.snapshot_from_main, self.still = snapshot_from_main, still
        self._factory = factory
        self._cam = None

    def _make(self):
        if self._factory is not None:
            return self._factory(self.camera)
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError(f"picamera2 is not installed ({exc}); on Raspberry Pi OS: sudo apt install python3-picamera2") from None
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


# --------------------------------------------------------------------------- resilience


class ResilientSource:
    """Wraps an adapter: retries stalls, reconnects failures with exponential backoff, reports state.

    `read()` returns the next good frame, or raises SourceExhausted when a
    finite source ends, or `Stopped` when `stop` is set. It never raises for a
    camera fault: it waits and reconnects, for as long as it takes.
    """

    class Stopped(Exception):
        pass

    def __init__(
        self,
        source: FrameSource,
        read_timeout_s: float = 5.0,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        on_state: Optional[Callable[[str, dict], None]] = None,
        stop: Optional[threading.Event] = None,
        stalls_before_reconnect: int = 3,
    ):
        self.source = source
        self.read_timeout_s = read_timeout_s
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self.on_state = on_state
        self.stop = stop or threading.Event()
        self.stalls_before_reconnect = stalls_before_reconnect
        self.state = "starting"
        # When the call into the adapter now running began (None between calls): a call that never
        # returns (a wedged driver) is the one camera fault only a restart of the process can cure.
        self.busy_since: Optional[float] = None
        self._opened = False
        self._ever_opened = False

    @property
    def health(self) -> SourceHealth:
        return self.source.health

    def _set_state(self, state: str, detail: Optional[str] = None) -> None:
        if state == self.state:
            return
        previous, self.state = self.state, state
        if detail and state in ("stalled", "reconnecting", "failed"):
            self.health.last_error = detail
        level = logging.INFO if state in ("ok", "finished") else logging.WARNING
        log.log(level, "camera %s: %s -> %s%s", self.source.name, previous, state, f" ({detail})" if detail else "")
        if self.on_state:
            try:
                self.on_state(state, {"previous": previous, "detail": detail, **self.health.as_dict()})
            except Exception:
                log.exception("camera state callback failed")

    def mark_stalled(self, detail: str) -> None:
        """Called by the supervisor when a read has not returned for too long (a hang no timeout caught)."""
        if self.state == "ok":
            self.health.stalls += 1
            self._set_state("stalled", detail)

    def _backoff(self, attempt: int) -> float:
        return min(self.retry_max_s, self.retry_initial_s * (2 ** max(0, attempt - 1)))

    def _open(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            try:
                self.busy_since = time.monotonic()
                try:
                    self.source.open()
                finally:
                    self.busy_since = None
                self._opened = True
                if self._ever_opened:
                    self.health.reconnects += 1
                self._ever_opened = True
                return
            except SourceFailed as exc:
                self.health.errors += 1
                self._set_state("failed", str(exc))
                raise
            except SourceError as exc:
                attempt += 1
                self.health.errors += 1
                delay = self._backoff(attempt)
                self._set_state("reconnecting" if self._ever_opened or attempt > 1 else "failed", str(exc))
                log.warning("camera %s: open failed (%s); retry in %.1fs", self.source.name, exc, delay)
                self.health.last_error = str(exc)
                self.stop.wait(delay)
        raise ResilientSource.Stopped()

    def _close(self) -> None:
        try:
            self.source.close()
        except Exception as exc:
            log.debug("camera %s: close failed: %s", self.source.name, exc)
        self._opened = False

    def read(self) -> Frame:
        stalls = 0
        failures = 0
        while not self.stop.is_set():
            if not self._opened:
                self._open()
            try:
                self.busy_since = time.monotonic()
                try:
                    frame = self.source.read(self.read_timeout_s)
                finally:
                    self.busy_since = None
            except SourceExhausted as exc:
                self._close()
                self._set_state("finished", str(exc))
                raise
            except SourceFailed as exc:
                self._close()
                self._set_state("failed", str(exc))
                raise
            except SourceTimeout as exc:
                stalls += 1
                self.health.stalls += 1
                self._set_state("stalled", str(exc))
                if stalls >= self.stalls_before_reconnect:
                    self._close()
                    self.stop.wait(self._backoff(stalls - self.stalls_before_reconnect + 1))
                continue
            except SourceError as exc:
                failures += 1
                self.health.errors += 1
                self._set_state("reconnecting", str(exc))
                self._close()
                self.stop.wait(self._backoff(failures))
                continue
            self._set_state("ok")
            return frame
        raise ResilientSource.Stopped()

    def close(self) -> None:
        self._close()


def make_source(cfg, stop: Optional[threading.Event] = None) -> FrameSource:
    """The adapter for a `SourceConfig` (edge.config)."""
    t = cfg.type
    if t == "synthetic":
        o = cfg.synthetic
        return SyntheticSource(o.width, o.height, o.fps, o.crack_probability, o.hold_frames, o.seed, stop=stop)
    if t == "folder":
        o = cfg.folder
        return FolderSource(o.path, o.fps, o.loop, stop=stop, cache_mb=o.cache_mb,
                            max_pixels=int(o.max_image_mpixels * 1e6) if o.max_image_mpixels else None)
    if t == "opencv":
        o = cfg.opencv
        return OpenCVSource(o.url, o.index, o.width, o.height, o.fps, o.loop, o.open_timeout_s, cfg.read_timeout_s, stop=stop)
    if t == "picamera2":
        o = cfg.picamera2
        return Picamera2Source(o.camera, o.main, o.lores, o.lores_format, o.fps, o.snapshot_from_main, o.still)
    raise ValueError(f"unknown source type {t!r}")
