"""Home Assistant MQTT discovery (edge/outputs/homeassistant.py) against HA's documented fields and a real mosquitto.

Home Assistant itself is too heavy to run here, so the payloads are checked against the
configuration variables its documentation lists for each platform, and the value templates
are rendered with Jinja2 (the template engine HA uses) against crackd's real payloads.
"""

from __future__ import annotations

import json
import re
import threading
from functools import partial

import jinja2.sandbox
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import ConfigError, config_from_dict, parse_config
from edge.events.journal import Journal, OutboxMessage
from edge.outputs.homeassistant import ALL_OBJECTS, Discovery, config_topic, crack_state, entities
from edge.outputs.publisher import Publisher
from tests.helpers import REPO, wait_until, write_frames
from tests.helpers.cli import crackd
from tests.helpers.daemon import BLOCK, InProcess, daemon_dict, write_config

wait = partial(wait_until, timeout=15.0)
IDENTITY = {
    "version": "0.1.0",
    "bundle_version": "1.0",
    "bundle_sha256": "ab" * 32,
    "started_at": "2024-01-01T00:00:00.000Z",
}

# Configuration variables of HA's MQTT platforms, from the `{% configuration %}` blocks of
# home-assistant.io source/_integrations/{binary_sensor,sensor,image}.mqtt.markdown
# (https://www.home-assistant.io/integrations/binary_sensor.mqtt/, /integrations/sensor.mqtt/,
# /integrations/image.mqtt/; 2024-2025 versions). `platform` is left out: it is only allowed in
# device-based discovery messages, and crackd uses per-component discovery.
_COMMON = {
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "device",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "name",
    "object_id",
    "unique_id",
}
DOCUMENTED = {
    "binary_sensor": _COMMON
    | {
        "device_class",
        "expire_after",
        "force_update",
        "off_delay",
        "payload_available",
        "payload_not_available",
        "payload_off",
        "payload_on",
        "qos",
        "state_topic",
        "value_template",
    },
    "sensor": _COMMON
    | {
        "device_class",
        "expire_after",
        "force_update",
        "last_reset_value_template",
        "options",
        "payload_available",
        "payload_not_available",
        "suggested_display_precision",
        "qos",
        "state_class",
        "state_topic",
        "unit_of_measurement",
        "value_template",
    },
    "image": _COMMON | {"content_type", "image_encoding", "image_topic", "url_template", "url_topic"},
}
REQUIRED = {"binary_sensor": {"state_topic"}, "sensor": {"state_topic"}, "image": set()}
DEVICE_KEYS = {
    "configuration_url",
    "connections",
    "hw_version",
    "identifiers",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "serial_number",
    "suggested_area",
    "sw_version",
    "via_device",
}
AVAILABILITY_KEYS = {"payload_available", "payload_not_available", "topic", "value_template"}
# Device classes and their units (https://www.home-assistant.io/integrations/sensor/#device-class,
# /integrations/binary_sensor/#device-class); state classes (developers.home-assistant.io, sensor entity).
SENSOR_UNITS = {
    "distance": {"km", "m", "cm", "mm", "mi", "yd", "in", "ft"},
    "duration": {"d", "h", "min", "s", "ms"},
    "temperature": {"°C", "°F", "K"},
}
BINARY_CLASSES = {"problem", "safety", "running", "connectivity", "moving", "vibration"}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
ENTITY_CATEGORIES = {"config", "diagnostic"}


def calibrated(port=1883, **over):
    return config_from_dict(
        {
            "device_id": "line3-cam1",
            "model": {"mm_per_pixel": 0.2},
            "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_min_s": 1, "reconnect_max_s": 1, "keepalive": 5},
            **over,
        }
    )


def check_documented(component: str, config: dict) -> None:
    """Fail on any key HA does not document for the platform, and on missing required keys."""
    assert set(config) <= DOCUMENTED[component], f"{component}: undocumented {set(config) - DOCUMENTED[component]}"
    assert REQUIRED[component] <= set(config)
    if component == "image":
        assert ("image_topic" in config) != ("url_topic" in config)  # exactly one: the docs' "exclusive"
    assert set(config["device"]) <= DEVICE_KEYS and config["device"]["identifiers"]
    assert "unique_id" in config  # the device registry needs it
    for item in config["availability"]:
        assert set(item) <= AVAILABILITY_KEYS and "topic" in item
    if "availability" in config:
        assert "availability_topic" not in config  # "must not be used together"
    if component == "sensor" and "device_class" in config:
        assert config["unit_of_measurement"] in SENSOR_UNITS[config["device_class"]]
    if component == "binary_sensor":
        assert config.get("device_class") in BINARY_CLASSES
    if "state_class" in config:
        assert config["state_class"] in STATE_CLASSES
    if "entity_category" in config:
        assert config["entity_category"] in ENTITY_CATEGORIES
        assert component != "sensor" or config["entity_category"] == "diagnostic"  # "must be diagnostic for sensors"
    for key in ("availability", "state_topic", "image_topic"):
        topics = [a["topic"] for a in config[key]] if key == "availability" else [config.get(key)]
        assert all(t is None or not re.search(r"[+#]", t) for t in topics)


