"""The daemon's configuration: one YAML file in, typed frozen dataclasses out.

Validation is strict because the daemon runs unattended: an unknown key (a
typo), a wrong type or an out-of-range value stops the start with ONE line that
names the key path and the YAML line (`crackd.yaml:12: mqtt.port: expected an
integer from 1 to 65535, got 'abc'`). Every key and its default is documented in
`config/crackd.example.yaml`; the dataclasses below, and each camera adapter's
options (edge.sources), are the single source of the defaults. Secrets (the
MQTT password) never sit in the YAML: they come from an environment variable
(`password_env`) or a file (`password_file`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml

from edge.config_fields import option as _opt
from edge.config_fields import section as _section
from edge.engine.grouping import CrackGrouping
from edge.identifiers import identifier_problem
from edge.layout import DEFAULT_ALLOWED_SIGNERS, INSTALLED_STATE_DIR, SHIPPED_BUNDLE, StateLayout
from edge.sources.registry import ADAPTERS, adapter_for
from edge.vocabulary import RuntimeChoice, SegmentMode


class ConfigError(ValueError):
    """The configuration cannot be used; str() is one line naming the file, line and key."""


# --------------------------------------------------------------------------- source


def _adapter_sections(cls):
    """Complete SourceConfig from the camera registry (edge.sources.registry): `type` accepts each registered
    adapter's name, listed in registry order, and each adapter's options dataclass is the section `source.<name>`."""
    cls.__annotations__["type"] = Literal[tuple(adapter.name for adapter in ADAPTERS)]
    for adapter in ADAPTERS:
        if adapter.name in cls.__annotations__:
            raise TypeError(f"source adapter {adapter.__name__}: name {adapter.name!r} is a key of source itself")
        cls.__annotations__[adapter.name] = adapter.Options
        setattr(cls, adapter.name, _section(adapter.Options, f"options for type: {adapter.name}"))
    return cls


@dataclass(frozen=True)
@_adapter_sections
class SourceConfig:
    """Where frames come from: the keys every source shares, then one option section per adapter (added above)."""

    type: str = _opt("synthetic", "which adapter produces frames")
    read_timeout_s: float = _opt(
        5.0, "a capture taking longer than this counts as a stall and is retried", gt=0, max=600
    )
    retry_initial_s: float = _opt(
        0.5, "first wait before reconnecting a failed source (doubles each failure)", gt=0, max=600
    )
    retry_max_s: float = _opt(30.0, "longest wait between reconnect attempts", gt=0, max=3600)

    @property
    def options(self) -> Any:
        """The option section of the chosen adapter (`source.<type>`)."""
        return getattr(self, self.type)


# --------------------------------------------------------------------------- model, decision


@dataclass(frozen=True)
class TilingOptions:
    enabled: bool = _opt(False, "run the segmenter over overlapping tiles (large frames, thin cracks)")
    tile: int = _opt(256, "tile size in pixels (square)", min=32, max=4096)
    overlap: float = _opt(0.25, "tile overlap as a fraction of the tile size", min=0, max=0.9)


@dataclass(frozen=True)
class ModelConfig:
    bundle: str | None = _opt(
        None, "bundle directory; null = STATE/models/current if installed, else the shipped models/default"
    )
    runtime: RuntimeChoice = _opt("auto", "TFLite runtime")
    threads: int = _opt(1, "interpreter threads per model", min=1, max=16)
    segment: SegmentMode = _opt(
        "on-crack", "when to run the segmenter (never: the classifier's score alone decides what is a crack)"
    )
    tiling: TilingOptions = _section(TilingOptions, "segmenter tiling")
    mm_per_pixel: float | None = _opt(None, "scale of the camera view; when set, measurements also carry *_mm", gt=0)
    cracks: CrackGrouping = _section(CrackGrouping, "what counts as one crack in the measurements")


@dataclass(frozen=True)
class DecisionConfig:
    threshold: float | None = _opt(
        None,
        "classifier gate: frames scoring at least this are segmented, and are cracks when the segmenter measures one"
        " (null = the bundle's gate_threshold, else its classifier threshold)",
        min=0,
        max=1,
    )
    hysteresis: float = _opt(
        0.1, "while an event is open a frame still counts as a crack down to threshold - hysteresis", min=0, max=1
    )
    start_k: int = _opt(2, "an event starts when k of the last n frames are cracks ...", min=1, max=1000)
    start_n: int = _opt(3, "... (n = window length)", min=1, max=1000)
    end_m: int = _opt(5, "an event ends after m consecutive clear frames", min=1, max=100000)
    update_interval_s: float = _opt(
        2.0, "an improved peak is published as an `update` at most this often", min=0, max=3600
    )


# --------------------------------------------------------------------------- storage, mqtt, logging


@dataclass(frozen=True)
class StorageConfig:
    state_dir: str = _opt(
        str(INSTALLED_STATE_DIR), "state directory: journal, snapshots, status.json, pid, installed models"
    )
    db: str | None = _opt(None, "journal path (null = STATE/crackd.db)")
    record_frames: Literal["all", "cracks", "none"] = _opt("cracks", "which per-frame results go to the journal")
    retention_days: float = _opt(
        30.0, "frames and published events older than this are deleted (labelled events are kept)", gt=0
    )
    max_db_mb: float = _opt(
        512.0, "journal size budget; oldest frames, then oldest published events, are deleted beyond it", min=1
    )
    snapshots: bool = _opt(True, "write a frame + overlay JPEG per event")
    snapshot_budget_mb: float = _opt(512.0, "disk budget of STATE/snapshots; oldest deleted first", min=0)
    snapshot_quality: int = _opt(85, "JPEG quality", min=10, max=100)
    frame_format: Literal["jpeg", "png"] = _opt(
        "jpeg",
        "an event's frame picture: jpeg (snapshot_quality, the camera's main stream when it has one) or png"
        " (lossless, exactly the frame the model saw, about 10x larger; best for labelling)",
    )
    sample_crack_free_every_s: float = _opt(
        0.0,
        "keep a crack-free frame (no open event) at most this often, to be labelled (`crackd events list --kind"
        " crack-free`); counted in snapshot_budget_mb; 0 = off",
        min=0,
    )
    sample_uncertain_band: float = _opt(
        0.0,
        "keep frames whose classifier score is within this of the gate threshold (the model's uncertain cases),"
        " to be labelled; 0 = off",
        min=0,
        max=1,
    )
    sample_uncertain_every_s: float = _opt(60.0, "keep an uncertain frame at most this often", min=0)
    missed_buffer_s: float = _opt(
        10.0, "seconds of recent frames held in memory for `crackd events flag-missed`; 0 = off", min=0, max=600
    )
    missed_buffer_frames: int = _opt(
        20,
        "at most this many frames in that memory (spread over missed_buffer_s): it holds about"
        " frames x width x height x 3 bytes (20 x 640x480: 18 MB)",
        min=1,
        max=1000,
    )
    outbox_warn_levels: list[float] = _opt(
        [0.5, 0.8, 0.95], "warn loudly when undelivered MQTT messages fill these fractions of max_db_mb", min=0, max=1
    )
    on_corrupt_db: Literal["move-aside", "stop"] = _opt(
        "move-aside", "journal fails its integrity check: rename it and start a new one, or refuse to start"
    )


@dataclass(frozen=True)
class TLSConfig:
    enabled: bool = _opt(False, "connect with TLS")
    ca: str | None = _opt(None, "CA certificate file (null = system CAs)")
    cert: str | None = _opt(None, "client certificate file (mutual TLS)")
    key: str | None = _opt(None, "client private key file")
    insecure: bool = _opt(False, "skip the broker hostname check (test rigs only)")


@dataclass(frozen=True)
class SparkplugOptions:
    """Sparkplug B identities (edge.outputs.sparkplug): spBv1.0/{group_id}/{type}/{edge_node_id}[/{device_id}]."""

    group_id: str = _opt(
        "crackd", "Sparkplug group (e.g. the line or plant area)", min_len=1, max_len=64, ident="topic_level"
    )
    edge_node_id: str | None = _opt(
        None, "edge node id of this Pi (null = device_id)", min_len=1, max_len=64, ident="topic_level"
    )
    device_id: str = _opt(
        "camera",
        "Sparkplug device under the node that carries the crack and health metrics",
        min_len=1,
        max_len=64,
        ident="topic_level",
    )


@dataclass(frozen=True)
class MQTTConfig:
    enabled: bool = _opt(True, "publish to a broker; false = events stay in the journal only")
    host: str = _opt("localhost", "broker host")
    port: int = _opt(1883, "broker port (8883 is usual with TLS)", min=1, max=65535)
    tls: TLSConfig = _section(TLSConfig, "TLS")
    username: str | None = _opt(None, "user name")
    password_env: str | None = _opt(None, "name of the environment variable holding the password")
    password_file: str | None = _opt(None, "file holding the password (first line; e.g. a systemd credential)")
    # 128: MQTT only promises 23 characters and brokers differ (mosquitto takes 65,535 bytes, AWS IoT Core 128);
    # 128 fits the default crackd-<device_id> (at most 71) with room, and what managed brokers accept.
    client_id: str | None = _opt(None, "MQTT client id (null = crackd-<device_id>)", max_len=128, ident="client_id")
    keepalive: int = _opt(
        30, "keepalive seconds; the broker sends the last will after 1.5x this without traffic", min=5, max=3600
    )
    topic_prefix: str = _opt(
        "crackd",
        "topics are <prefix>/<device_id>/{status,camera,event,stats,frame,snapshot}",
        min_len=1,
        max_len=128,
        ident="topic_prefix",
    )
    qos: Literal[0, 1, 2] = _opt(1, "QoS of event messages (1 = at least once, acknowledged by the broker)")
    reconnect_min_s: float = _opt(1.0, "first reconnect delay (doubles up to reconnect_max_s)", gt=0, max=600)
    reconnect_max_s: float = _opt(60.0, "longest reconnect delay", gt=0, max=3600)
    max_inflight: int = _opt(20, "outbox messages sent ahead of their acknowledgement", min=1, max=1000)
    publish_frames: bool = _opt(False, "also publish per-frame results (QoS 0, rate-limited)")
    frame_rate: float = _opt(1.0, "at most this many frame messages per second", gt=0, max=1000)
    flush_timeout_s: float = _opt(5.0, "on shutdown, wait this long for the outbox to drain", min=0, max=600)
    snapshots: bool = _opt(
        True,
        "publish the latest event's overlay JPEG, retained, on <prefix>/<device_id>/snapshot (needs storage.snapshots)",
    )
    format: Literal["json", "sparkplug_b"] = _opt(
        "json", "payloads: json (docs/mqtt.md) or sparkplug_b (Sparkplug B protobuf, for SCADA)"
    )
    sparkplug: SparkplugOptions = _section(SparkplugOptions, "Sparkplug B identities (mqtt.format: sparkplug_b)")
    snapshot_max_kb: int = _opt(
        150, "largest snapshot message; bigger overlays are re-encoded smaller", min=16, max=16384
    )


@dataclass(frozen=True)
class HomeAssistantConfig:
    """MQTT discovery (edge.outputs.homeassistant): the device
    and its entities appear in Home Assistant by themselves."""

    discovery: bool = _opt(
        True, "announce the device to Home Assistant with retained discovery configs on every connection"
    )
    discovery_prefix: str = _opt(
        "homeassistant",
        "Home Assistant's discovery prefix (its MQTT integration setting)",
        min_len=1,
        max_len=128,
        ident="topic_prefix",
    )
    device_name: str | None = _opt(
        None, "device name shown in Home Assistant (null = device_id)", min_len=1, max_len=128, ident="name"
    )
    remove: bool = _opt(
        False,
        "publish empty configs instead, removing the device from Home Assistant (also: crackd homeassistant remove)",
    )


@dataclass(frozen=True)
class WebhookConfig:
    """HTTP POST of every event message (edge.outputs.webhook, docs/webhook.md), from its own outbox rows."""

    enabled: bool = _opt(False, "POST each event message (start, update, end) to url")
    url: str | None = _opt(None, "the receiver: http:// or https:// URL", min_len=1)
    secret_env: str | None = _opt(
        None, "environment variable holding the HMAC-SHA256 key of the X-Crackd-Signature header"
    )
    secret_file: str | None = _opt(None, "file holding that key (first line; e.g. a systemd credential)")
    include_snapshot: bool = _opt(
        False, "also send the overlay JPEG (base64) with messages that took a new picture (needs storage.snapshots)"
    )
    timeout_s: float = _opt(10.0, "one POST's connect + answer timeout", gt=0, max=300)
    retry_min_s: float = _opt(1.0, "first wait after a failed POST (doubles up to retry_max_s)", gt=0, max=3600)
    retry_max_s: float = _opt(300.0, "longest wait between retries", gt=0, max=86400)
    ca: str | None = _opt(None, "CA certificate file for https (null = the system's CAs)")
    verify_tls: bool = _opt(True, "verify the receiver's certificate and host name (false: test rigs only)")


@dataclass(frozen=True)
class MetricsTLSConfig:
    cert: str | None = _opt(None, "server certificate (PEM, chain included): serve https instead of http")
    key: str | None = _opt(None, "its private key (PEM)")
    client_ca: str | None = _opt(None, "require client certificates signed by this CA (mutual TLS; null = none)")


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics (edge.outputs.metrics): an HTTP endpoint and/or a node_exporter textfile."""

    http: bool = _opt(True, "serve /metrics over HTTP")
    host: str = _opt(
        "127.0.0.1", "address the endpoint listens on; beyond loopback set username and tls (0.0.0.0: all)", min_len=1
    )
    port: int = _opt(9808, "port of the HTTP endpoint", min=1, max=65535)
    username: str | None = _opt(None, "require HTTP basic auth with this user name (null = no authentication)")
    password_env: str | None = _opt(None, "name of the environment variable holding the basic auth password")
    password_file: str | None = _opt(None, "file holding the basic auth password (first line)")
    tls: MetricsTLSConfig = _section(MetricsTLSConfig, "https for the endpoint")
    textfile: str | None = _opt(
        None, "write the metrics to this .prom file for node_exporter's textfile collector (null = off)", min_len=1
    )
    textfile_interval_s: float = _opt(15.0, "how often the textfile is rewritten", min=1, max=3600)


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = _opt("info", "log level")
    journald: bool = _opt(True, "log to journald with structured fields when running under systemd")


