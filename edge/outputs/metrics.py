"""Prometheus metrics of the daemon (prometheus_client), by HTTP on localhost and/or as a node_exporter textfile.

Two ways out, because Pis are monitored two ways:
- `metrics.http` (default on, 127.0.0.1:9808): a scrape endpoint (edge.outputs.metrics_http).
  Prometheus scrapes it directly, through an SSH tunnel or a local agent (Grafana Alloy, vmagent);
  it is bound to localhost by default, and listening beyond loopback without basic auth and TLS
  is warned about (check-config and the log) because anyone who reaches the port could read it.
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

import dataclasses
import ipaddress
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edge.config import ConfigError
from edge.outputs.metrics_http import BasicAuth, MetricsServer, resolve, tls_context
from edge.vocabulary import CAMERA_STATES

if TYPE_CHECKING:
    from edge.config import Config, MetricsConfig
    from edge.daemon_status import DaemonStatus
    from edge.engine.cascade import FrameResult


class JournalFailures(Protocol):
    write_failures: int


class FigureSource(Protocol):
    """What the metrics read from the daemon (edge.daemon.supervisor.Supervisor), at scrape time."""

    cfg: Config

    @property
    def started(self) -> bool: ...

    @property
    def journal_writer(self) -> JournalFailures: ...

    def status(self, state: str = "running") -> DaemonStatus: ...


log = logging.getLogger(__name__)

STAGES = ("preprocess", "classify", "segment", "measure", "total")
# Per-stage times run from ~0.3 ms (preprocess, x86) to ~100 ms (segmenter, Pi 3): log-spaced buckets.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _SupervisorCollector:
    """Reads the daemon's figures at scrape time: its status
    (edge.daemon_status.DaemonStatus) and the journal's failures."""

    def __init__(self, supervisor: FigureSource) -> None:
        self.sup = supervisor

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        from edge.outputs.publisher import cpu_temperature_c

        if not self.sup.started:  # scraped while the daemon is still starting: no figures yet
            return
        st = self.sup.status()
        writer = self.sup.journal_writer

        def counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Any:
            family = CounterMetricFamily(name, doc, labels=list(labels or {}))
            family.add_metric(list((labels or {}).values()), value)
            return family

        def gauge(name: str, doc: str, value: float) -> Any:
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
            "crackd_keeping_detections",
            "0 while no frame is taken because a detection could not be kept (disk full); 1 otherwise",
            0 if st.detections_paused else 1,
        )
        yield gauge(
            "crackd_pending_journal_writes", "Event writes held in memory after a journal failure", st.pending_writes
        )
        temp = cpu_temperature_c()
        if temp is not None:
            yield gauge("crackd_cpu_temperature_celsius", "CPU temperature", temp)
        state = GaugeMetricFamily("crackd_camera_state", "1 for the camera's current state", labels=["state"])
        for name in CAMERA_STATES:
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

    def __init__(self, options: MetricsConfig, supervisor: FigureSource) -> None:
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
            "crackd_crack_frames",
            "Frames counted as a crack (past the classifier's gate, confirmed by the segmenter)",
            registry=self.registry,
        )
        self._stages = {s: self.stage_seconds.labels(stage=s) for s in STAGES}
        self.registry.register(_SupervisorCollector(supervisor))
        self._server: MetricsServer | None = None
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None

    def observe_frame(self, result: FrameResult, latency_s: float) -> None:
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

    def start(self, password: str | None) -> None:
        o = self.options
        if o.http:
            self._start_http(password)
        if o.textfile:
            self._writer = threading.Thread(target=self._textfile_loop, name="metrics-textfile", daemon=True)
            self._writer.start()

    def _start_http(self, password: str | None) -> None:
        from prometheus_client import make_wsgi_app

        o = self.options
        warning = exposure_warning(o)
        if warning:
            log.warning("%s", warning)
        try:
            tls = tls_context(o.tls.cert, o.tls.key, o.tls.client_ca) if o.tls.cert and o.tls.key else None
        except OSError as exc:  # ssl.SSLError included: not a certificate, not its key, not a CA
            log.error("metrics.tls: cannot use its files (%s); no HTTP metrics", exc)
            return
        auth = BasicAuth(o.username, password or "") if o.username else None
        server = MetricsServer(make_wsgi_app(self.registry), o.host, o.port, auth=auth, tls=tls)
        try:
            server.start()
        except OSError as exc:
            log.error("metrics: cannot listen on %s:%d (%s); no HTTP metrics", o.host, o.port, exc.strerror or exc)
            return
        self._server = server
        log.info("metrics: %s", endpoint_url(o))

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
            self._server.stop()
            self._server = None


def start_for(supervisor: FigureSource) -> Metrics | None:
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
    try:
        password = supervisor.cfg.metrics_password() if options.http else None
    except ConfigError as exc:  # `crackd run` reads it before starting: only a file gone since gets here
        log.error("%s; no HTTP metrics", exc)
        options = dataclasses.replace(options, http=False)
    metrics = Metrics(options, supervisor)
    metrics.start(password)
    return metrics


def endpoint_url(options: MetricsConfig) -> str:
    """Where the HTTP endpoint (`metrics` config) listens and how it is guarded, for people to read."""
    host = f"[{options.host}]" if ":" in options.host else options.host
    guards = [
        name for name, on in (("basic auth", options.username), ("client certificates", options.tls.client_ca)) if on
    ]
    url = f"{'https' if options.tls.cert else 'http'}://{host}:{options.port}/metrics"
    return url + (f" with {' and '.join(guards)}" if guards else "")


def exposure_warning(options: MetricsConfig) -> str | None:
    """What is wrong with who can reach the HTTP endpoint (`metrics` config), or None: it listens on loopback only,
    or beyond it with both basic auth and TLS. Said by check-config and logged at WARNING when the daemon starts."""
    if not options.http:
        return None
    where = f"metrics.host {options.host}"
    try:
        _family, sockaddr = resolve(options.host, options.port)
    except OSError as exc:
        return f"{where}: cannot resolve it ({exc.strerror or exc}); the daemon will serve no HTTP metrics"
    address = ipaddress.ip_address(sockaddr[0].split("%")[0])  # an IPv6 scope (fe80::1%eth0) is not part of it
    if address.is_loopback:
        return None
    if sockaddr[0] != options.host:
        where += f" ({sockaddr[0]})"
    exposed = f"{where} listens beyond loopback on port {options.port}"
    see = "or firewall the port (docs/mqtt.md, 'Securing the broker')"
    auth, tls = options.username is not None, options.tls.cert is not None
    if tls and (auth or options.tls.client_ca):  # a password or a client certificate, over TLS
        return None
    if auth:
        return f"{exposed} without TLS: the basic auth password crosses the network readable; set metrics.tls, {see}"
    if tls:
        fix = "set metrics.username or metrics.tls.client_ca"
        return f"{exposed} without authentication: anyone who reaches it reads the metrics; {fix}, {see}"
    return (
        f"{exposed} with no authentication and no TLS: anyone who reaches it reads this device's metrics; "
        f"set metrics.username, metrics.password_file and metrics.tls, {see}"
    )
