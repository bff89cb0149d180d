"""The folder camera: image files of a directory replayed as frames (bench rigs, recorded inspections)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge.config_fields import option
from edge.sources.base import Frame, Pacer, SourceAdapter, SourceError, SourceExhausted

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

BAD_FILE_LOG_INTERVAL_S = 600.0  # a bad file in a looped folder is logged once, then at most this often


@dataclass(frozen=True)
class FolderOptions:
    path: str | None = option(None, "directory of image files (jpg, png, bmp, tif, webp), read in sorted name order")
    fps: float = option(
        10.0, "replay rate; 0 = as fast as the pipeline takes them (no frame skipped, for bench runs)", min=0, max=10000
    )
    loop: bool = option(True, "start again at the first file after the last (false: the daemon stops when done)")
    cache_mb: float = option(
        0.0,
        "looped replays: keep decoded frames in memory up to this many MB (bench rigs; 0 = decode every time)",
        min=0,
        max=4096,
    )
    max_image_mpixels: float = option(
        40.0,
        "files whose header announces more megapixels are skipped undecoded (memory bound; 0 = no limit)",
        min=0,
        max=1000,
    )


def _max_pixels(max_image_mpixels: float) -> int | None:
    return int(max_image_mpixels * 1e6) if max_image_mpixels else None


class FolderSource(SourceAdapter):
    """Image files of a directory in sorted name order, at `fps` (0 = as fast as taken), once or looped.

    The listing is refreshed at each pass. A file that cannot be decoded is
    counted in `health.bad_frames` and skipped; the folder disappearing is a
    `SourceError` (the wrapper reconnects when it is back). With `cache_mb`, a
    looped replay keeps decoded frames (read-only arrays) up to that budget, so
    bench rigs measure the pipeline rather than JPEG decoding; a file that
    changes (size or mtime) is read again.
    """

    name = "folder"
    Options = FolderOptions
    live = False

    def __init__(
        self,
        path,
        fps=10.0,
        loop=True,
        stop=None,
        cache_mb: float = 0.0,
        max_pixels: int | None = _max_pixels(FolderOptions.max_image_mpixels),
    ):
        super().__init__()
        self.path = Path(path)
        self.max_pixels = max_pixels
        self._bad_logged: dict[Path, tuple[float | None, int]] = {}  # file -> (last logged, times bad since)
        self.loop = loop
        self.pacer = Pacer(fps, stop)
        self.lossless = not fps
        self.cache_bytes = int(cache_mb * 1024 * 1024) if loop else 0
        self._cache: dict[Path, tuple[int, int, np.ndarray]] = {}
        self._cached_bytes = 0
        self._files: list[Path] = []
        self._pos = 0
        self._good_this_pass = 0

    @classmethod
    def from_config(
        cls, options: FolderOptions, *, read_timeout_s: float, stop: threading.Event | None = None
    ) -> FolderSource:
        o = options
        return cls(o.path, o.fps, o.loop, stop=stop, cache_mb=o.cache_mb, max_pixels=_max_pixels(o.max_image_mpixels))

    @classmethod
    def nominal_fps(cls, options: FolderOptions) -> float:
        return options.fps

    @classmethod
    def option_problems(cls, options: FolderOptions) -> list[tuple[str, str]]:
        return [] if options.path else [("path", "required when source.type is folder")]

    def open(self) -> None:
        from edge.sources.images import IMAGE_SUFFIXES, image_files

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
        import numpy as np

        from edge.sources.images import ImageTooLarge, decode_rgb

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
        """Log a skipped file the first time, then at most every BAD_FILE_LOG_INTERVAL_S.

        A looped folder meets the same bad file at each pass.
        """
        now = time.monotonic()
        last, since = self._bad_logged.get(path, (None, 0))
        if last is not None and now - last < BAD_FILE_LOG_INTERVAL_S:
            self._bad_logged[path] = (last, since + 1)
            return
        again = f"; skipped {since} more times since it was last reported" if since else ""
        log.warning("folder source: %s %s; skipped (%d bad frames so far%s)", path, why, self.health.bad_frames, again)
        self._bad_logged[path] = (now, 0)

    def _cached(self, path: Path) -> np.ndarray | None:
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