@dataclass(frozen=True)
class ReleasesConfig:
    """Policy of `crackd models stage/activate` (edge.releases.manager) on this device."""

    require_signature: bool = _opt(True, "stage only bundles whose manifest.json.sig verifies against allowed_signers")
    allowed_signers: str = _opt(
        str(DEFAULT_ALLOWED_SIGNERS), "ssh-keygen allowed_signers file of trusted bundle signers"
    )
    keep: int = _opt(3, "releases kept besides the current one (the previous one is always kept)", min=1, max=100)
    max_latency_ms: float | None = _opt(
        None, "refuse bundles slower than this per frame on this device (null = report only)", gt=0
    )


@dataclass(frozen=True)
class Config:
    device_id: str = _opt(
        "crackd-1", "this device's id: part of every MQTT topic and event", min_len=1, max_len=64, ident="topic_level"
    )
    source: SourceConfig = _section(SourceConfig, "where frames come from")
    model: ModelConfig = _section(ModelConfig, "the model bundle and how to run it")
    decision: DecisionConfig = _section(DecisionConfig, "debounce per-frame results into events")
    storage: StorageConfig = _section(StorageConfig, "the journal and snapshots")
    mqtt: MQTTConfig = _section(MQTTConfig, "the broker")
    homeassistant: HomeAssistantConfig = _section(HomeAssistantConfig, "Home Assistant MQTT discovery")
    metrics: MetricsConfig = _section(MetricsConfig, "Prometheus metrics")
    webhook: WebhookConfig = _section(WebhookConfig, "HTTP POST of event messages")
    logging: LoggingConfig = _section(LoggingConfig, "logging")
    releases: ReleasesConfig = _section(ReleasesConfig, "model release policy (crackd models ...)")
    max_fps: float | None = _opt(None, "process at most this many frames per second (null = as fast as possible)", gt=0)
    stats_interval_s: float = _opt(30.0, "how often stats are published on MQTT", min=1, max=86400)
    source_file: str | None = field(default=None, compare=False, metadata={"internal": True})

    # Derived paths -----------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return Path(self.storage.state_dir)

    @property
    def layout(self) -> StateLayout:
        return StateLayout(self.state_dir)

    @property
    def db_path(self) -> Path:
        return Path(self.storage.db) if self.storage.db else self.layout.default_db

    def bundle_dir(self) -> Path:
        """The bundle to serve: the configured one, else the installed current, else the shipped default."""
        if self.model.bundle:
            return Path(self.model.bundle)
        current = self.layout.current
        if current.exists():
            return current
        return SHIPPED_BUNDLE

    def mqtt_password(self) -> str | None:
        """Read the MQTT password from the environment or its file (raises ConfigError when configured but absent)."""
        return _read_secret("mqtt", self.mqtt.password_env, self.mqtt.password_file)

    def webhook_secret(self) -> str | None:
        """Read the webhook's HMAC key (raises ConfigError when configured but absent)."""
        return _read_secret("webhook", self.webhook.secret_env, self.webhook.secret_file, "secret")

    def metrics_password(self) -> str | None:
        """Read the metrics endpoint's basic auth password (raises ConfigError when configured but absent)."""
        return _read_secret("metrics", self.metrics.password_env, self.metrics.password_file)

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"crackd-{self.device_id}"

    def topic(self, name: str) -> str:
        return f"{self.mqtt.topic_prefix}/{self.device_id}/{name}"


