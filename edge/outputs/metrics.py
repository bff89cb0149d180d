"""Prometheus metrics of the daemon (prometheus_client), by HTTP on localhost and/or as a node_exporter textfile.

Two ways out, because Pis are monitored two ways:
- `metrics.http` (default on, 127.0.0.1:9808): a scrape endpoint. Prometheus scrapes it
  directly, through an SSH tunnel or a local agent (Grafana Alloy, vmagent); it is bound to
  localhost by default because the endpoint has no authentication.
- `metrics.textfile` (off): the file node_exporter's textfile collector reads (Debian's
  `prometheus-node-exporter` reads /var/lib/prometheus/node-exporter/*.prom). The usual Pi
  set-up, with one port and one scrape job per device for system and crackd metrics alike;
  written atomically every `metrics.textfile_interval_s` and at stop.

Counts the daemon already keeps (frames, events, skipped, reconnects, outbox depth, MQTT state)
are read from its status (the figures status.json holds) when scraped (a custom collector):
nothing is added to the frame path but one histogram observation per stage. prometheus_client is imported
lazily: without it (a minimal install) the daemon runs with a warning and no metrics.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)

STAGES = ("preprocess", "classify", "segment", "measure", "total")
# Per-stage times run from ~0.3 ms (preprocess, x86) to ~100 ms (segmenter, Pi 3): log-spaced buckets.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _SupervisorCollector:
    """Reads the daemon's figures at scrape time: its status
    (edge.daemon_status.DaemonStatus) and the journal's failures."""

    def __init__(self, supervisor):
        self.sup = supervisor  # edge.daemon.supervisor.Supervisor

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        from edge.outputs.publisher import cpu_temperature_c

        if not self.sup.started:  # scraped while the daemon is still starting: no figures yet
            return
        st = self.sup.status()
        writer = self.sup.journal_writer

        def counter(name, doc, value, labels=None):
            family = CounterMetricFamily(name, doc, labels=list(labels or {}))
            family.add_metric(list((labels or {}).values()), value)
            return family

        def gauge(name, doc, value):
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], value)
            return family

        yield counter("crackd_frames_processed", "Frames run through the models", st.frames_processed)
        yield counter(
            "crackd_frames_skipped", "Frames replaced by a newer one before inference (live sources)", st.frames_skipped
        )
        yield counter("crackd_frames_failed", "Frames the models failed on", st.frames_failed)
        yield counter("crackd_frames_bad", "Frames the source delivered unreadable", st.frames_bad)
        yield counter("crackd_events_started", "Crack events started", st.events_started)
        yield counter(
            "crackd_journal_write_failures",
            "Journal transactions that failed (held in memory and retried, or dropped frame rows)",
            writer.write_failures,
        )
        yield counter("crackd_camera_reconnects", "Times the camera was reopened after failing", st.camera.reconnects)
        yield counter("crackd_camera_stalls", "Captures that timed out", st.camera.stalls)
        yield counter("crackd_mqtt_messages_delivered", "Outbox messages acknowledged by the broker", st.mqtt_delivered)
        yield counter(
            "crackd_mqtt_messages_replayed", "Outbox messages sent after an outage or restart", st.mqtt_replayed
        )
        yield gauge("crackd_outbox_depth", "Messages waiting in the outbox for the broker", st.outbox_depth)
        yield gauge(
            "crackd_mqtt_connected",
            "1 while connected to the broker (0 when disconnected or MQTT is off)",
            1 if st.broker_connected else 0,
        )
        yield gauge("crackd_fps", "Frames processed per second (moving average)", st.fps)
        yield gauge("crackd_event_open", "1 while a crack event is open", 1 if st.event_open else 0)
        yield gauge(
            "crackd_pending_journal_writes", "Event writes held in memory after a journal failure", st.pending_writes
        )
        temp = cpu_temperature_c()
        if temp is not None:
            yield gauge("crackd_cpu_temperature_celsius", "CPU temperature", temp)
        state = GaugeMetricFamily("crackd_camera_state", "1 for the camera's current state", labels=["state"])
        for name in ("starting", "ok", "stalled", "reconnecting", "failed", "finished"):
            state.add_metric([name], 1 if st.camera_state == name else 0)
        yield state
        info = InfoMetricFamily("crackd_build", "crackd version and the model bundle served")
        info.add_metric(
            [],
            {
                "version": st.version or "",
                "bundle_version": st.bundle_version or "",
                "bundle_sha256": st.bundle_sha256 or "",
                "device_id": st.device_id or "",
            },
        )
        yield info


class Metrics:
    """The registry, the per-frame histograms, and the HTTP server / textfile writer that expose them."""

    def __init__(self, options, supervisor):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.options = options
        self.registry = CollectorRegistry(auto_describe=False)
        self.stage_seconds = Histogram(
            "crackd_stage_latency_seconds",
            "Time per pipeline stage and per frame (total)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.frame_latency = Histogram(
            "crackd_frame_latency_seconds",
            "Capture to end of processing, per frame",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.crack_frames = Counter(
            "crackd_crack_frames", "Frames the classifier called a crack", registry=self.registry
        )
        self._stages = {s: self.stage_seconds.labels(stage=s) for s in STAGES}
        self.registry.register(_SupervisorCollector(supervisor))
        self._server = None
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None

    def observe_frame(self, result, latency_s: float) -> None:
        """One processed frame (edge.engine.cascade.FrameResult): stage times, latency, crack count."""
        for stage, ms in result.timings_ms.items():
            child = self._stages.get(stage)
            if child is not None:
                child.observe(ms / 1000.0)
        self.frame_latency.observe(latency_s)
        if result.crack:
            self.crack_frames.inc()

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def start(self) -> None:
        o = self.options
        if o.http:
            from prometheus_client import start_http_server

            try:
                self._server, _thread = start_http_server(o.port, addr=o.host, registry=self.registry)
                log.info("metrics: http://%s:%d/metrics", o.host, o.port)
            except OSError as exc:
                log.error("metrics: cannot listen on %s:%d (%s); no HTTP metrics", o.host, o.port, exc.strerror or exc)
        if o.textfile:
            self._writer = threading.Thread(target=self._textfile_loop, name="metrics-textfile", daemon=True)
            self._writer.start()

    def write_textfile(self) -> bool:
        from prometheus_client import write_to_textfile

        try:
            write_to_textfile(str(self.options.textfile), self.registry)  # temp file + rename: never read half-written
            return True
        except OSError as exc:
            log.error("metrics: cannot write %s (%s)", self.options.textfile, exc.strerror or exc)
            return False

    def _textfile_loop(self) -> None:
        while True:
            self.write_textfile()
            if self._stop.wait(self.options.textfile_interval_s):
                return

    def stop(self) -> None:
        """Stop serving; the textfile gets the final counts (node_exporter keeps showing them until removed)."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join(5)
            self.write_textfile()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def start_for(supervisor) -> Metrics | None:
    """Metrics for a started Supervisor per `config.metrics`; None when off or prometheus_client is missing."""
    options = supervisor.cfg.metrics
    if not (options.http or options.textfile):
        return None
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        log.warning("metrics: prometheus_client is not installed (pip install 'crackd[edge]'); running without metrics")
        return None
    if options.textfile and not Path(options.textfile).parent.is_dir():
        log.error("metrics.textfile: directory %s does not exist; no textfile metrics", Path(options.textfile).parent)
    metrics = Metrics(options, supervisor)
    metrics.start()
    return metrics
