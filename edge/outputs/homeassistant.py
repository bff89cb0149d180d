"""Home Assistant MQTT discovery: the device shows up in Home Assistant with no YAML on the HA side.

Home Assistant creates entities from retained JSON configs published under
`{discovery_prefix}/{component}/{node_id}/{object_id}/config` (its "MQTT discovery").
crackd announces one device with:

- binary_sensor `crack` (device class `problem`): ON from an event's start until its end;
- sensors: last crack length and width in mm (only when `model.mm_per_pixel` calibrates
  the view), score, fps, p95 latency, outbox depth, CPU temperature, bundle version;
- image `snapshot`: the overlay JPEG of the latest event (edge.outputs.snapshots_mqtt).

The entities read crackd's own topics through `value_template`s, and all share the retained
`status` birth/will as their availability. The one exception is the crack binary sensor: the
`event` topic is not retained, so a Home Assistant that restarts between two events would show
it as unknown; it reads the retained `crack` topic (`ON`/`OFF`), which this module publishes
whenever an event message goes out.
Configs are republished on every connection and when Home Assistant announces itself
(`{discovery_prefix}/status` = `online`), as HA's docs recommend, at most once per
REANNOUNCE_MIN_S: a burst of births (a flapping HA, or anyone who may publish that topic)
costs one re-announcement, not one per birth. Removal publishes an empty retained config on
every topic crackd may have used (HA deletes the entities).

Payload keys are the long names of HA's documented configuration variables for the
per-component discovery of binary_sensor, sensor and image (tests/edge/test_homeassistant.py
checks them against those lists).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge import __version__

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

    from edge.config import Config
    from edge.outputs.publisher import Publisher

log = logging.getLogger(__name__)

MANUFACTURER = "crackd"
MODEL = "crackd crack inspection camera"
# Home Assistant births closer together than this share one re-announcement (sent at the window's end).
REANNOUNCE_MIN_S = 5.0
CRACK_TOPIC = "crack"  # retained ON/OFF: the crack binary sensor's state


@dataclass(frozen=True)
class Entity:
    """One discovered entity: its HA component, object id and config payload."""

    component: str  # binary_sensor | sensor | image
    object_id: str
    config: dict


def node_id(device_id: str) -> str:
    """The discovery topic's node id: HA allows [a-zA-Z0-9_-] only."""
    return "crackd_" + re.sub(r"[^A-Za-z0-9_-]", "_", device_id)


def config_topic(cfg: Config, component: str, object_id: str) -> str:
    return f"{cfg.homeassistant.discovery_prefix}/{component}/{node_id(cfg.device_id)}/{object_id}/config"


def _numeric(expr: str) -> str:
    """A value_template giving `expr`, or 'null' (HA: the sensor becomes unknown) when it is missing or null."""
    return "{% set v = " + expr + " %}{{ v if v is defined and v is not none else 'null' }}"