def _read_secret(section: str, env: str | None, file: str | None, kind: str = "password") -> str | None:
    """A secret from environment variable `env` or the first line of `file` (never from the YAML);
    `kind` names the keys (`{kind}_env`, `{kind}_file`) in errors."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"{section}.{kind}_env: environment variable {env} is not set")
        return value
    if file:
        try:
            return Path(file).read_text().splitlines()[0] if Path(file).stat().st_size else ""
        except OSError as exc:
            raise ConfigError(f"{section}.{kind}_file: cannot read {file} ({exc.strerror})") from None
    return None


# --------------------------------------------------------------------------- loading


# A full crackd config with every key and comment is about 10 KB; anything near this is not one (and reading a
# device such as /dev/zero, or a log file given by mistake, must not exhaust the Pi's memory).
MAX_CONFIG_BYTES = 1024 * 1024


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file (a regular file of at most MAX_CONFIG_BYTES)."""
    path = Path(path)
    return parse_config(_read_config_text(path), str(path))


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _read_config_text(path: Path) -> str:
    """The file's text, refusing what is not a regular file or is too large, without reading it unbounded."""

    def refuse(why: str) -> NoReturn:
        raise ConfigError(f"{path}: {why}; expected a YAML config file")

    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):  # checked before opening: opening a device can have effects, a FIFO blocks
            refuse(f"is {_file_kind(mode)}")
        # O_NONBLOCK: should a FIFO replace the file between stat and open, open() must not wait for a writer
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(mode):
                refuse(f"is {_file_kind(mode)}")
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        refuse(f"is larger than {MAX_CONFIG_BYTES / 2**20:g} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte {exc.start + 1}); expected a YAML config file"
        ) from None