def test_every_config_uses_only_fields_home_assistant_documents():
    es = entities(calibrated())
    assert {(e.component, e.object_id) for e in es} == set(ALL_OBJECTS)
    for e in es:
        check_documented(e.component, e.config)
        json.dumps(e.config)
    assert len({e.config["unique_id"] for e in es}) == len(es)
    uncalibrated = {
        e.object_id for e in entities(config_from_dict({"device_id": "cam1", "mqtt": {"snapshots": False}}))
    }
    assert "crack_length" not in uncalibrated and "crack_width" not in uncalibrated and "snapshot" not in uncalibrated
    assert config_topic(calibrated(), "sensor", "fps") == "homeassistant/sensor/crackd_line3-cam1/fps/config"
    odd = config_from_dict({"device_id": "line 3.cam:1"})
    assert config_topic(odd, "sensor", "fps") == "homeassistant/sensor/crackd_line_3_cam_1/fps/config"


def _doc_examples() -> dict:
    """The status, event and stats examples of docs/mqtt.md (validated against their schemas elsewhere)."""
    text = (REPO / "docs" / "mqtt.md").read_text()
    out = {}
    for block in re.split(r"(?=^### )", text, flags=re.M):
        heading = re.match(r"^### `crackd/[^/]+/(\w+)`", block)
        example = re.search(r"```json\n(.*?)```", block, flags=re.S)
        if heading and example:
            out.setdefault(heading.group(1), json.loads(example.group(1)))
    return out


def test_value_templates_give_the_states_home_assistant_expects_from_real_payloads():
    env = jinja2.sandbox.ImmutableSandboxedEnvironment()  # as HA renders templates
    ex = _doc_examples()
    by_id = {e.object_id: e.config for e in entities(calibrated())}

    def render(object_id, payload, key="value_template"):
        return env.from_string(by_id[object_id][key]).render(value_json=payload, value=json.dumps(payload)).strip()

    end = ex["event"]
    start = dict(end, type="start", revision=0, ended_at=None, end_reason=None)
    assert [crack_state(p) for p in (start, dict(start, type="update"), end)] == ["ON", "ON", "OFF"]
    assert "value_template" not in by_id["crack"]  # it reads the retained `crack` topic as it is
    assert render("score", end) == "0.9961"
    assert render("crack_length", end) == "76.23" and render("crack_width", end) == "0.866"
    assert render("crack_length", dict(end, measurements=None)) == "null"  # not segmented: HA shows unknown
    assert render("fps", ex["stats"]) == "9.62" and render("latency_p95", ex["stats"]) == "21.7"
    assert render("outbox_depth", ex["stats"]) == "0" and render("cpu_temperature", ex["stats"]) == "51.2"
    assert render("cpu_temperature", dict(ex["stats"], cpu_temp_c=None)) == "null"
    assert render("bundle_version", ex["status"]) == "1.0.0"
    availability = by_id["fps"]["availability"][0]
    assert (
        env.from_string(availability["value_template"]).render(value_json=ex["status"])
        == availability["payload_available"]
    )


class Retained:
    """What the broker holds retained under a filter: subscribe, then a marker published after the SUBACK
    arrives behind every retained message (the broker sends those while handling the SUBSCRIBE)."""

    def __init__(self, port: int, topic_filter: str):
        self.messages: dict[str, bytes] = {}
        done = threading.Event()
        marker = "crackd-test/marker"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-retained")

        def on_message(c, u, msg):
            if msg.topic == marker:
                done.set()
            elif msg.retain:
                self.messages[msg.topic] = msg.payload

        subscribed = threading.Event()
        client.on_message = on_message
        client.on_subscribe = lambda *a: subscribed.set()
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.subscribe([(topic_filter, 1), (marker, 1)])
        assert subscribed.wait(10)
        client.publish(marker, b"x", qos=1)
        assert done.wait(10), "marker not received"
        client.disconnect()
        client.loop_stop()


def test_the_daemon_announces_retained_configs_and_crackd_homeassistant_remove_clears_them(
    tmp_path, darkness_bundle, mosquitto
):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK)
    d = daemon_dict(
        tmp_path, darkness_bundle, frames, mosquitto.port, model={"bundle": str(darkness_bundle), "mm_per_pixel": 0.2}
    )
    InProcess(config_from_dict(d)).wait_finished()
    held = Retained(mosquitto.port, "homeassistant/#").messages
    assert set(held) == {f"homeassistant/{c}/crackd_cam1/{o}/config" for c, o in ALL_OBJECTS}
    for topic, payload in held.items():
        component = topic.split("/")[1]
        config = json.loads(payload)
        check_documented(component, config)
        assert config["availability"][0]["topic"] == "crackd/cam1/status" and config["device"]["sw_version"]
    run = crackd("homeassistant", "remove", "--config", str(write_config(tmp_path, d)))
    assert run.returncode == 0, run.stderr
    assert "removed: 10" in run.stdout
    assert Retained(mosquitto.port, "homeassistant/#").messages == {}
    assert Retained(mosquitto.port, "crackd/cam1/crack").messages == {}  # the sensor's retained state goes too