def entities(cfg: Config, sw_version: str = __version__) -> list[Entity]:
    """Every entity config for this device (what `announce` publishes)."""
    ident = node_id(cfg.device_id)
    status, event, stats = cfg.topic("status"), cfg.topic("event"), cfg.topic("stats")
    device = {
        "identifiers": [ident],
        "name": cfg.homeassistant.device_name or cfg.device_id,
        "manufacturer": MANUFACTURER,
        "model": MODEL,
        "sw_version": sw_version,
    }
    common = {
        "availability": [
            {
                "topic": status,
                "value_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ],
        "device": device,
    }

    def entity(component: str, object_id: str, name: str, **fields: Any) -> Entity:
        qos = {} if component == "image" else {"qos": 1}  # HA's image platform has no qos option
        return Entity(
            component, object_id, {"name": name, "unique_id": f"{ident}_{object_id}", **common, **qos, **fields}
        )

    out = [
        entity(
            "binary_sensor",
            "crack",
            "Crack",
            state_topic=cfg.topic(CRACK_TOPIC),
            device_class="problem",
            payload_on="ON",
            payload_off="OFF",
        ),
        entity(
            "sensor",
            "score",
            "Crack score",
            state_topic=event,
            state_class="measurement",
            suggested_display_precision=2,
            icon="mdi:percent",
            value_template=_numeric("value_json.score"),
        ),
    ]
    if cfg.model.mm_per_pixel:
        for object_id, name, key in (
            ("crack_length", "Crack length", "length_mm"),
            ("crack_width", "Crack width", "max_width_mm"),
        ):
            out.append(
                entity(
                    "sensor",
                    object_id,
                    name,
                    state_topic=event,
                    device_class="distance",
                    unit_of_measurement="mm",
                    state_class="measurement",
                    suggested_display_precision=1,
                    value_template=_numeric(f"(value_json.measurements or {{}}).{key}"),
                )
            )
    out += [
        entity(
            "sensor",
            "fps",
            "Frames per second",
            state_topic=stats,
            state_class="measurement",
            unit_of_measurement="fps",
            suggested_display_precision=1,
            entity_category="diagnostic",
            icon="mdi:speedometer",
            value_template=_numeric("value_json.fps"),
        ),
        entity(
            "sensor",
            "latency_p95",
            "Latency p95",
            state_topic=stats,
            device_class="duration",
            unit_of_measurement="ms",
            state_class="measurement",
            suggested_display_precision=1,
            entity_category="diagnostic",
            value_template=_numeric("(value_json.latency_ms or {}).p95"),
        ),
        entity(
            "sensor",
            "outbox_depth",
            "Outbox depth",
            state_topic=stats,
            state_class="measurement",
            entity_category="diagnostic",
            icon="mdi:tray-full",
            value_template=_numeric("value_json.outbox_depth"),
        ),
        entity(
            "sensor",
            "cpu_temperature",
            "CPU temperature",
            state_topic=stats,
            device_class="temperature",
            unit_of_measurement="°C",
            state_class="measurement",
            suggested_display_precision=1,
            entity_category="diagnostic",
            value_template=_numeric("value_json.cpu_temp_c"),
        ),
        entity(
            "sensor",
            "bundle_version",
            "Model bundle",
            state_topic=status,
            entity_category="diagnostic",
            icon="mdi:package-variant",
            value_template="{{ value_json.bundle_version }}",
        ),
    ]
    if cfg.mqtt.snapshots:
        out.append(
            entity("image", "snapshot", "Crack snapshot", image_topic=cfg.topic("snapshot"), content_type="image/jpeg")
        )
    return out


# Everything crackd may ever have announced (removal clears all of it, whatever the config is now).
ALL_OBJECTS = (
    ("binary_sensor", "crack"),
    ("sensor", "score"),
    ("sensor", "crack_length"),
    ("sensor", "crack_width"),
    ("sensor", "fps"),
    ("sensor", "latency_p95"),
    ("sensor", "outbox_depth"),
    ("sensor", "cpu_temperature"),
    ("sensor", "bundle_version"),
    ("image", "snapshot"),
)


def discovery_messages(cfg: Config, sw_version: str = __version__) -> list[tuple[str, bytes]]:
    """(topic, payload) to announce the device; with `homeassistant.remove` the empty configs instead."""
    if cfg.homeassistant.remove:
        return removal_messages(cfg)
    return [
        (config_topic(cfg, e.component, e.object_id), json.dumps(e.config, ensure_ascii=False).encode())
        for e in entities(cfg, sw_version)
    ]


def removal_messages(cfg: Config) -> list[tuple[str, bytes]]:
    """Empty retained configs on every topic crackd may have used (HA deletes the entities)."""
    return [(config_topic(cfg, component, object_id), b"") for component, object_id in ALL_OBJECTS]


def clear_crack_state(client: mqtt.Client, cfg: Config) -> mqtt.MQTTMessageInfo:
    """Remove the retained crack sensor state (it is published for Home Assistant alone)."""
    return client.publish(cfg.topic(CRACK_TOPIC), b"", qos=1, retain=True)


def crack_state(event: dict) -> str:
    """The crack binary sensor's state after an `event` message: ON from its start to its end."""
    return "OFF" if event.get("type") == "end" else "ON"


class Discovery:
    """Publishes the configs on every connection of a Publisher and when Home Assistant comes online,
    and keeps the crack sensor's retained state in step with the event messages sent."""

    def __init__(self, cfg: Config, publisher: Publisher, reannounce_min_s: float = REANNOUNCE_MIN_S) -> None:
        self.cfg = cfg
        self.publisher = publisher
        self.reannounce_min_s = reannounce_min_s
        self.published = 0  # announcements (each: every config once)
        self.births = 0  # `online` messages seen on the HA status topic
        self.ha_status_topic = f"{cfg.homeassistant.discovery_prefix}/status"
        self._event_topic = cfg.topic("event")
        self._crack_sent: str | None = None  # the state last published on this connection
        self._lock = threading.Lock()
        self._last_announce = float("-inf")  # time.monotonic()
        self._deferred: threading.Timer | None = None
        publisher.client.message_callback_add(self.ha_status_topic, self._on_ha_status)
        publisher.on_connect_hooks.append(self._on_connect)
        publisher.on_sent_hooks.append(self._on_sent)

    def _on_connect(self, client: mqtt.Client) -> None:
        self._crack_sent = None
        client.subscribe(self.ha_status_topic, qos=1)
        self.publish(client)

    def _on_ha_status(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.payload != b"online":
            return
        # HA restarted: it may have lost the configs. Called on paho's network thread: never block it.
        with self._lock:
            self.births += 1
            wait = self._last_announce + self.reannounce_min_s - time.monotonic()
            if wait > 0:
                if self._deferred is None:  # one re-announcement at the window's end serves every birth until then
                    self._deferred = threading.Timer(wait, self._deferred_publish, (client,))
                    self._deferred.daemon = True
                    self._deferred.start()
                return
        self.publish(client)

    def _deferred_publish(self, client: mqtt.Client) -> None:
        with self._lock:
            self._deferred = None
        if self.publisher.connected:  # otherwise the next connection announces anyway
            self.publish(client)

    def _on_sent(self, topic: str, payload: dict | bytes, info: object) -> None:
        """An outbox message went out (drain thread): an event message moves the crack sensor's retained state."""
        if topic != self._event_topic or not isinstance(payload, dict) or self.cfg.homeassistant.remove:
            return
        state = crack_state(payload)
        if state != self._crack_sent:
            self._crack_sent = state
            self.publisher.client.publish(self.cfg.topic(CRACK_TOPIC), state, qos=1, retain=True)

    def publish(self, client: mqtt.Client) -> None:
        with self._lock:
            self._last_announce = time.monotonic()
        messages = discovery_messages(self.cfg, self.publisher.identity.get("version") or __version__)
        for topic, payload in messages:
            client.publish(topic, payload, qos=1, retain=True)
        if self.cfg.homeassistant.remove:
            clear_crack_state(client, self.cfg)
        self.published += 1
        log.info(
            "Home Assistant discovery: %s %d configs under %s/",
            "removed" if self.cfg.homeassistant.remove else "published",
            len(messages),
            self.cfg.homeassistant.discovery_prefix,
        )

    def stop(self) -> None:
        with self._lock:
            if self._deferred is not None:
                self._deferred.cancel()
                self._deferred = None


def attach(cfg: Config, publisher: Publisher) -> Discovery | None:
    """Wire discovery into the daemon's publisher (None when switched off, or for Sparkplug B output)."""
    ha = cfg.homeassistant
    if not (ha.discovery or ha.remove) or getattr(cfg.mqtt, "format", "json") != "json":
        return None
    return Discovery(cfg, publisher)


def remove_now(cfg: Config, password: str | None, timeout: float = 10.0) -> int:
    """Connect once (own client id) and publish the empty retained configs; returns how many were acknowledged.

    Raises ConnectionError with one line when the broker cannot be reached or refuses."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge.outputs.publisher import authenticate  # imports paho, as the two lines above do

    m = cfg.mqtt
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"{cfg.client_id}-ha-remove",
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    authenticate(client, m, password)
    import threading

    connack: dict = {}
    answered = threading.Event()

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        connack["reason"] = reason_code
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(m.host, m.port, keepalive=m.keepalive)
    except OSError as exc:
        raise ConnectionError(f"cannot reach broker {m.host}:{m.port} ({exc})") from None
    client.loop_start()
    try:
        if not answered.wait(timeout):
            raise ConnectionError(f"broker {m.host}:{m.port} did not answer within {timeout:g} s")
        if connack["reason"].is_failure:
            raise ConnectionError(f"broker {m.host}:{m.port} refused the connection: {connack['reason']}")
        infos = [client.publish(topic, payload, qos=1, retain=True) for topic, payload in removal_messages(cfg)]
        clear_crack_state(client, cfg)
        done = 0
        for info in infos:
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                raise ConnectionError(f"broker {m.host}:{m.port}: {exc}") from None
            done += info.is_published()
        if done < len(infos):
            raise ConnectionError(
                f"broker {m.host}:{m.port} acknowledged {done} of {len(infos)} removals within {timeout:g} s"
            )
        return done
    finally:
        client.disconnect()
        client.loop_stop()
