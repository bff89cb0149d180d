"""Misbehaving cameras for the daemon's watchdog tests (a real FrameSource subclass, not a mock)."""

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