# No crackd setting nests deeper than a handful of levels; YAML's composer recurses per level.
MAX_YAML_DEPTH = 32


def _check_depth(text: str, filename: str) -> None:
    """Refuse absurd nesting before composing (PyYAML's event parser is iterative, its composer is not)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(
                    f"{filename}:{_line(event)}: nested more than {MAX_YAML_DEPTH} levels deep; not a crackd config"
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def parse_config(text: str, filename: str = "<config>") -> Config:
    """Validate YAML text; errors name `filename:line: key.path`."""
    try:
        _check_depth(text, filename)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark else filename
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    if node is None:
        node = yaml.MappingNode("tag:yaml.org,2002:map", [])
    cfg = _build(Config, node, "", filename)
    cfg = dataclasses.replace(cfg, source_file=filename)
    _cross_checks(cfg, node, filename)
    return cfg


def config_from_dict(data: dict, filename: str = "<dict>") -> Config:
    """Validate a plain dict (as the demo and tests build them) through the same rules."""
    return parse_config(yaml.safe_dump(data, sort_keys=False), filename)


def _line(node) -> int:
    return node.start_mark.line + 1


def _fail(filename: str, node, path: str, message: str) -> NoReturn:
    line = f":{_line(node)}" if node is not None else ""
    raise ConfigError(f"{filename}{line}: {path or '<top>'}: {message}")


def _scalar(node, path, filename):
    """Python value of a scalar/sequence node using YAML 1.1 safe tags."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        _fail(filename, node, path, f"cannot read value ({exc})")
    finally:
        loader.dispose()


