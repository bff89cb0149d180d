"""Resilience around any frame source: stalls retried, failures reconnected with backoff, a camera state reported.

`ResilientSource.read()` returns the next good frame and never raises for a camera fault; it reports the camera
state ("ok" | "stalled" | "reconnecting" | "failed" | "finished") to a callback and keeps the adapter's counters.
Bad single frames (a corrupt file in a folder) are counted and skipped inside the adapter; they never reach here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edge.sources.base import (
    Frame,
    FrameSource,
    SourceError,
    SourceExhausted,
    SourceFailed,
    SourceHealth,
    SourceTimeout,
)
from edge.vocabulary import CameraState

log = logging.getLogger(__name__)


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
        on_state: Callable[[CameraState, dict], None] | None = None,
        stop: threading.Event | None = None,
        stalls_before_reconnect: int = 3,
    ):
        self.source = source
        self.read_timeout_s = read_timeout_s
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self.on_state = on_state
        self.stop = stop or threading.Event()
        self.stalls_before_reconnect = stalls_before_reconnect
        self.state: CameraState = "starting"
        # When the call into the adapter now running began (None between calls): a call that never
        # returns (a wedged driver) is the one camera fault only a restart of the process can cure.
        self.busy_since: float | None = None
        self._opened = False
        self._ever_opened = False

    @property
    def health(self) -> SourceHealth:
        return self.source.health

    def _set_state(self, state: CameraState, detail: str | None = None) -> None:
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
