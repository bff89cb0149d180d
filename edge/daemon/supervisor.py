"""The Supervisor: wires config, source, cascade, decision, journal and publisher, and owns their threads.

Threads:
  capture      ResilientSource.read() -> FrameSlot (keeps only the newest frame; the
               ones it replaces are counted as skipped). File and generated sources
               with fps 0 wait for the slot instead, so bench replays skip nothing.
  main         the run loop: newest frame -> Cascade -> Decision -> Journal (+ outbox,
               one transaction) -> wake the publisher. Signals only set flags; the loop
               acts on them between frames, so the frame in hand is always finished.
  reload       SIGHUP: load + verify the new config and bundle beside the running one,
               then the main loop swaps between two frames (no frame's result dropped).
  housekeeping every second: STATE/status.json (atomic), watchdog pings while frames flow,
               stats on MQTT, retention, the outbox fill warning.
  outbox/paho  edge.outputs.publisher.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import os
import shutil
import signal
import sqlite3
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from edge import __version__
from edge.outputs import homeassistant, metrics, snapshots_mqtt
from edge.atomic_write import write_bytes_atomic, write_json_atomic
from edge.engine.bundle import BundleError, LoadedBundle, load_bundle
from edge.releases.signing import check_bundle_trust
from edge.config import Config, ConfigError, load_config
from edge.events.decision import END, START, Decision, DecisionParams, EventRecord, FrameObservation
from edge.events.held_writes import Reserve, encoded_size, without_pictures
from edge.events.journal import EventWrite, FrameRow, Journal, JournalError, JournalUnavailable, OutboxMessage
from edge.daemon.notify import Notifier
from edge.outputs.publisher import Publisher, cpu_temperature_c, disk_free_mb, event_payload, rss_mb
from edge.engine.runtime import RuntimeUnavailable
from edge.sources import Frame, ResilientSource, SourceExhausted, SourceFailed, adapter_for, make_source
from edge.timestamps import iso_utc

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 600.0
FRAME_BATCH_S = 1.0  # frame-only results are committed together at most this late ...
FRAME_BATCH_ROWS = 200  # ... or when this many are waiting
HELD_WRITES_MAX = 10000  # event writes held in memory while the journal cannot be written (also bounded by bytes)
SNAPSHOT_MIN_FREE_BYTES = 4 * 1024 * 1024  # below this much free disk, pictures are shed so events keep their room


class StartupError(Exception):
    """The daemon cannot start (bad bundle, locked state dir, broken journal); str() is one line."""


class FrameSlot:
    """The mailbox between capture and inference.

    Live sources (`put(wait=False)`): one frame, the newest wins, each replaced frame counted
    as skipped, so inference always works on the latest picture and nothing queues up.
    Replayed sources (`wait=True`: files at fps 0): a short bounded queue the source blocks on,
    so every frame is processed and decoding runs ahead of inference.
    """

    def __init__(self, depth: int = 2):
        self._cond = threading.Condition()
        self._frames: deque = deque()
        self.depth = depth
        self.skipped = 0
        self.closed = False

    def put(self, frame: Frame, wait: bool = False, stop: Optional[threading.Event] = None) -> None:
        with self._cond:
            if wait:
                while len(self._frames) >= self.depth and not self.closed and not (stop and stop.is_set()):
                    self._cond.wait(0.1)
            else:
                self.skipped += len(self._frames)
                self._frames.clear()
            self._frames.append(frame)
            self._cond.notify_all()

    def get(self, timeout: float) -> Optional[Frame]:
        with self._cond:
            if not self._frames and not self.closed:
                self._cond.wait(timeout)
            frame = self._frames.popleft() if self._frames else None
            self._cond.notify_all()
            return frame

    @property
    def pending(self) -> int:
        return len(self._frames)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


@dataclass
class Engine:
    """A loaded bundle and the cascade running it (swapped as one on reload)."""

    bundle: LoadedBundle
    cascade: object  # edge.engine.cascade.Cascade
    path: Path


def build_engine(cfg: Config, bundle_dir: Optional[Path] = None, verify_golden: bool = False) -> Engine:
    """Load + verify a bundle completely and build its cascade; raises BundleError/RuntimeUnavailable."""
    from edge.engine.cascade import Cascade, TilingConfig

    # Resolve `models/current` once, so every file is read from the same release even if it is switched meanwhile.
    bundle_dir = Path(bundle_dir or cfg.bundle_dir()).resolve()
    # The device's signature policy, the same rule `crackd models stage/activate` apply, before any model file is read.
    check_bundle_trust(bundle_dir, cfg.releases.require_signature, Path(cfg.releases.allowed_signers))
    bundle = load_bundle(bundle_dir, runtime=cfg.model.runtime, threads=cfg.model.threads)
    if verify_golden and (bundle.manifest.golden or {}).get("samples"):
        from edge.engine.selftest import run_golden

        report = run_golden(bundle)
        if not report.ok:
            report.raise_for_failures()
    t = cfg.model.tiling
    cascade = Cascade(
        bundle,
        segment=cfg.model.segment,
        threshold=cfg.decision.threshold,
        mm_per_pixel=cfg.model.mm_per_pixel,
        tiling=TilingConfig(tile=t.tile, overlap=t.overlap) if t.enabled else None,
    )
    h, w = bundle.classifier.input_hw
    cascade.process(np.full((h, w, 3), 128, np.uint8))  # smoke run: the interpreters really execute
    return Engine(bundle, cascade, bundle_dir)


def decision_params(cfg: Config, engine: Engine) -> DecisionParams:
    """Debounce settings; the crack threshold is the cascade's, so a frame's `crack` flag and the events agree."""
    d = cfg.decision
    return DecisionParams(engine.cascade.threshold, d.hysteresis, d.start_k, d.start_n, d.end_m, d.update_interval_s)


def _percentile(values, q: float) -> Optional[float]:
    if not values:
        return None
    return round(float(np.percentile(np.fromiter(values, float), q)), 2)


def _free_bytes(path: Path) -> Optional[int]:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _why_unwritable(path: Path) -> str:
    """The reason a directory cannot be written (read-only file system, permission), from a real attempt."""
    try:
        fd, name = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(name)
        return "not writable for this user"
    except OSError as exc:
        return exc.strerror or str(exc)


class _RateLimitedLog:
    """At most one log line per `interval` for a repeating failure (with the count since)."""

    def __init__(self, interval: float = 30.0):
        self.interval, self.last, self.suppressed = interval, 0.0, 0

    def __call__(self, level, msg, *args):
        now = time.monotonic()
        if now - self.last >= self.interval:
            if self.suppressed:
                msg += f" ({self.suppressed} similar since the last report)"
            log.log(level, msg, *args)
            self.last, self.suppressed = now, 0
        else:
            self.suppressed += 1


class Supervisor:
    # Frames older than this (or 3 frame periods, or 2 read timeouts for cameras) mean "not healthy":
    # status.json says so and the watchdog pings stop.
    HEALTH_WINDOW_MIN_S = 5.0
    # The watchdog (process_alive): the main loop turns at least every 0.25 s (frame or not); a capture call
    # blocked this long (or 4 read timeouts) means a wedged driver.
    LOOP_STUCK_S = 10.0
    CAPTURE_HANG_MIN_S = 60.0

    def __init__(self, config: Config, config_path: Optional[str | Path] = None, notifier: Optional[Notifier] = None,
                 source=None):
        """`source`: a FrameSource to use instead of the one `config.source` describes (tests, embedding)."""
        self.cfg = config
        self._given_source = source
        self.config_path = Path(config_path) if config_path else None
        self.notifier = notifier or Notifier()
        self.state_dir = config.state_dir
        self.stop_event = threading.Event()
        self._reload_requested = threading.Event()
        self._reloading = False
        self._pending: Optional[tuple[Config, Engine]] = None
        self._pending_lock = threading.Lock()
        self.slot = FrameSlot()
        self.started_at = time.time()
        self._t0 = time.monotonic()
        self.frames_processed = 0
        self.frames_failed = 0
        self.frames_recorded = 0
        self.events_started = 0
        self.last_frame_mono: Optional[float] = None
        self._loop_mono = time.monotonic()  # the main loop's heartbeat (watchdog)
        self.last_capture_mono: Optional[float] = None
        self.latency_ms: deque = deque(maxlen=1000)
        self.inference_ms: deque = deque(maxlen=1000)
        self.fps = 0.0
        self.camera_state = "starting"
        self.last_reload: Optional[dict] = None
        self._pending_writes: deque = deque()  # (item, encoded bytes): never dropped silently (see _hold)
        self._held_bytes = 0
        self.writes_dropped = 0  # event writes refused while held writes filled their budget (logged as errors)
        self.frame_rows_dropped = 0  # frame-only results not saved while the journal failed (logged as errors)
        self._frame_rows: list[FrameRow] = []
        self._frame_rows_since = time.monotonic()
        self._peak: Optional[tuple[Frame, object]] = None
        self._snap_seq: Optional[int] = None
        self._last_snapshot: dict[str, dict] = {}
        self._outbox_depth = 0
        self._fail_log = _RateLimitedLog()
        # One limiter per kind of failure, so a failing snapshot cannot hide the journal's error (or the reverse).
        self._journal_log = _RateLimitedLog()
        self._snapshot_log = _RateLimitedLog()
        self._status_log = _RateLimitedLog()
        self.reserve = Reserve(config.layout.held_writes_reserve)
        self._outbox_level = -1
        self._pid_fd: Optional[int] = None
        self.journal: Optional[Journal] = None
        self.publisher: Optional[Publisher] = None
        self.metrics = None  # edge.outputs.metrics.Metrics when enabled
        self.journal_write_failures = 0
        self.engine: Optional[Engine] = None
        self.source = None
        self._threads: list[threading.Thread] = []
        self.exit_code = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open everything; raises StartupError with one line on any problem."""
        cfg = self.cfg
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"{self.state_dir}: cannot create state directory ({exc.strerror})") from None
        if not os.access(self.state_dir, os.W_OK):
            raise StartupError(f"{self.state_dir}: state directory is not writable ({_why_unwritable(self.state_dir)})")
        self._lock_pid_file()
        try:
            self.engine = build_engine(cfg)
        except (BundleError, RuntimeUnavailable, ValueError) as exc:
            self._release_pid_file()
            raise StartupError(f"model.bundle: {exc}") from None
        self.decision = Decision(decision_params(cfg, self.engine))
        held = self.reserve.load()  # writes a stop on a full disk kept for us
        try:
            self.journal = self._open_journal()
        except (JournalError, OSError, sqlite3.Error) as exc:
            self._release_pid_file()
            raise StartupError(str(exc)) from None
        if held:
            log.warning("%d journal writes held by the last run (disk full at its stop) read from %s", len(held), self.reserve.path)
            for item in held:
                self._hold(item)
            self._retry_pending_writes()
            if self._pending_writes and self.reserve.release():
                # Still full: the reserve's own space makes room to journal them (journalled beats held in memory).
                log.error("%s: the disk is still full: removed the reserve to journal the held writes", self.reserve.path)
                self._retry_pending_writes()
            if not self._pending_writes:
                self.reserve.clear()
                log.info("held journal writes of the last run are in the journal now")
        self.reserve.ensure()
        self._close_interrupted_events()
        if cfg.mqtt.enabled:
            try:
                password = cfg.mqtt_password()
            except ConfigError as exc:
                self._release_pid_file()
                raise StartupError(str(exc)) from None
            publisher_class = Publisher
            if cfg.mqtt.format == "sparkplug_b":
                from edge.outputs.sparkplug import SparkplugPublisher as publisher_class
            try:
                self.publisher = publisher_class(cfg, self.journal, self._identity(), password)
            except RuntimeError as exc:  # a missing optional library
                self._release_pid_file()
                raise StartupError(str(exc)) from None
            homeassistant.attach(cfg, self.publisher)
            self.publisher.publish_camera("starting", {})
            self.publisher.start()
        self.source = self._given_source or make_source(cfg.source, stop=self.stop_event)
        s = cfg.source
        self.resilient = ResilientSource(
            self.source, s.read_timeout_s, s.retry_initial_s, s.retry_max_s, on_state=self._on_camera_state, stop=self.stop_event
        )
        self.metrics = metrics.start_for(self)
        self._spawn("capture", self._capture_loop)
        self._spawn("housekeeping", self._housekeeping_loop)
        log.info(
            "crackd %s started: device %s, source %s, bundle %s (%s), state %s, MQTT %s",
            __version__, cfg.device_id, s.type, self.engine.bundle.version, self.engine.path, self.state_dir,
            f"{cfg.mqtt.host}:{cfg.mqtt.port}" if cfg.mqtt.enabled else "off",
        )
        self._write_status()
        self.notifier.ready(self._status_line())

    def _open_journal(self) -> Journal:
        """The journal; on a disk too full to open it (SQLite needs room for its -shm file), the reserve gives its space."""
        cfg = self.cfg
        try:
            return Journal(cfg.db_path, on_corrupt=cfg.storage.on_corrupt_db)
        except JournalUnavailable as exc:
            freed = self.reserve.release()
            if not freed:
                raise
            log.error("%s; the disk is full: removed the %d KB reserve %s so the journal can open and the outbox drain",
                      exc, freed // 1024, self.reserve.path)
            return Journal(cfg.db_path, on_corrupt=cfg.storage.on_corrupt_db)

    def _close_interrupted_events(self) -> None:
        """Events left open by a crash or power cut are ended now (reason `interrupted`) and announced."""
        held = {w.record.uuid for item, _ in self._pending_writes for w in item[1] if w.record.kind == END}
        for row in self.journal.list_events(state="open", newest_first=False):
            if row["uuid"] in held:  # its real end is among the held writes
                continue
            record = EventRecord(
                kind=END, uuid=row["uuid"], revision=int(row["revision"]) + 1, started_at=row["started_at"], t=time.time(),
                ended_at=row["updated_at"], frames=row["frames"], peak_score=row["peak_score"],
                peak_measurements=row["peak_measurements"], peak_frame_seq=row["peak_frame_seq"],
                first_frame_seq=row["first_frame_seq"], last_frame_seq=row["last_frame_seq"], end_reason="interrupted",
            )
            write = EventWrite(record, row["bundle_version"], row["bundle_sha256"], row["device_id"] or self.cfg.device_id)
            messages = []
            if self.cfg.mqtt.enabled:
                snap = {"frame": row["snapshot"], "overlay": row["overlay"], "frame_seq": None} if row["snapshot"] else None
                payload = event_payload(record, write.device_id, write.bundle_version, write.bundle_sha256, snap)
                messages.append(OutboxMessage(self.cfg.topic("event"), payload, self.cfg.mqtt.qos, False, record.uuid))
            log.warning("event %s was left open by an interrupted run; ended it (reason: interrupted)", record.uuid)
            item = ([], [write], messages)
            try:
                self.journal.record(*item)
            except sqlite3.Error as exc:
                self._journal_failed(item, exc)

    def _spawn(self, name, target) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _identity(self) -> dict:
        b = self.engine.bundle
        return {
            "version": __version__,
            "bundle_version": b.version,
            "bundle_sha256": b.sha256,
            "started_at": iso_utc(self.started_at),
            "last_reload": self.last_reload,
        }

    def _lock_pid_file(self) -> None:
        """The lock on STATE/crackd.pid keeps a second daemon out; writing the pid is only informative.

        So a full disk (the pid cannot be written) does not stop the start: the outbox still has to drain.
        """
        path = self.cfg.layout.pid_file
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StartupError(f"{path}: cannot open the pid file ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise StartupError(f"{self.state_dir}: another crackd (pid {other}) is running with this state directory") from None
            raise
        self._pid_fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            log.error("%s: cannot write the pid (%s); continuing (the lock is held)", path, exc.strerror)

    def _release_pid_file(self) -> None:
        if self._pid_fd is not None:
            try:
                self.cfg.layout.pid_file.unlink()
            except FileNotFoundError:
                pass
            os.close(self._pid_fd)
            self._pid_fd = None

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: stop after the current frame (twice: exit now). SIGHUP: reload."""

        def on_stop(signum, frame):
            if self.stop_event.is_set():
                log.warning("second %s: exiting now", signal.Signals(signum).name)
                os._exit(1)
            log.info("%s: finishing the current frame, then stopping", signal.Signals(signum).name)
            self.request_stop()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, lambda signum, frame: self.request_reload())

    def request_stop(self) -> None:
        self.stop_event.set()
        self.slot.close()

    def request_reload(self) -> None:
        self._reload_requested.set()

    def run(self) -> int:
        """The main loop; returns the exit code when stopped (signal, or a finite source ended)."""
        next_t = 0.0
        while not self.stop_event.is_set():
            self._loop_mono = time.monotonic()
            self._maybe_reload()
            max_fps = self.cfg.max_fps
            if max_fps:
                delay = next_t - time.monotonic()
                if delay > 0 and self.stop_event.wait(delay):
                    break
            frame = self.slot.get(0.25)
            if frame is None:
                if self._frame_rows and time.monotonic() - self._frame_rows_since >= FRAME_BATCH_S:
                    self._flush_frame_rows()
                if self.slot.closed:
                    break
                continue
            if max_fps:
                next_t = max(time.monotonic(), next_t) + 1.0 / max_fps
            self.process_frame(frame)
        self.shutdown()
        return self.exit_code

    def shutdown(self) -> None:
        """Flush and close within a bounded time: end the open event, drain the outbox briefly, close."""
        self.stop_event.set()
        self.slot.close()
        self.notifier.stopping("stopping: flushing journal and outbox")
        flush_deadline = time.monotonic() + self.cfg.mqtt.flush_timeout_s
        try:
            records = self.decision.flush(time.time(), "shutdown")
            if records:
                self._journal_records(records, None, None)
            self._flush_frame_rows()
            self._retry_pending_writes()
            if self._pending_writes:
                self._save_held_writes()
        except Exception:
            log.exception("flushing the open event failed")
        for t in self._threads:
            t.join(timeout=max(0.1, min(2.0, flush_deadline - time.monotonic())))
        if self.publisher is not None:
            remaining = max(0.0, flush_deadline - time.monotonic())
            flushed = self.publisher.flush(remaining)
            depth = self.journal.outbox_depth()
            if not flushed and depth:
                log.warning("stopping with %d undelivered MQTT messages in the outbox; they are sent after the next start", depth)
            self.publisher.stop("shutdown", timeout=1.0)
        try:
            self.resilient.close()
        except Exception:
            pass
        self._write_status(state="stopped")
        if self.metrics is not None:
            self.metrics.stop()
        if self.journal is not None:
            self.journal.close()
        self._release_pid_file()
        log.info("crackd stopped after %d frames", self.frames_processed)

    def _save_held_writes(self) -> None:
        items = [item for item, _ in self._pending_writes]
        try:
            saved = self.reserve.save(items)
        except OSError as exc:
            log.error("%d held journal writes (events and their MQTT messages) are LOST: the journal cannot be written (%s) "
                      "and neither can %s (%s)", len(items), self.journal.write_error, self.reserve.path, exc.strerror or exc)
            return
        log.warning("the journal cannot be written (%s): %d held event writes saved to %s; they are journalled at the next start",
                    self.journal.write_error, saved, self.reserve.path)
        if saved < len(items):
            log.error("%d held journal writes did not fit in %s and are LOST", len(items) - saved, self.reserve.path)

    # ------------------------------------------------------------------ capture

    def _capture_loop(self) -> None:
        wait = bool(getattr(self.source, "lossless", False))
        while not self.stop_event.is_set():
            try:
                frame = self.resilient.read()
            except SourceExhausted:
                log.info("source finished: stopping after the last frame")
                self.slot.close()
                return
            except SourceFailed as exc:  # not an end: exit non-zero so Restart=on-failure (and whoever watches) acts
                log.error("%s; stopping with exit code 1", exc)
                self.exit_code = 1
                self.slot.close()
                return
            except ResilientSource.Stopped:
                return
            except Exception:
                log.exception("capture thread: unexpected error; retrying")
                self.stop_event.wait(1.0)
                continue
            self.last_capture_mono = time.monotonic()
            self.slot.put(frame, wait=wait, stop=self.stop_event)

    def _on_camera_state(self, state: str, info: dict) -> None:
        self.camera_state = state
        if self.publisher is not None:
            self.publisher.publish_camera(state, info)

    # ------------------------------------------------------------------ the frame path

    def process_frame(self, frame: Frame) -> None:
        engine = self.engine
        try:
            result = engine.cascade.process(frame.rgb)
        except Exception as exc:
            self.frames_failed += 1
            self._fail_log(logging.ERROR, "frame %d could not be processed: %s: %s", frame.seq, type(exc).__name__, exc)
            return
        measurements = result.measurements.to_dict() if result.measurements is not None else None
        obs = FrameObservation(seq=frame.seq, t=frame.t, score=float(result.score), measurements=measurements)
        records = self.decision.observe(obs)
        if self.decision.active and self.decision.peak_frame_seq == frame.seq:
            self._peak = (frame, result)
        event_uuid = self.decision.active or (records[-1].uuid if records else None)
        policy = self.cfg.storage.record_frames
        frame_row = None
        if policy == "all" or (policy == "cracks" and (result.crack or event_uuid)):
            frame_row = FrameRow(
                t=frame.t, seq=frame.seq, crack=bool(result.crack), score=float(result.score), segmented=bool(result.segmented),
                measurements=measurements, latency_ms=round(result.timings_ms.get("total", 0.0), 3),
                bundle_version=engine.bundle.version, event_uuid=event_uuid, ref=frame.ref,
            )
        self._retry_pending_writes()
        self._journal_records(records, frame_row, (frame, result))
        self.frames_processed += 1
        now = time.monotonic()
        self.last_frame_mono = now
        self.latency_ms.append((now - frame.mono) * 1000.0)
        if self.metrics is not None:
            self.metrics.observe_frame(result, now - frame.mono)
        self.inference_ms.append(result.timings_ms.get("total", 0.0))
        if self.publisher is not None:
            self.publisher.publish_frame(lambda: {
                "seq": frame.seq, "t": iso_utc(frame.t), "crack": bool(result.crack), "score": round(float(result.score), 4),
                "segmented": bool(result.segmented),
                "measurements": {k: v for k, v in measurements.items() if k != "components"} if measurements else None,
                "event_uuid": event_uuid, "latency_ms": round(result.timings_ms.get("total", 0.0), 2),
                "bundle_version": engine.bundle.version,
            })

    def _journal_records(self, records, frame_row: Optional[FrameRow], current) -> None:
        """Snapshots for event records, then ONE journal transaction with the outbox messages."""
        b = self.engine.bundle
        writes, messages = [], []
        for r in records:
            snap = self._snapshot_for(r, current)
            picture = snapshots_mqtt.attach(self.cfg, self.state_dir, r, snap)
            if picture is not None:
                messages.append(picture)  # before the event that names it: the retained picture is there first
            writes.append(EventWrite(r, b.version, b.sha256, self.cfg.device_id, snap and snap["frame"], snap and snap["overlay"]))
            if self.cfg.mqtt.enabled:
                payload = event_payload(r, self.cfg.device_id, b.version, b.sha256, snap or self._last_snapshot.get(r.uuid))
                messages.append(OutboxMessage(self.cfg.topic("event"), payload, self.cfg.mqtt.qos, False, r.uuid))
            if r.kind == START:
                self.events_started += 1
                log.warning(
                    "crack event %s started (score %.2f)", r.uuid, r.peak_score, extra={"EVENT_UUID": r.uuid, "EVENT_TYPE": r.kind}
                )
            elif r.kind == END:
                log.info("crack event %s ended after %d frames (peak score %.2f)", r.uuid, r.frames, r.peak_score,
                         extra={"EVENT_UUID": r.uuid, "EVENT_TYPE": r.kind})
                self._last_snapshot.pop(r.uuid, None)
                self._peak, self._snap_seq = None, None
        if frame_row is not None:
            self._frame_rows.append(frame_row)
        if not writes and not messages:
            # Frame-only results are batched (one transaction per FRAME_BATCH_S): SD cards wear with every commit.
            if self._frame_rows and (len(self._frame_rows) >= FRAME_BATCH_ROWS
                                     or time.monotonic() - self._frame_rows_since >= FRAME_BATCH_S):
                self._flush_frame_rows()
            return
        rows, self._frame_rows = self._frame_rows, []
        self._frame_rows_since = time.monotonic()
        item = (rows, writes, messages)
        if self._pending_writes:  # keep the order: nothing overtakes what is already held
            self._retry_pending_writes()
        if self._pending_writes:
            self._hold(item)
            return
        try:
            self.journal.record(*item)
            self.frames_recorded += len(rows)
        except sqlite3.Error as exc:
            self.journal_write_failures += 1
            self._journal_failed(item, exc)
            return
        if messages and self.publisher is not None:
            self.publisher.notify()

    def _journal_failed(self, item, exc: Exception) -> None:
        self._hold(item)
        self._journal_log(logging.ERROR, "journal %s: write failed (%s); %d event writes held in memory and retried",
                          self.cfg.db_path, exc, len(self._pending_writes))

    def _hold(self, item) -> None:
        """Hold an event write in memory, within the reserve's budget (so a stop can save all of it).

        Beyond the budget the write is refused: an ERROR line and a count in stats, never a silent drop.
        Its frame rows are kept only as long as the held item is (they are not saved at a stop).
        """
        item, pictures = without_pictures(item)
        if pictures:
            self._snapshot_log(logging.WARNING, "journal cannot be written: %d snapshot picture(s) for MQTT not kept "
                               "(events before pictures)", pictures)
        rows, writes, messages = item
        if not writes and not messages:
            self.frame_rows_dropped += len(rows)
            self._journal_log(logging.ERROR, "journal cannot be written: %d frame results dropped (%d so far)",
                              len(rows), self.frame_rows_dropped)
            return
        size = encoded_size(item)
        if len(self._pending_writes) >= HELD_WRITES_MAX or self._held_bytes + size > self.reserve.capacity:
            self.writes_dropped += 1
            log.error("journal cannot be written and %d held writes fill their %d KB budget: event %s (%s) and its MQTT "
                      "message are NOT recorded (%d dropped so far)", len(self._pending_writes), self.reserve.capacity // 1024,
                      writes[0].record.uuid if writes else "?", writes[0].record.kind if writes else "message", self.writes_dropped)
            return
        self._pending_writes.append((item, size))
        self._held_bytes += size

    def _flush_frame_rows(self) -> None:
        rows, self._frame_rows = self._frame_rows, []
        self._frame_rows_since = time.monotonic()
        if not rows:
            return
        try:
            self.journal.record(rows)
            self.frames_recorded += len(rows)
        except sqlite3.Error as exc:  # frame results are not detections: dropped (counted), not held
            self.journal_write_failures += 1
            self.frame_rows_dropped += len(rows)
            self._journal_log(logging.ERROR, "journal %s: write of %d frame results failed (%s); dropped (%d so far)",
                              self.cfg.db_path, len(rows), exc, self.frame_rows_dropped)

    def _retry_pending_writes(self) -> None:
        while self._pending_writes:
            item, size = self._pending_writes[0]
            try:
                self.journal.record(*item)
            except sqlite3.Error:
                return
            self._pending_writes.popleft()
            self._held_bytes -= size
            self.frames_recorded += len(item[0])
            if item[2] and self.publisher is not None:
                self.publisher.notify()
            if not self._pending_writes:
                log.warning("journal %s writable again: every held write is saved", self.cfg.db_path)

    # ------------------------------------------------------------------ snapshots

    def _snapshot_for(self, record, current) -> Optional[dict]:
        """Write (or rewrite with a better peak) the event's frame + overlay JPEGs; returns their relative paths."""
        st = self.cfg.storage
        if not st.snapshots or st.snapshot_budget_mb <= 0:
            return None
        if record.kind == START and current is not None:
            source = current
        elif self._peak is not None and self._peak[0].seq != self._snap_seq and self.decision.active in (None, record.uuid):
            source = self._peak
        else:
            return None
        if self._pending_writes or self.journal.write_error:
            self._snapshot_log(logging.WARNING, "snapshot for event %s skipped: the journal cannot be written (events before pictures)",
                               record.uuid)
            return None
        free = _free_bytes(self.state_dir)
        if free is not None and free < SNAPSHOT_MIN_FREE_BYTES:
            self._snapshot_log(logging.WARNING, "snapshot for event %s skipped: only %.1f MB free in %s (events before pictures)",
                               record.uuid, free / 1024 / 1024, self.state_dir)
            return None
        frame, result = source
        day = time.strftime("%Y%m%d", time.gmtime(record.started_at))
        rel_frame, rel_overlay = self.cfg.layout.snapshot_pictures(day, record.uuid)
        try:
            from edge.engine.overlay import draw_overlay

            (self.cfg.layout.snapshots / day).mkdir(parents=True, exist_ok=True)
            q = [cv2.IMWRITE_JPEG_QUALITY, st.snapshot_quality]
            picture = frame.main_bgr if frame.main_bgr is not None else cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)
            overlay = cv2.cvtColor(draw_overlay(frame.rgb, result), cv2.COLOR_RGB2BGR)
            for rel, bgr in ((rel_frame, picture), (rel_overlay, overlay)):
                ok, data = cv2.imencode(".jpg", np.ascontiguousarray(bgr), q)
                if not ok:
                    raise OSError("JPEG encoding failed")
                write_bytes_atomic(self.state_dir / rel, data.tobytes())  # no half-written picture left behind
        except Exception as exc:
            self._snapshot_log(logging.ERROR, "snapshot for event %s failed: %s", record.uuid, exc)
            return None
        self._snap_seq = frame.seq
        snap = {"frame": rel_frame, "overlay": rel_overlay, "frame_seq": frame.seq}
        self._last_snapshot[record.uuid] = snap
        self._enforce_snapshot_budget(keep={rel_frame, rel_overlay})
        return snap

    def _enforce_snapshot_budget(self, keep: set) -> None:
        root = self.cfg.layout.snapshots
        budget = self.cfg.storage.snapshot_budget_mb * 1024 * 1024
        files = {}
        for dirpath, _dirs, names in os.walk(root):
            for n in names:
                p = Path(dirpath) / n
                try:
                    files[str(p.relative_to(self.state_dir))] = p.stat()
                except OSError:
                    pass
        total = sum(s.st_size for s in files.values())
        if total <= budget:
            return
        known = self.journal.snapshot_order()
        known_set = set(known)
        orphans = sorted((r for r in files if r not in known_set), key=lambda r: files[r].st_mtime)
        for rel in orphans + known:
            if total <= budget:
                break
            if rel in keep or rel not in files:
                continue
            try:
                (self.state_dir / rel).unlink()
            except OSError:
                continue
            total -= files[rel].st_size
            self.journal.forget_snapshot(rel)
            log.info("snapshot budget: deleted %s", rel)

    # ------------------------------------------------------------------ reload

    def _maybe_reload(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._swap(*pending)
        if self._reload_requested.is_set() and not self._reloading:
            self._reload_requested.clear()
            self._reloading = True
            self.notifier.reloading()
            threading.Thread(target=self._reload_worker, name="reload", daemon=True).start()

    def _reload_worker(self) -> None:
        try:
            old = self.cfg
            new = load_config(self.config_path) if self.config_path else old
            new = self._keep_restart_only_settings(old, new)
            engine = build_engine(new, verify_golden=True)
        except (ConfigError, BundleError, RuntimeUnavailable, ValueError, OSError) as exc:
            self._reload_done(ok=False, error=str(exc))
            return
        except Exception as exc:  # anything else must not kill the daemon either
            log.exception("reload failed unexpectedly")
            self._reload_done(ok=False, error=f"{type(exc).__name__}: {exc}")
            return
        with self._pending_lock:
            self._pending = (new, engine)

    def _keep_restart_only_settings(self, old: Config, new: Config) -> Config:
        """Source, MQTT, device id and journal location need a restart: keep the running ones, say so."""
        changed = [name for name, a, b in (
            ("source", old.source, new.source), ("mqtt", old.mqtt, new.mqtt), ("device_id", old.device_id, new.device_id),
            ("storage.state_dir", old.storage.state_dir, new.storage.state_dir), ("storage.db", old.storage.db, new.storage.db),
            ("homeassistant", old.homeassistant, new.homeassistant), ("metrics", old.metrics, new.metrics),
        ) if a != b]
        if changed:
            log.warning("reload: %s changed; restart crackd to apply (kept the running settings)", ", ".join(changed))
        storage = dataclasses.replace(new.storage, state_dir=old.storage.state_dir, db=old.storage.db)
        return dataclasses.replace(new, source=old.source, mqtt=old.mqtt, device_id=old.device_id, storage=storage,
                                   homeassistant=old.homeassistant, metrics=old.metrics)

    def _swap(self, cfg: Config, engine: Engine) -> None:
        old = self.engine
        self.cfg = cfg
        self.engine = engine
        self.decision.set_params(decision_params(cfg, engine))
        logging.getLogger().setLevel(cfg.logging.level.upper())
        log.info("reload: now serving bundle %s (%s), was %s", engine.bundle.version, engine.path, old.bundle.version)
        self._reload_done(ok=True, error=None)

    def _reload_done(self, ok: bool, error: Optional[str]) -> None:
        self.last_reload = {"time": iso_utc(time.time()), "ok": ok, "error": error,
                            "bundle_version": self.engine.bundle.version}
        if not ok:
            log.error("reload failed, still serving bundle %s: %s", self.engine.bundle.version, error)
        if self.publisher is not None:
            b = self.engine.bundle
            self.publisher.update_identity(bundle_version=b.version, bundle_sha256=b.sha256, last_reload=self.last_reload)
        self._reloading = False
        self._write_status()
        self.notifier.ready(self._status_line() if ok else f"reload failed, serving {self.engine.bundle.version}: {error}"[:200])

    # ------------------------------------------------------------------ status, watchdog, stats

    def _health_window_s(self) -> float:
        s = self.cfg.source
        adapter = adapter_for(s.type)
        fps = adapter.nominal_fps(s.options)
        return max(self.HEALTH_WINDOW_MIN_S, 3.0 / fps if fps else 0.0, 2.0 * s.read_timeout_s if adapter.live else 0.0)

    def last_frame_age_s(self) -> Optional[float]:
        return None if self.last_frame_mono is None else time.monotonic() - self.last_frame_mono

    def journal_problem(self) -> Optional[str]:
        """Why the journal is not healthy (writes failing or held, writes dropped), or None."""
        j = self.journal
        error = j.write_error if j is not None else None
        if not error and not self._pending_writes and not self.writes_dropped:
            return None
        parts = [error or "writable again"]
        if self._pending_writes:
            parts.append(f"{len(self._pending_writes)} event writes held in memory")
        if self.writes_dropped:
            parts.append(f"{self.writes_dropped} event writes dropped")
        return "; ".join(parts)

    def healthy(self) -> bool:
        age = self.last_frame_age_s()
        frames_ok = self.engine is not None and age is not None and age <= self._health_window_s()
        return frames_ok and self.journal_problem() is None

    def status(self, state: str = "running") -> dict:
        b = self.engine.bundle if self.engine else None
        age = self.last_frame_age_s()
        h = self.resilient.health if getattr(self, "resilient", None) else None
        return {
            "pid": os.getpid(),
            "state": state,
            "version": __version__,
            "device_id": self.cfg.device_id,
            "started_at": iso_utc(self.started_at),
            "updated_at": iso_utc(time.time()),
            "uptime_s": round(time.monotonic() - self._t0, 1),
            "bundle_path": str(self.engine.path.resolve()) if self.engine else None,
            "bundle_version": b.version if b else None,
            "bundle_sha256": b.sha256 if b else None,
            "frames_processed": self.frames_processed,
            "frames_skipped": self.slot.skipped,
            "frames_failed": self.frames_failed,
            "frames_bad": h.bad_frames if h else 0,
            "frames_recorded": self.frames_recorded,
            "fps": round(self.fps, 2),
            "last_frame_age_s": None if age is None else round(age, 2),
            "latency_ms": {"p50": _percentile(self.latency_ms, 50), "p95": _percentile(self.latency_ms, 95)},
            "inference_ms": {"p50": _percentile(self.inference_ms, 50), "p95": _percentile(self.inference_ms, 95)},
            "events_started": self.events_started,
            "event_open": self.decision.active if getattr(self, "decision", None) else None,
            "outbox_depth": self._outbox_depth,
            "mqtt_enabled": self.cfg.mqtt.enabled,
            "broker_connected": bool(self.publisher and self.publisher.connected),
            "broker_error": self.publisher.last_error if self.publisher else None,
            "mqtt_delivered": self.publisher.published if self.publisher else 0,
            "mqtt_replayed": self.publisher.replayed if self.publisher else 0,
            "pending_writes": len(self._pending_writes),
            "journal_error": self.journal_problem(),
            "journal_writes_dropped": self.writes_dropped,
            "frame_rows_dropped": self.frame_rows_dropped,
            "camera_state": self.camera_state,
            "camera": {"source": self.cfg.source.type, **(h.as_dict() if h else {})},
            "healthy": state == "running" and self.healthy(),
            "last_reload": self.last_reload,
            "rss_mb": rss_mb(),
        }

    def _write_status(self, state: str = "running") -> None:
        try:
            if self.journal is not None and self.journal._conn is not None:
                self._outbox_depth = self.journal.outbox_depth()
            write_json_atomic(self.cfg.layout.status_file, self.status(state))
        except Exception as exc:
            self._status_log(logging.ERROR, "%s: %s", self.cfg.layout.status_file, exc)

    def _status_line(self) -> str:
        b = self.engine.bundle.version if self.engine else "?"
        broker = "off" if not self.publisher else ("connected" if self.publisher.connected else "disconnected")
        return f"{self.fps:.1f} fps, camera {self.camera_state}, bundle {b}, outbox {self._outbox_depth}, broker {broker}"

    def stats(self) -> dict:
        st = self.status()
        return {
            "uptime_s": st["uptime_s"],
            "fps": st["fps"],
            "frames_processed": st["frames_processed"],
            "frames_skipped": st["frames_skipped"],
            "frames_failed": st["frames_failed"],
            "frames_bad": st["frames_bad"],
            "latency_ms": st["latency_ms"],
            "inference_ms": st["inference_ms"],
            "outbox_depth": st["outbox_depth"],
            "events_started": st["events_started"],
            "camera_state": st["camera_state"],
            "cpu_temp_c": cpu_temperature_c(),
            "disk_free_mb": disk_free_mb(self.state_dir),
            "rss_mb": st["rss_mb"],
            "bundle_version": st["bundle_version"],
            "journal_error": st["journal_error"],
            "journal_writes_dropped": st["journal_writes_dropped"],
        }

    def _housekeeping_loop(self) -> None:
        last_count, last_t = 0, time.monotonic()
        next_stats = time.monotonic() + min(5.0, self.cfg.stats_interval_s)
        next_prune = time.monotonic() + 5.0
        next_status_line = 0.0
        next_watchdog = 0.0
        wd = self.notifier.watchdog_interval_s
        tick = min(0.2, wd / 2) if wd else 0.2
        while not self.stop_event.wait(tick):
            now = time.monotonic()
            if now - last_t >= 1.0:
                rate = (self.frames_processed - last_count) / (now - last_t)
                self.fps = rate if self.fps == 0 else 0.5 * self.fps + 0.5 * rate
                last_count, last_t = self.frames_processed, now
                self._write_status()
            self._check_capture_hang(now)
            wd = self.notifier.watchdog_interval_s
            if wd and now >= next_watchdog:
                if self.process_alive(now):
                    self.notifier.watchdog()
                next_watchdog = now + wd
            if self.notifier.enabled and now >= next_status_line:
                self.notifier.status(self._status_line())
                next_status_line = now + 10.0
            if now >= next_stats:
                next_stats = now + self.cfg.stats_interval_s
                if self.publisher is not None:
                    try:
                        self.publisher.publish_stats(self.stats())
                    except Exception:
                        log.exception("stats failed")
                self._check_outbox_fill()
            if now >= next_prune:
                next_prune = now + PRUNE_INTERVAL_S
                self.prune()

    def process_alive(self, now: Optional[float] = None) -> bool:
        """What the systemd watchdog is fed on: the process works, whatever the camera does.

        A camera that is away (unplugged, stalled, reconnecting) is a state, published and in status.json,
        and the daemon keeps journalling and draining the outbox meanwhile; restarting would not bring the
        camera back and, repeated, would leave the unit failed (StartLimitBurst). The pings stop only when
        the main loop stops turning, or when a call into the camera driver has not returned for
        CAPTURE_HANG_S (a wedged driver: only a new process cures it).
        """
        now = time.monotonic() if now is None else now
        if now - self._loop_mono > self.LOOP_STUCK_S:
            return False
        busy = self.resilient.busy_since if getattr(self, "resilient", None) is not None else None
        return busy is None or now - busy <= self.capture_hang_s()

    def capture_hang_s(self) -> float:
        return max(self.CAPTURE_HANG_MIN_S, 4.0 * self.cfg.source.read_timeout_s)

    def _check_capture_hang(self, now: float) -> None:
        """A capture call that never returns (a driver hang no timeout catches) is reported as a stall.

        The thread cannot be interrupted; frames stop, so the watchdog pings stop and systemd restarts us.
        """
        if self.last_capture_mono is None or getattr(self, "resilient", None) is None:
            return
        limit = max(self._health_window_s(), 2.0 * self.cfg.source.read_timeout_s)
        waiting_for_frames = not self.slot.pending and not self.slot.closed  # not merely blocked on a full queue
        if self.resilient.state == "ok" and waiting_for_frames and now - self.last_capture_mono > limit:
            self.resilient.mark_stalled(f"no frame from the source for {now - self.last_capture_mono:.0f}s")

    def prune(self) -> None:
        st = self.cfg.storage
        try:
            report = self.journal.prune(st.retention_days, st.max_db_mb)
        except Exception as exc:
            log.error("retention failed: %s", exc)
            return
        for rel in report.files:
            try:
                (self.state_dir / rel).unlink()
            except OSError:
                pass
        if report.frames or report.events:
            log.info("retention: deleted %d frames and %d events; journal uses %.1f MB", report.frames, report.events, report.used_mb)
        if report.over_budget:
            log.warning("journal uses %.1f MB, over storage.max_db_mb=%g, and nothing more may be deleted (undelivered outbox or labelled events)", report.used_mb, st.max_db_mb)

    def _check_outbox_fill(self) -> None:
        try:
            used = self.journal.outbox_bytes()
        except Exception:
            return
        fraction = used / (self.cfg.storage.max_db_mb * 1024 * 1024)
        levels = list(self.cfg.storage.outbox_warn_levels)
        level = max((i for i, v in enumerate(levels) if fraction >= v), default=-1)
        if level > self._outbox_level:
            log.warning(
                "OUTBOX FILLING: %d undelivered MQTT messages use %.0f%% of storage.max_db_mb (%g MB); broker %s:%d unreachable? (%s)",
                self._outbox_depth, fraction * 100, self.cfg.storage.max_db_mb, self.cfg.mqtt.host, self.cfg.mqtt.port,
                self.publisher.last_error if self.publisher else "mqtt disabled",
            )
        self._outbox_level = level

