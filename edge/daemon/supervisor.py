"""The Supervisor: builds the daemon's parts from the config, starts them, stops them, reloads them.

Parts (each one job, in its own module of edge/daemon/):
  pidfile.PidLock               STATE/crackd.pid: one daemon per state directory
  engine.Engine                 the bundle and its cascade (swapped as one on reload)
  journal_writer.JournalWriter  the journal: frame-row batches, event transactions, writes held on a full disk
  detection_gate.DetectionGate  no frame taken while a detection could not be kept (a full disk), resumes by itself
  snapshots.SnapshotStore       event pictures and their disk budget
  capture.Capture               thread `capture`: the source -> FrameSlot (newest frame wins for live cameras)
  pipeline.FramePipeline        the main thread: frame -> Cascade -> Decision -> journal (+ each output's outbox rows)
  housekeeping.Housekeeper      thread `housekeeping`: status.json every second, watchdog, stats, retention
  status.DaemonStatus           what STATE/status.json holds (built by `Supervisor.status`)
  edge.outputs (build_outputs)  the event outputs the config switches on, each delivering its own outbox rows:
                                mqtt (threads `outbox` and paho's, edge.outputs.publisher), webhook (thread `webhook`)
Threads of its own: the main loop (`run`), which acts on signals between frames so the frame in
hand is always finished, and `reload` (SIGHUP), which loads and verifies the new config and bundle
beside the running ones; the main loop swaps them in between two frames (no frame's result dropped).
The supervisor also judges health (status.json's `healthy`, the watchdog) from what the parts report.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from edge import __version__
from edge.config import Config, ConfigError, load_config
from edge.daemon.capture import Capture, FrameSlot
from edge.daemon.detection_gate import DetectionGate
from edge.daemon.engine import Engine, build_engine
from edge.daemon.housekeeping import Housekeeper
from edge.daemon.journal_writer import JournalWriter
from edge.daemon.notify import Notifier
from edge.daemon.pidfile import PidFileLocked, PidLock
from edge.daemon.pipeline import FramePipeline, close_interrupted_events
from edge.daemon.rate_limited_log import RateLimitedLog
from edge.daemon.snapshots import SnapshotStore
from edge.daemon_status import CameraStatus, DaemonStatus, LastReload, Percentiles
from edge.engine.bundle import BundleError
from edge.engine.runtime import RuntimeUnavailable
from edge.events.journal import JournalError
from edge.outputs import snapshots_mqtt
from edge.outputs.base import EventOutput, OutputContext, build_outputs
from edge.outputs.metrics import Metrics
from edge.outputs.metrics import start_for as start_metrics
from edge.outputs.mqtt_events import MqttEvents
from edge.outputs.publisher import Publisher, cpu_temperature_c, disk_free_mb, rss_mb
from edge.sources import FrameSource, adapter_for, make_source
from edge.timestamps import iso_utc
from edge.vocabulary import CameraState

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The daemon cannot start (bad bundle, locked state dir, broken journal); str() is one line."""


def _why_unwritable(path: Path) -> str:
    """The reason a directory cannot be written (read-only file system, permission), from a real attempt."""
    try:
        fd, name = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(name)
        return "not writable for this user"
    except OSError as exc:
        return exc.strerror or str(exc)


class NotStarted(RuntimeError):
    """A part of the daemon was asked for before `Supervisor.start()` built it."""


@dataclass(frozen=True)
class Parts:
    """What `start()` built from the config; the supervisor starts, stops and reloads these."""

    writer: JournalWriter
    gate: DetectionGate
    snapshots: SnapshotStore
    publisher: Publisher | None
    capture: Capture
    pipeline: FramePipeline
    housekeeper: Housekeeper
    metrics: Metrics | None


