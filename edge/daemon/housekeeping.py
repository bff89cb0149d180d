"""The housekeeping thread: what the daemon does on a clock rather than per frame.

Every second: the frame rate and STATE/status.json. Every tick: a capture call that hangs, and the
systemd watchdog ping while the process works. Every 10 s the systemd status line, every
`stats_interval_s` the MQTT stats and the outbox fill warning, every PRUNE_INTERVAL_S the
retention of the journal and its pictures. Kept off the frame path so none of it delays a frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edge.config import Config
from edge.daemon.journal_writer import JournalWriter
from edge.daemon.notify import Notifier
from edge.daemon.pipeline import FramePipeline
from edge.daemon.snapshots import SnapshotStore
from edge.outputs.publisher import Publisher

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 600.0


class Housekeeper:
    """Owns the housekeeping thread; the supervisor hands it the parts and the judgements it needs."""

    def __init__(
        self,
        cfg: Config,
        stop: threading.Event,
        notifier: Notifier,
        pipeline: FramePipeline,
        writer: JournalWriter,
        snapshots: SnapshotStore,
        publisher: Publisher | None,
        *,
        write_status: Callable[[], None],
        check_capture_hang: Callable[[float], None],
        process_alive: Callable[[float], bool],
        status_line: Callable[[], str],
        stats: Callable[[], dict],
    ):
        self.cfg = cfg
        self.stop_event = stop
        self.notifier = notifier
        self.pipeline = pipeline
        self.writer = writer
        self.snapshots = snapshots
        self.publisher = publisher
        self._write_status = write_status
        self._check_capture_hang = check_capture_hang
        self._process_alive = process_alive
        self._status_line = status_line
        self._stats = stats
        self._outbox_level = -1
        self._thread: threading.Thread | None = None

    def use_config(self, cfg: Config) -> None:
        """A reload: stats interval, retention and outbox warning levels apply from the next round."""
        self.cfg = cfg

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="housekeeping", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        last_t = time.monotonic()
        next_stats = time.monotonic() + min(5.0, self.cfg.stats_interval_s)
        next_prune = time.monotonic() + 5.0
        next_status_line = 0.0
        next_watchdog = 0.0
        wd = self.notifier.watchdog_interval_s
        tick = min(0.2, wd / 2) if wd else 0.2
        while not self.stop_event.wait(tick):
            now = time.monotonic()
            if now - last_t >= 1.0:
                self.pipeline.sample_fps(now)
                last_t = now
                self._write_status()
            self._check_capture_hang(now)
            wd = self.notifier.watchdog_interval_s
            if wd and now >= next_watchdog:
                if self._process_alive(now):
                    self.notifier.watchdog()
                next_watchdog = now + wd
            if self.notifier.enabled and now >= next_status_line:
                self.notifier.status(self._status_line())
                next_status_line = now + 10.0
            if now >= next_stats:
                next_stats = now + self.cfg.stats_interval_s
                if self.publisher is not None:
                    try:
                        self.publisher.publish_stats(self._stats())
                    except Exception:
                        log.exception("stats failed")
                self.check_outbox_fill()
            if now >= next_prune:
                next_prune = now + PRUNE_INTERVAL_S
                self.prune()

    def prune(self) -> None:
        """Retention: old frames and events out of the journal (and their pictures off the disk), within max_db_mb."""
        st = self.cfg.storage
        try:
            report = self.writer.journal.prune(st.retention_days, st.max_db_mb)
        except Exception as exc:
            log.error("retention failed: %s", exc)
            return
        self.snapshots.delete(report.files)
        if report.frames or report.events:
            log.info(
                "retention: deleted %d frames and %d events; journal uses %.1f MB",
                report.frames,
                report.events,
                report.used_mb,
            )
        if report.over_budget:
            log.warning(
                "journal uses %.1f MB, over storage.max_db_mb=%g, and nothing more may be deleted "
                "(undelivered outbox or labelled events)",
                report.used_mb,
                st.max_db_mb,
            )

    def check_outbox_fill(self) -> None:
        """A loud warning each time the undelivered outbox crosses one of storage.outbox_warn_levels."""
        try:
            used = self.writer.journal.outbox_bytes()
        except Exception:
            return
        st, mqtt = self.cfg.storage, self.cfg.mqtt
        fraction = used / (st.max_db_mb * 1024 * 1024)
        levels = list(st.outbox_warn_levels)
        level = max((i for i, v in enumerate(levels) if fraction >= v), default=-1)
        if level > self._outbox_level:
            log.warning(
                "OUTBOX FILLING: %d undelivered MQTT messages use %.0f%% of storage.max_db_mb (%g MB); "
                "broker %s:%d unreachable? (%s)",
                self.writer.outbox_depth,
                fraction * 100,
                st.max_db_mb,
                mqtt.host,
                mqtt.port,
                self.publisher.last_error if self.publisher else "mqtt disabled",
            )
        self._outbox_level = level
