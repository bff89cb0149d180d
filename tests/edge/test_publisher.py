"""The MQTT publisher against a real mosquitto: birth/will,
store-and-forward from the journal's outbox, TLS + passwords."""

from __future__ import annotations

import time
from functools import partial

import jsonschema
import pytest

from edge.config import config_from_dict
from edge.events.journal import Journal, OutboxMessage
from edge.outputs.publisher import Publisher, cpu_temperature_c
from tests.helpers import REPO, wait_until

wait = partial(wait_until, timeout=10.0)  # MQTT round trips on loopback: seconds at most

IDENTITY = {
    "version": "0.1.0",
    "bundle_version": "1.0",
    "bundle_sha256": "ab" * 32,
    "started_at": "2024-01-01T00:00:00.000Z",
}


def make_config(port, **mqtt):
    return config_from_dict(
        {
            "device_id": "cam1",
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "reconnect_min_s": 1,
                "reconnect_max_s": 1,
                "keepalive": 5,
                **mqtt,
            },
        }
    )


@pytest.fixture
def journal(tmp_path):
    with Journal(tmp_path / "crackd.db") as j:
        yield j


def queue(journal, n, start=0):
    for i in range(start, start + n):
        journal.record(None, [], [OutboxMessage("crackd/cam1/event", {"n": i}, 1, False, f"uuid-{i}")])


def test_birth_is_retained_and_a_clean_stop_publishes_offline(mosquitto, journal, subscriber_factory, schemas):
    pub = Publisher(make_config(mosquitto.port), journal, IDENTITY)
    pub.start()
    assert wait(lambda: pub.connected)
    late = subscriber_factory(
        mosquitto.port, topic="crackd/cam1/status"
    )  # subscribes after the birth: gets the retained copy
    (birth,) = late.wait_for(lambda s: s.on("status"), what="retained birth")
    assert birth["state"] == "online" and birth["bundle_version"] == "1.0"
    assert late.messages[0][2] is True  # delivered as retained
    jsonschema.validate(birth, schemas["status"])
    pub.stop()
    offline = late.wait_for(lambda s: [p for p in s.on("status") if p["state"] == "offline"], what="offline")[0]
    assert offline["reason"] == "shutdown"
    jsonschema.validate(offline, schemas["status"])


def test_outbox_is_drained_in_order_and_rows_deleted_after_puback(mosquitto, journal, subscriber_factory):
    sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/event")
    pub = Publisher(make_config(mosquitto.port, max_inflight=5), journal, IDENTITY)
    pub.start()
    assert wait(lambda: pub.connected)
    queue(journal, 50)
    pub.notify()
    sub.wait_for(lambda s: len(s.on("event")) >= 50, what="50 events")
    got = sub.on("event")
    assert [p["n"] for p in got] == list(range(50))
    assert [p["seq"] for p in got] == sorted(p["seq"] for p in got)
    assert not any(p["replayed"] for p in got)  # queued while connected
    assert wait(lambda: journal.outbox_depth() == 0)
    assert pub.published == 50
    pub.stop()


def test_messages_queued_while_the_broker_is_down_are_sent_later_and_marked_replayed(
    mosquitto, journal, subscriber_factory
):
    sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/event")
    pub = Publisher(make_config(mosquitto.port), journal, IDENTITY)
    pub.start()
    assert wait(lambda: pub.connected)
    queue(journal, 3)
    pub.notify()
    sub.wait_for(lambda s: len(s.on("event")) >= 3)
    mosquitto.stop()
    assert wait(lambda: not pub.connected)
    queue(journal, 20, start=3)
    pub.notify()
    time.sleep(0.3)
    assert journal.outbox_depth() == 20  # nothing is lost while disconnected: it waits in SQLite
    mosquitto.start()
    assert wait(lambda: pub.connected, timeout=15)
    sub.wait_for(lambda s: len({p["n"] for p in s.on("event")}) >= 23, timeout=15, what="replayed events")
    later = [p for p in sub.on("event") if p["n"] >= 3]
    assert all(p["replayed"] for p in later)
    firsts = list(dict.fromkeys(p["n"] for p in sub.on("event")))
    assert firsts == list(range(23))
    assert wait(lambda: journal.outbox_depth() == 0)
    pub.stop()


def test_the_outbox_survives_a_restart_of_the_daemon(mosquitto, tmp_path, subscriber_factory):
    path = tmp_path / "crackd.db"
    with Journal(path) as j:
        queue(j, 5)  # queued by a previous run that never reached the broker
    sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/event")
    with Journal(path) as j:
        pub = Publisher(make_config(mosquitto.port), j, IDENTITY)
        pub.start()
        sub.wait_for(lambda s: len(s.on("event")) >= 5)
        assert all(p["replayed"] for p in sub.on("event"))
        assert wait(lambda: j.outbox_depth() == 0)
        pub.stop()


def test_a_refused_connection_is_not_connected(tls_broker, journal, test_ca):
    cfg = make_config(
        tls_broker.port,
        username="crackd",
        password_env="X",
        tls={"enabled": True, "ca": str(test_ca.ca), "cert": str(test_ca.client_cert), "key": str(test_ca.client_key)},
    )
    pub = Publisher(cfg, journal, IDENTITY, password="wrong")
    pub.start()
    assert wait(lambda: pub.last_error is not None and "refused" in pub.last_error)
    assert not pub.connected
    queue(journal, 1)
    pub.notify()
    time.sleep(0.3)
    assert journal.outbox_depth() == 1
    pub.stop()