def test_remove_says_in_one_line_when_the_broker_is_not_there(tmp_path):
    cfg_file = write_config(tmp_path, {"device_id": "cam1", "mqtt": {"host": "127.0.0.1", "port": 1}})
    run = crackd("homeassistant", "remove", "--config", str(cfg_file), "--timeout", "3")
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "cannot reach broker 127.0.0.1:1" in run.stderr


def test_configs_are_published_again_when_home_assistant_comes_online_and_the_remove_switch_clears_them(
    tmp_path, mosquitto, subscriber_factory
):
    sub = subscriber_factory(mosquitto.port, topic="homeassistant/sensor/crackd_line3-cam1/fps/config")
    with Journal(tmp_path / "crackd.db") as journal:
        pub = Publisher(calibrated(mosquitto.port), journal, IDENTITY)
        discovery = Discovery(pub.cfg, pub, reannounce_min_s=0.2)
        pub.start()
        sub.wait_for(lambda s: len(s.messages) == 1, what="the first announcement")
        ha = subscriber_factory(mosquitto.port, topic="unused/#")
        ha.client.publish("homeassistant/status", b"online", qos=1)  # Home Assistant's birth message after its restart
        sub.wait_for(lambda s: len(s.messages) == 2, what="the announcement after HA's birth")
        assert discovery.published == 2
        pub.stop()
    assert len(Retained(mosquitto.port, "homeassistant/#").messages) == 10
    with Journal(tmp_path / "crackd.db") as journal:
        pub = Publisher(calibrated(mosquitto.port, homeassistant={"remove": True}), journal, IDENTITY)
        Discovery(pub.cfg, pub)
        pub.start()
        sub.wait_for(lambda s: len(s.messages) == 3, what="the removal")
        assert sub.messages[-1][1] == b""
        pub.stop()
    assert Retained(mosquitto.port, "homeassistant/#").messages == {}


def test_a_burst_of_home_assistant_births_costs_one_reannouncement_not_one_each(
    tmp_path, mosquitto, subscriber_factory
):
    configs = subscriber_factory(mosquitto.port, topic="homeassistant/+/crackd_line3-cam1/+/config")
    with Journal(tmp_path / "crackd.db") as journal:
        pub = Publisher(calibrated(mosquitto.port), journal, IDENTITY)
        discovery = Discovery(pub.cfg, pub, reannounce_min_s=3600)  # the whole burst falls inside one window
        pub.start()
        per_announcement = len(entities(pub.cfg))
        configs.wait_for(lambda s: len(s.messages) == per_announcement, what="the first announcement")
        ha = subscriber_factory(mosquitto.port, topic="unused/#")
        for _ in range(200):
            ha.client.publish("homeassistant/status", b"online", qos=1)
        assert wait(lambda: discovery.births == 200)
        # a marker published now arrives behind anything a birth made crackd publish
        pub.client.publish("homeassistant/sensor/crackd_line3-cam1/marker/config", b"m", qos=1)
        configs.wait_for(lambda s: s.messages[-1][1] == b"m", what="the marker")
        assert len(configs.messages) == per_announcement + 1 and discovery.published == 1
        discovery.stop()  # cancels the one re-announcement deferred to the window's end
        pub.stop()


def test_the_crack_sensor_state_is_retained_so_a_restarted_home_assistant_sees_it(
    tmp_path, mosquitto, subscriber_factory
):
    crack = "crackd/line3-cam1/crack"
    with Journal(tmp_path / "crackd.db") as journal:
        pub = Publisher(calibrated(mosquitto.port), journal, IDENTITY)
        Discovery(pub.cfg, pub)
        pub.start()
        assert wait(lambda: pub.connected)
        for kind in ("start", "update"):
            journal.record(None, [], [OutboxMessage("crackd/line3-cam1/event", {"type": kind}, 1, False, "u1")])
        pub.notify()
        # Home Assistant (re)starts after the event began: the retained state is what it reads first
        assert wait(lambda: Retained(mosquitto.port, "crackd/line3-cam1/crack").messages == {crack: b"ON"})
        journal.record(None, [], [OutboxMessage("crackd/line3-cam1/event", {"type": "end"}, 1, False, "u1")])
        pub.notify()
        assert wait(lambda: Retained(mosquitto.port, "crackd/line3-cam1/crack").messages == {crack: b"OFF"})
        pub.stop()


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "homeassistant:\n  discovery: yes please\n",
            "<t>:2: homeassistant.discovery: expected true or false, got 'yes please'",
        ),
        (
            "homeassistant:\n  discovery_prefix: ha/#\n",
            "<t>:2: homeassistant.discovery_prefix: expected a topic prefix without the wildcards + and #, got 'ha/#'",
        ),
        (
            "homeassistant:\n  discover: true\n",
            "<t>:2: homeassistant.discover: unknown key (did you mean 'discovery'?)",
        ),
    ],
)
def test_homeassistant_settings_are_validated_with_their_line(text, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "<t>")
    assert str(err.value).startswith(expected)