def _describe(value) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {len(typing.get_args(tp))} integers"
    if origin is list:
        return "a list of numbers"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _range_text(meta: dict) -> str:
    lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
    if lo is not None and hi is not None:
        return f" from {lo:g} to {hi:g}"
    if gt is not None and hi is not None:
        return f" above {gt:g} and at most {hi:g}"
    if lo is not None:
        return f" >= {lo:g}"
    if gt is not None:
        return f" > {gt:g}"
    if hi is not None:
        return f" <= {hi:g}"
    return ""


def _check_range(value, meta, node, path, filename, expected):
    for v in value if isinstance(value, (tuple, list)) else (value,):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        bad = (
            (meta.get("min") is not None and v < meta["min"])
            or (meta.get("max") is not None and v > meta["max"])
            or (meta.get("gt") is not None and v <= meta["gt"])
        )
        if bad:
            shown = node.value if isinstance(node, yaml.ScalarNode) else _describe(value)  # as written in the file
            _fail(filename, node, path, f"expected {expected}{_range_text(meta)}, got {shown}")
    if isinstance(value, str):
        if meta.get("min_len") and len(value) < meta["min_len"]:
            _fail(filename, node, path, "expected a non-empty string")
        if meta.get("max_len") and len(value) > meta["max_len"]:
            _fail(filename, node, path, f"expected at most {meta['max_len']} characters, got {len(value)}")
        problem = identifier_problem(value, meta["ident"]) if meta.get("ident") else None
        if problem:
            _fail(filename, node, path, f"{problem}, got {_describe(value)}")