def test_tls_with_client_certificate_and_password(tls_broker, journal, test_ca, subscriber_factory):
    sub = subscriber_factory(tls_broker.port, topic="crackd/cam1/#", tls=test_ca, auth=("crackd", "s3cret"))
    cfg = make_config(
        tls_broker.port,
        username="crackd",
        password_env="X",
        tls={"enabled": True, "ca": str(test_ca.ca), "cert": str(test_ca.client_cert), "key": str(test_ca.client_key)},
    )
    pub = Publisher(cfg, journal, IDENTITY, password="s3cret")
    pub.start()
    assert wait(lambda: pub.connected)
    queue(journal, 2)
    pub.notify()
    sub.wait_for(lambda s: len(s.on("event")) >= 2 and s.on("status"))
    assert sub.on("status")[0]["state"] == "online"
    pub.stop()


def test_stats_and_frames_are_dropped_not_queued_while_disconnected(tmp_path, journal):
    pub = Publisher(make_config(1, publish_frames=True), journal, IDENTITY)  # port 1: nobody listens
    assert pub.publish_stats({"fps": 1.0}) is False
    assert pub.publish_frame(lambda: {"seq": 1}) is False
    assert journal.outbox_depth() == 0


def test_cpu_temperature_is_read_where_the_kernel_exposes_it(tmp_path):
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("51234\n")
    assert cpu_temperature_c(str(tmp_path)) == 51.2
    assert cpu_temperature_c(str(tmp_path / "none")) is None


def test_every_example_in_docs_mqtt_md_matches_its_schema(schemas):
    import json
    import re

    text = (REPO / "docs" / "mqtt.md").read_text()
    checked = []
    topic = None
    for block in re.split(r"(^### .*$)", text, flags=re.M):
        heading = re.match(r"^### `crackd/[^/]+/(\w+)`", block)
        if heading:
            topic = heading.group(1)
            continue
        for example in re.findall(r"```json\n(.*?)```", block, flags=re.S):
            payload = json.loads(example)
            jsonschema.validate(payload, schemas[topic])
            checked.append(topic)
            m = payload.get("measurements")
            if m:  # the definitions of edge.engine.measure: a mean width is never above the max width
                assert m["mean_width_px"] <= m["max_width_px"], (topic, m)
    assert sorted(set(checked)) == sorted(schemas) and len(checked) >= 6


def test_another_client_with_our_client_id_is_detected_and_named(mosquitto, journal, caplog):
    """On an anonymous broker anyone (or a second device with the example's device_id) can take the client id:
    the broker drops the older connection at each takeover and both reconnect, so crackd flaps. It says so."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    cfg = make_config(mosquitto.port)
    pub = Publisher(cfg, journal, IDENTITY)
    pub.start()
    assert wait(lambda: pub.connected)
    rogue = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=mqtt.MQTTv311)
    rogue.reconnect_delay_set(1, 1)
    rogue.connect_async("127.0.0.1", mosquitto.port, keepalive=5)
    rogue.loop_start()
    try:
        with caplog.at_level("ERROR", logger="edge.outputs.publisher"):
            wait_until(
                lambda: any("another client uses this client id" in r.getMessage() for r in caplog.records),
                timeout=30,
                what="the takeover reported",
            )
        (line,) = [r.getMessage() for r in caplog.records if "another client uses" in r.getMessage()]
        assert "crackd-cam1" in line and "device_id cam1" in line and "Securing the broker" in line
        assert "another client uses this client id" in pub.last_error
    finally:
        rogue.disconnect()
        rogue.loop_stop()
        pub.stop()


def test_a_broker_restart_is_not_mistaken_for_a_takeover(mosquitto, journal, caplog):
    pub = Publisher(make_config(mosquitto.port), journal, IDENTITY)
    pub.start()
    try:
        assert wait(lambda: pub.connected)
        with caplog.at_level("ERROR", logger="edge.outputs.publisher"):
            for _ in range(2):
                mosquitto.stop()
                wait(lambda: not pub.connected)
                mosquitto.start()
                wait(lambda: pub.connected)
        assert not any("another client uses" in r.getMessage() for r in caplog.records)
    finally:
        pub.stop()


def test_a_dead_network_thread_is_reported_and_started_again_and_the_outbox_still_drains(
    mosquitto, journal, subscriber_factory, caplog
):
    """paho's network thread ends for good on an exception it does not handle (here one raised in a
    message callback; a CONNECT it cannot encode does the same): it must not pass for connected."""
    sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/event")
    pub = Publisher(make_config(mosquitto.port), journal, IDENTITY)

    def broken_callback(client, userdata, message):
        raise RuntimeError("bug in a callback")

    pub.client.message_callback_add("crackd-test/boom", broken_callback)
    pub.start()
    assert wait(lambda: pub.connected)
    pub.client.subscribe("crackd-test/boom", qos=1)
    assert wait(lambda: pub.client.publish("crackd-test/boom", b"x", qos=1).rc == 0)
    assert wait(lambda: not pub.connected and "MQTT network thread stopped" in (pub.last_error or ""))
    queue(journal, 3)
    pub.notify()
    sub.wait_for(lambda s: len(s.on("event")) >= 3, what="events after the restart of the network thread")
    assert wait(lambda: pub.connected and journal.outbox_depth() == 0) and pub.network_restarts == 1
    assert "paho's network thread stopped (RuntimeError: bug in a callback)" in caplog.text
    pub.stop()
