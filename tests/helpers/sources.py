"""Misbehaving cameras (a FrameSource subclass, not a mock) and damaged video files, for the source and daemon tests."""

from __future__ import annotations

import time


def wedging_source(after_frames: int = 5):
    """A camera whose read() blocks for good after `after_frames` frames and ignores its timeout, like a wedged
    driver call; `.release.set()` lets it go (at the end of a test)."""
    import threading

    import numpy as np

    from edge.sources import FrameSource

    class Wedges(FrameSource):
        name = "wedges"

        def __init__(self):
            super().__init__()
            self.release = threading.Event()

        def open(self):
            pass

        def read(self, timeout):
            if self.health.frames >= after_frames:
                self.release.wait()
            time.sleep(0.01)
            return self._frame(np.full((48, 64, 3), 215, np.uint8))

    return Wedges()


def damaged_video(tmp_path, how: str):
    """A real MJPG .avi of 30 frames, then damaged: `truncated` (cut in half), `scribbled` (bytes overwritten) or
    anything else (random bytes only)."""
    import cv2
    import numpy as np

    path = tmp_path / f"{how}.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(30):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "scribbled":
        for offset in range(2000, len(data) - 1000, 50):
            data[offset:offset + 10] = b"\xff" * 10
    else:
        data = bytearray(np.random.default_rng(1).integers(0, 255, 20000, dtype=np.uint8).tobytes())
    path.write_bytes(bytes(data))
    return path
