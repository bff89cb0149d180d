"""A failure that repeats every frame (a full disk, a broken camera frame) is logged once per interval, with a count.

Without it a failing SD card would fill journald with thousands of identical lines per minute and
push out the lines that say what went wrong first.
"""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """At most one log line per `interval` seconds for a repeating failure (with the count since)."""

    def __init__(self, logger: logging.Logger, interval: float = 30.0):
        self.logger = logger
        self.interval, self.last, self.suppressed = interval, 0.0, 0

    def __call__(self, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            if self.suppressed:
                msg += f" ({self.suppressed} similar since the last report)"
            self.logger.log(level, msg, *args)
            self.last, self.suppressed = now, 0
        else:
            self.suppressed += 1