def _convert(tp, node, path, filename, meta):
    """Convert a node to type `tp` or fail with the key path and line."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, node, path, filename, meta)
    if dataclasses.is_dataclass(tp):
        return _build(tp, node, path, filename)
    expected = _type_name(tp)
    if origin in (tuple, list):
        if not isinstance(node, yaml.SequenceNode):
            _fail(
                filename,
                node,
                path,
                f"expected {expected}, got "
                f"{_describe(_scalar(node, path, filename)) if isinstance(node, yaml.ScalarNode) else 'a mapping'}",
            )
        item_tp = args[0]
        items = [_convert(item_tp, child, f"{path}[{i}]", filename, {}) for i, child in enumerate(node.value)]
        if origin is tuple and len(items) != len(args):
            _fail(filename, node, path, f"expected {expected}, got {len(items)} items")
        _check_range(items, meta, node, path, filename, expected)
        return tuple(items) if origin is tuple else items
    if not isinstance(node, yaml.ScalarNode):
        _fail(
            filename,
            node,
            path,
            f"expected {expected}, got a {'list' if isinstance(node, yaml.SequenceNode) else 'mapping'}",
        )
    value = _scalar(node, path, filename)
    if origin is Literal:
        if value not in args or isinstance(value, bool):
            _fail(filename, node, path, f"expected {expected}, got {_describe(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            _fail(filename, node, path, f"expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(filename, node, path, f"expected an integer{_range_text(meta)}, got {_describe(value)}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(filename, node, path, f"expected a number{_range_text(meta)}, got {_describe(value)}")
        value = float(value)
        if not math.isfinite(value):  # .nan passes every comparison and would silently disable a check
            _fail(filename, node, path, f"expected a finite number{_range_text(meta)}, got {node.value}")
    elif tp is str:
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and node.style is None
            and path.endswith("device_id")
        ):
            value = str(value)  # device ids like 42 are fine as strings
        if not isinstance(value, str):
            _fail(filename, node, path, f"expected a string, got {_describe(value)}")
    _check_range(value, meta, node, path, filename, expected)
    return value


def _build(cls, node, prefix: str, filename: str):
    """Build dataclass `cls` from a mapping node, rejecting unknown and duplicate keys."""
    if not isinstance(node, yaml.MappingNode):
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return cls()
        _fail(filename, node, prefix, "expected a mapping of keys")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    values = {}
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        path = f"{prefix}.{key}" if prefix else str(key)
        if key is None or key not in fields:
            close = _close_match(str(key), fields)
            hint = f" (did you mean {close!r}?)" if close else f"; known keys: {', '.join(fields)}"
            _fail(filename, key_node, path, f"unknown key{hint}")
        if key in seen:
            _fail(filename, key_node, path, f"duplicate key (first set on line {seen[key]})")
        seen[key] = _line(key_node)
        values[key] = _convert(hints[key], value_node, path, filename, dict(fields[key].metadata))
    return cls(**values)


def _close_match(key: str, known) -> str | None:
    import difflib

    matches = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _node_at(root, path: str):
    """The value node at a dotted path (for line numbers of cross-field errors); falls back to the parent."""
    node = root
    for part in path.split("."):
        if not isinstance(node, yaml.MappingNode):
            return node
        found = None
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == part:
                found = v
        if found is None:
            return node if node.value else None
        node = found
    return node


def _cross_checks(cfg: Config, root, filename: str) -> None:
    """Rules that involve more than one key."""

    def fail(path, message):
        _fail(filename, _node_at(root, path), path, message)

    s = cfg.source
    for key, message in adapter_for(s.type).option_problems(s.options):
        fail(f"source.{s.type}.{key}" if key else f"source.{s.type}", message)
    if s.retry_max_s < s.retry_initial_s:
        fail("source.retry_max_s", f"must be >= source.retry_initial_s ({s.retry_initial_s:g})")
    problem = cfg.model.cracks.unit_problem(cfg.model.mm_per_pixel)
    if problem:
        fail(f"model.cracks.{problem[0]}", problem[1])
    d = cfg.decision
    if d.start_k > d.start_n:
        fail("decision.start_k", f"k ({d.start_k}) cannot exceed n ({d.start_n})")
    m = cfg.mqtt
    _password_checks(fail, "mqtt", m.username, m.password_env, m.password_file, in_use=m.enabled)
    if m.tls.cert and not m.tls.key:
        fail("mqtt.tls.key", "a client certificate needs its key")
    for key in ("ca", "cert", "key"):
        value = getattr(m.tls, key)
        if m.enabled and m.tls.enabled and value and not Path(value).is_file():
            fail(f"mqtt.tls.{key}", f"file not found: {value}")
    if m.reconnect_max_s < m.reconnect_min_s:
        fail("mqtt.reconnect_max_s", f"must be >= mqtt.reconnect_min_s ({m.reconnect_min_s:g})")
    mx = cfg.metrics
    _password_checks(fail, "metrics", mx.username, mx.password_env, mx.password_file, in_use=mx.http)
    if mx.username and not (mx.password_env or mx.password_file):
        fail("metrics.username", "basic auth needs a password: set metrics.password_file or metrics.password_env")
    if mx.username and (":" in mx.username or not mx.username.isprintable()):
        fail("metrics.username", f"{mx.username!r}: a basic auth user name has no ':' and no control characters")
    if bool(mx.tls.cert) != bool(mx.tls.key):
        fail("metrics.tls.key" if mx.tls.cert else "metrics.tls.cert", "https needs both a certificate and its key")
    if mx.tls.client_ca and not mx.tls.cert:
        fail("metrics.tls.client_ca", "client certificates need https: set metrics.tls.cert and metrics.tls.key")
    for key in ("cert", "key", "client_ca"):
        value = getattr(mx.tls, key)
        if mx.http and value and not Path(value).is_file():
            fail(f"metrics.tls.{key}", f"file not found: {value}")
    if cfg.metrics.textfile and not cfg.metrics.textfile.endswith(".prom"):
        fail("metrics.textfile", f"{cfg.metrics.textfile!r}: node_exporter reads only files ending in .prom")
    w = cfg.webhook
    if w.enabled and not w.url:
        fail("webhook.url", "the webhook is enabled but has no url")
    if w.url and not w.url.startswith(("http://", "https://")):
        fail("webhook.url", f"{w.url!r}: expected an http:// or https:// URL")
    if w.secret_env and w.secret_file:
        fail("webhook.secret_file", "set only one of secret_env and secret_file")
    if w.enabled and w.secret_file and not Path(w.secret_file).is_file():
        fail("webhook.secret_file", f"file not found: {w.secret_file}")
    if w.enabled and w.ca and not Path(w.ca).is_file():
        fail("webhook.ca", f"file not found: {w.ca}")
    if w.retry_max_s < w.retry_min_s:
        fail("webhook.retry_max_s", f"must be >= webhook.retry_min_s ({w.retry_min_s:g})")
    levels = list(cfg.storage.outbox_warn_levels)
    if levels != sorted(levels):
        fail("storage.outbox_warn_levels", "levels must be in increasing order")


def _password_checks(fail, section: str, username, password_env, password_file, in_use: bool) -> None:
    """A section's user name and password source (mqtt, metrics): one source, a user to go with it, a file that is."""
    if password_env and password_file:
        fail(f"{section}.password_file", "set only one of password_env and password_file")
    if (password_env or password_file) and not username:
        fail(f"{section}.username", "a password is configured but no username")
    if in_use and password_file and not Path(password_file).is_file():
        fail(f"{section}.password_file", f"file not found: {password_file}")


def describe_defaults(cls=Config, prefix: str = "") -> list[tuple[str, object, str]]:
    """(key path, default, doc) for every key: used to check the example config documents them all."""
    out: list[tuple[str, object, str]] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        path = f"{prefix}.{f.name}" if prefix else f.name
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out.append((path, None, f.metadata.get("doc", "")))
            out.extend(describe_defaults(tp, path))
        else:
            factory = f.default_factory  # dataclasses.MISSING when the field has a plain default
            default = factory() if callable(factory) else f.default
            out.append((path, default, f.metadata.get("doc", "")))
    return out