class Supervisor:
    # Frames older than this (or 3 frame periods, or 2 read timeouts for cameras) mean "not healthy":
    # status.json says so and the watchdog pings stop.
    HEALTH_WINDOW_MIN_S = 5.0
    # The watchdog (process_alive): the main loop turns at least every 0.25 s (frame or not); a capture call
    # blocked this long (or 4 read timeouts) means a wedged driver.
    LOOP_STUCK_S = 10.0
    CAPTURE_HANG_MIN_S = 60.0

    def __init__(
        self,
        config: Config,
        config_path: str | Path | None = None,
        notifier: Notifier | None = None,
        source: FrameSource | None = None,
    ):
        """`source`: a FrameSource to use instead of the one `config.source` describes (tests, embedding)."""
        self.cfg = config
        self._given_source = source
        self.config_path = Path(config_path) if config_path else None
        self.notifier = notifier or Notifier()
        self.state_dir = config.state_dir
        self.stop_event = threading.Event()
        self._reload_requested = threading.Event()
        self._reloading = False
        self._pending: tuple[Config, Engine] | None = None
        self._pending_lock = threading.Lock()
        self.slot = FrameSlot()
        self.started_at = time.time()
        self._t0 = time.monotonic()
        self._loop_mono = time.monotonic()  # the main loop's heartbeat (watchdog)
        self.last_reload: LastReload | None = None
        self._status_log = RateLimitedLog(log)
        self._pid_lock = PidLock(config.layout.pid_file, config.state_dir)
        self._engine: Engine | None = None
        self._publisher: Publisher | None = None
        self._outputs: list[EventOutput] = []
        self._snapshot_check: snapshots_mqtt.DeliveryCheck | None = None
        self._parts: Parts | None = None

    # ------------------------------------------------------------------ the parts

    @property
    def started(self) -> bool:
        return self._parts is not None

    @property
    def parts(self) -> Parts:
        if self._parts is None:
            raise NotStarted("the daemon is not started")
        return self._parts

    @property
    def engine(self) -> Engine:
        """The engine serving now (replaced by a reload)."""
        if self._engine is None:
            raise NotStarted("no engine before the daemon started")
        return self._engine

    @property
    def pipeline(self) -> FramePipeline:
        return self.parts.pipeline

    @property
    def journal_writer(self) -> JournalWriter:
        return self.parts.writer

    @property
    def capture(self) -> Capture:
        return self.parts.capture

    @property
    def publisher(self) -> Publisher | None:
        return self._publisher

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
        try:
            self._pid_lock.acquire()
        except PidFileLocked as exc:
            raise StartupError(str(exc)) from None
        try:
            parts = self._parts = self._open_parts()
        except StartupError:
            self._pid_lock.release()
            raise
        parts.capture.start()
        parts.housekeeper.start()
        log.info(
            "crackd %s started: device %s, source %s, bundle %s (%s), state %s, MQTT %s",
            __version__,
            cfg.device_id,
            cfg.source.type,
            self.engine.bundle.version,
            self.engine.path,
            self.state_dir,
            f"{cfg.mqtt.host}:{cfg.mqtt.port}" if cfg.mqtt.enabled else "off",
        )
        self.write_status()
        self.notifier.ready(self._status_line())

    def _open_parts(self) -> Parts:
        cfg = self.cfg
        try:
            self._engine = build_engine(cfg)
        except (BundleError, RuntimeUnavailable, ValueError) as exc:
            raise StartupError(f"model.bundle: {exc}") from None
        writer = JournalWriter(cfg, on_messages=self._wake_outputs)
        try:
            writer.open()
        except (JournalError, OSError, sqlite3.Error) as exc:
            raise StartupError(str(exc)) from None
        snapshots = SnapshotStore(cfg, writer.journal)
        try:
            outputs = self._outputs = build_outputs(OutputContext(cfg, writer.journal, self._identity()))
        except (ConfigError, RuntimeError) as exc:  # a password or secret that is missing; an optional library
            raise StartupError(str(exc)) from None
        mqtt = next((o for o in outputs if isinstance(o, MqttEvents)), None)
        publisher = self._publisher = mqtt.publisher if mqtt is not None else None
        self._snapshot_check = mqtt.snapshot_check if mqtt is not None else None
        close_interrupted_events(writer, outputs)
        for output in outputs:
            output.start()
        source = self._given_source or make_source(cfg.source, stop=self.stop_event)
        capture = Capture(source, cfg.source, self.slot, self.stop_event, on_state=self._on_camera_state)
        metrics = start_metrics(self)
        pipeline = FramePipeline(cfg, self.engine, writer, snapshots, outputs, publisher, metrics)
        housekeeper = Housekeeper(
            cfg,
            self.stop_event,
            self.notifier,
            pipeline,
            writer,
            snapshots,
            publisher,
            write_status=self.write_status,
            check_capture_hang=self._check_capture_hang,
            process_alive=self.process_alive,
            status_line=self._status_line,
            stats=self.stats,
        )
        gate = DetectionGate(writer, on_change=self._on_keeping_changed)
        return Parts(writer, gate, snapshots, publisher, capture, pipeline, housekeeper, metrics)

    def _wake_outputs(self) -> None:
        for output in self._outputs:
            output.notify()

    def _on_keeping_changed(self, reason: str | None) -> None:
        """Detections kept or not: the retained MQTT status says so at once (status.json within a second)."""
        if self._publisher is not None:
            self._publisher.update_identity(detections_paused=reason)

    def _on_camera_state(self, state: CameraState, info: dict) -> None:
        if self._publisher is not None:
            self._publisher.publish_camera(state, info)

    def _identity(self) -> dict:
        b = self.engine.bundle
        return {
            "version": __version__,
            "bundle_version": b.version,
            "bundle_sha256": b.sha256,
            "started_at": iso_utc(self.started_at),
            "last_reload": self.last_reload and dataclasses.asdict(self.last_reload),
        }

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: stop after the current frame (twice: exit now). SIGHUP: reload."""

        def on_stop(signum: int, frame: FrameType | None) -> None:
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
        parts = self.parts
        next_t = 0.0
        while not self.stop_event.is_set():
            self._loop_mono = time.monotonic()
            self._maybe_reload()
            parts.pipeline.samples.poll(self.engine.bundle)  # `crackd events flag-missed`, if one waits
            max_fps = self.cfg.max_fps
            if max_fps:
                delay = next_t - time.monotonic()
                if delay > 0 and self.stop_event.wait(delay):
                    break
            if not parts.gate.check():  # a detection now could not be kept: leave the frames to the camera
                parts.writer.flush_frame_rows_if_due()
                if self.stop_event.wait(0.25):
                    break
                continue
            frame = self.slot.get(0.25)
            if frame is None:
                parts.writer.flush_frame_rows_if_due()
                if self.slot.closed:
                    break
                continue
            if max_fps:
                next_t = max(time.monotonic(), next_t) + 1.0 / max_fps
            parts.pipeline.process(frame)
        self.shutdown()
        return parts.capture.exit_code

    def shutdown(self) -> None:
        """Flush and close within a bounded time: end the open event, drain the outbox briefly, close."""
        parts = self.parts
        self.stop_event.set()
        self.slot.close()
        self.notifier.stopping("stopping: flushing journal and outbox")
        flush_deadline = time.monotonic() + self.cfg.mqtt.flush_timeout_s
        try:
            parts.pipeline.finish()
            parts.writer.close()
        except Exception:
            log.exception("flushing the open event failed")
        for thread in (parts.capture, parts.housekeeper):
            thread.join(timeout=max(0.1, min(2.0, flush_deadline - time.monotonic())))
        for output in self._outputs:
            remaining = max(0.0, flush_deadline - time.monotonic())
            depth = 0 if output.flush(remaining) else parts.writer.journal.outbox_depth(output.name)
            if depth:
                log.warning(
                    "stopping with %d undelivered %s messages in the outbox; they are sent after the next start",
                    depth,
                    output.name,
                )
            output.stop(timeout=1.0)  # the mqtt output publishes `offline` and disconnects
        parts.capture.close()
        self.write_status(state="stopped")
        if parts.metrics is not None:
            parts.metrics.stop()
        parts.writer.close_journal()
        self._pid_lock.release()
        log.info("crackd stopped after %d frames", parts.pipeline.frames_processed)

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
        changed = [
            name
            for name, a, b in (
                ("source", old.source, new.source),
                ("mqtt", old.mqtt, new.mqtt),
                ("device_id", old.device_id, new.device_id),
                ("storage.state_dir", old.storage.state_dir, new.storage.state_dir),
                ("storage.db", old.storage.db, new.storage.db),
                ("homeassistant", old.homeassistant, new.homeassistant),
                ("metrics", old.metrics, new.metrics),
            )
            if a != b
        ]
        if changed:
            log.warning("reload: %s changed; restart crackd to apply (kept the running settings)", ", ".join(changed))
        storage = dataclasses.replace(new.storage, state_dir=old.storage.state_dir, db=old.storage.db)
        return dataclasses.replace(
            new,
            source=old.source,
            mqtt=old.mqtt,
            device_id=old.device_id,
            storage=storage,
            homeassistant=old.homeassistant,
            metrics=old.metrics,
        )

    def _swap(self, cfg: Config, engine: Engine) -> None:
        old, parts = self.engine, self.parts
        self.cfg = cfg
        self._engine = engine
        parts.pipeline.swap(cfg, engine)
        parts.snapshots.use_config(cfg)
        parts.housekeeper.use_config(cfg)
        logging.getLogger().setLevel(cfg.logging.level.upper())
        log.info("reload: now serving bundle %s (%s), was %s", engine.bundle.version, engine.path, old.bundle.version)
        self._reload_done(ok=True, error=None)

    def _reload_done(self, ok: bool, error: str | None) -> None:
        self.last_reload = LastReload(
            time=iso_utc(time.time()), ok=ok, error=error, bundle_version=self.engine.bundle.version
        )
        if not ok:
            log.error("reload failed, still serving bundle %s: %s", self.engine.bundle.version, error)
        if self.publisher is not None:
            b = self.engine.bundle
            self.publisher.update_identity(
                bundle_version=b.version, bundle_sha256=b.sha256, last_reload=dataclasses.asdict(self.last_reload)
            )
        self._reloading = False
        self.write_status()
        failed = f"reload failed, serving {self.engine.bundle.version}: {error}"[:200]
        self.notifier.ready(self._status_line() if ok else failed)

    # ------------------------------------------------------------------ health and the watchdog

    def _health_window_s(self) -> float:
        s = self.cfg.source
        adapter = adapter_for(s.type)
        fps = adapter.nominal_fps(s.options)
        return max(self.HEALTH_WINDOW_MIN_S, 3.0 / fps if fps else 0.0, 2.0 * s.read_timeout_s if adapter.live else 0.0)

    def healthy(self) -> bool:
        """Frames flow (the last one younger than the health window), the journal takes every write, and
        detections are kept."""
        parts = self.parts
        age = parts.pipeline.last_frame_age_s()
        return age is not None and age <= self._health_window_s() and parts.writer.problem() is None and parts.gate.open

    def process_alive(self, now: float | None = None) -> bool:
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
        busy = self.parts.capture.busy_since
        return busy is None or now - busy <= self.capture_hang_s()

    def capture_hang_s(self) -> float:
        return max(self.CAPTURE_HANG_MIN_S, 4.0 * self.cfg.source.read_timeout_s)

    def _check_capture_hang(self, now: float) -> None:
        self.parts.capture.check_hang(now, max(self._health_window_s(), 2.0 * self.cfg.source.read_timeout_s))

    # ------------------------------------------------------------------ status.json, stats, the systemd status line

    def status(self, state: str = "running") -> DaemonStatus:
        """What STATE/status.json says now (edge.daemon_status): the parts' figures and the supervisor's judgement."""
        parts, b = self.parts, self.engine.bundle
        pipeline, writer, capture, pub = parts.pipeline, parts.writer, parts.capture, parts.publisher
        age, h = pipeline.last_frame_age_s(), capture.health
        return DaemonStatus(
            pid=os.getpid(),
            state=state,
            version=__version__,
            device_id=self.cfg.device_id,
            started_at=iso_utc(self.started_at),
            updated_at=iso_utc(time.time()),
            uptime_s=round(time.monotonic() - self._t0, 1),
            bundle_path=str(self.engine.path.resolve()),
            bundle_version=b.version,
            bundle_sha256=b.sha256,
            frames_processed=pipeline.frames_processed,
            frames_skipped=self.slot.skipped,
            frames_failed=pipeline.frames_failed,
            frames_bad=h.bad_frames,
            frames_recorded=writer.frames_recorded,
            fps=round(pipeline.fps, 2),
            last_frame_age_s=None if age is None else round(age, 2),
            latency_ms=Percentiles(*pipeline.latency_percentiles()),
            inference_ms=Percentiles(*pipeline.inference_percentiles()),
            events_started=pipeline.events_started,
            event_open=pipeline.decision.active,
            outbox_depth=writer.outbox_depth,
            mqtt_enabled=self.cfg.mqtt.enabled,
            broker_connected=bool(pub and pub.connected),
            broker_error=pub.last_error if pub else None,
            mqtt_delivered=pub.published if pub else 0,
            mqtt_replayed=pub.replayed if pub else 0,
            mqtt_snapshot_error=self._snapshot_check.problem() if self._snapshot_check else None,
            outputs=[output.status() for output in self._outputs],
            pending_writes=writer.held,
            journal_error=writer.problem(),
            journal_writes_dropped=writer.writes_dropped,
            frame_rows_dropped=writer.frame_rows_dropped,
            detections_paused=parts.gate.reason,
            camera_state=capture.state,
            camera=CameraStatus(
                self.cfg.source.type, h.frames, h.bad_frames, h.stalls, h.errors, h.reconnects, h.last_error
            ),
            healthy=state == "running" and self.healthy(),
            last_reload=self.last_reload,
            rss_mb=rss_mb(),
        )

    def write_status(self, state: str = "running") -> None:
        """STATE/status.json, atomically; a failure (a full disk) is logged, rate-limited, and the daemon goes on."""
        path = self.cfg.layout.status_file
        try:
            self.parts.writer.refresh_outbox_depth()
            self.status(state).write(path)
        except Exception as exc:
            self._status_log(logging.ERROR, "%s: %s", path, exc)

    def stats(self) -> dict:
        """The MQTT `stats` payload's fields, from the same figures as status.json."""
        return self.status().stats(cpu_temp_c=cpu_temperature_c(), disk_free_mb=disk_free_mb(self.state_dir))

    def _status_line(self) -> str:
        parts = self.parts
        broker = "off" if not parts.publisher else ("connected" if parts.publisher.connected else "disconnected")
        return ("NOT KEEPING DETECTIONS (disk full), " if not parts.gate.open else "") + (
            f"{parts.pipeline.fps:.1f} fps, camera {parts.capture.state}, bundle {self.engine.bundle.version}, "
            f"outbox {parts.writer.outbox_depth}, broker {broker}"
        )
