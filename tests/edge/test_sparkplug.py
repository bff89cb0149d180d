"""Sparkplug B output (edge/outputs/sparkplug.py): what a real
mosquitto delivers, decoded with edge/outputs/proto/sparkplug_b.proto.

The decoder is compiled from the .proto by protoc (grpcio-tools) into its own descriptor pool,
independently of the committed edge/outputs/sparkplug_b_pb2.py, so the test decodes with the schema
itself rather than with the module under test.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from functools import partial

import pytest

from edge.config import ConfigError, config_from_dict, parse_config
from edge.events.journal import Journal, OutboxMessage
from edge.outputs.sparkplug import DEVICE_METRICS, SparkplugPublisher
from tests.helpers import REPO, wait_until, write_frames
from tests.helpers.daemon import BLOCK, InProcess, daemon_dict

wait = partial(wait_until, timeout=20.0)
PROTO = REPO / "edge" / "outputs" / "proto" / "sparkplug_b.proto"
IDENTITY = {
    "version": "0.1.0",
    "bundle_version": "1.0",
    "bundle_sha256": "ab" * 32,
    "started_at": "2024-01-01T00:00:00.000Z",
}


def compiled_descriptor(tmp_path):
    """protoc's FileDescriptorProto for the vendored .proto."""
    from google.protobuf import descriptor_pb2

    out = tmp_path / "sparkplug.desc"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out}", PROTO.name],
        check=True,
        capture_output=True,
    )
    (fd,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return fd


@pytest.fixture(scope="module")
def Payload(tmp_path_factory):
    """The Payload message class built from the .proto in a private descriptor pool."""
    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    pool.Add(compiled_descriptor(tmp_path_factory.mktemp("proto")))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload"))


def config(port, state_dir, **mqtt):
    return config_from_dict(
        {
            "device_id": "cam1",
            "storage": {"state_dir": str(state_dir)},
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "reconnect_min_s": 1,
                "reconnect_max_s": 1,
                "keepalive": 5,
                "format": "sparkplug_b",
                "sparkplug": {"group_id": "line3"},
                **mqtt,
            },
        }
    )


def event(i: int, kind: str = "start", t: str = "2026-11-21T09:13:31.562Z") -> dict:
    return {
        "schema_version": 1,
        "type": kind,
        "uuid": f"00000000-0000-4000-8000-{i:012d}",
        "revision": 0,
        "device_id": "cam1",
        "started_at": t,
        "t": t,
        "ended_at": None,
        "end_reason": None,
        "frames": 2,
        "score": 0.97,
        "measurements": {
            "count": 1,
            "length_px": 381.13,
            "max_width_px": 4.33,
            "total_area_px": 1894,
            "area_fraction": 0.0247,
            "length_mm": 76.23,
            "max_width_mm": 0.866,
        },
        "peak_frame_seq": 3,
        "bundle_version": "1.0",
        "bundle_sha256": "ab" * 32,
        "snapshot": None,
    }


def queue(journal, cfg, events):
    for e in events:
        journal.record(None, [], [OutboxMessage(cfg.topic("event"), e, cfg.mqtt.qos, False, e["uuid"])])


def decoded(sub, Payload, kind: str) -> list:
    return [Payload.FromString(p) for t, p, _ in list(sub.messages) if t.split("/")[2] == kind]


def metrics(payload) -> dict:
    out = {}
    for m in payload.metrics:
        field = m.WhichOneof("value")
        out[m.name] = None if m.is_null else getattr(m, field)
    return out


def test_the_committed_module_is_generated_from_the_vendored_proto(tmp_path):
    from google.protobuf import descriptor_pb2

    from edge.outputs import sparkplug_b_pb2

    committed = descriptor_pb2.FileDescriptorProto.FromString(sparkplug_b_pb2.DESCRIPTOR.serialized_pb)
    fresh = compiled_descriptor(tmp_path)

    def drop_json_names(message_types):  # protoc's descriptor sets carry json_name; generated modules leave it out
        for mt in message_types:
            for f in mt.field:
                f.ClearField("json_name")
            drop_json_names(mt.nested_type)

    drop_json_names(fresh.message_type)
    assert committed == fresh


def test_births_data_and_death_decode_and_follow_the_spec(tmp_path, mosquitto, subscriber_factory, Payload):
    sub = subscriber_factory(mosquitto.port, topic="spBv1.0/#")
    cfg = config(mosquitto.port, tmp_path / "state")
    with Journal(tmp_path / "crackd.db") as journal:
        pub = SparkplugPublisher(cfg, journal, IDENTITY)
        pub.start()
        sub.wait_for(lambda s: len(s.messages) >= 2, what="births")
        topics = [t for t, _, _ in sub.messages]
        assert topics[:2] == ["spBv1.0/line3/NBIRTH/cam1", "spBv1.0/line3/DBIRTH/cam1/camera"]
        (nbirth,), (dbirth,) = decoded(sub, Payload, "NBIRTH"), decoded(sub, Payload, "DBIRTH")
        assert nbirth.seq == 0 and dbirth.seq == 1
        node = metrics(nbirth)
        assert node["Node Control/Rebirth"] is False and node["bdSeq"] == pub.bdseq
        born = {m.name: m for m in dbirth.metrics}
        assert set(born) == set(DEVICE_METRICS)
        assert all(m.datatype == DEVICE_METRICS[m.name] and m.timestamp > 0 for m in dbirth.metrics)
        assert born["Crack/Active"].boolean_value is False and born["Crack/Score"].is_null
        queue(journal, cfg, [event(1), event(1, "end")])
        pub.notify()
        assert pub.publish_stats(
            {
                "fps": 9.5,
                "latency_ms": {"p50": 10, "p95": 21.7},
                "outbox_depth": 0,
                "cpu_temp_c": None,
                "camera_state": "ok",
                "frames_processed": 100,
                "bundle_version": "1.0",
            }
        )
        sub.wait_for(lambda s: len(decoded(s, Payload, "DDATA")) >= 3, what="DDATA")
        data = decoded(sub, Payload, "DDATA")
        start, end = [p for p in data if "Crack/Event Type" in metrics(p)]
        (health,) = [p for p in data if "Health/FPS" in metrics(p)]
        assert metrics(start)["Crack/Active"] is True and metrics(end)["Crack/Active"] is False
        assert metrics(start)["Crack/Event UUID"] == "00000000-0000-4000-8000-000000000001"
        assert (
            abs(metrics(start)["Crack/Length mm"] - 76.23) < 1e-9 and abs(metrics(start)["Crack/Score"] - 0.97) < 1e-6
        )
        assert all(
            m.timestamp == 1795252411562 and not m.is_historical for m in start.metrics
        )  # capture time of the frame
        assert not metrics(start)["Crack/End Reason"] and metrics(end)["Crack/Event Type"] == "end"
        h = metrics(health)
        assert (
            abs(h["Health/FPS"] - 9.5) < 1e-6
            and h["Health/CPU Temperature C"] is None
            and h["Health/Camera State"] == "ok"
        )
        assert wait(lambda: journal.outbox_depth() == 0)
        pub.stop()
    sub.wait_for(lambda s: decoded(s, Payload, "NDEATH"), what="NDEATH")
    (death,) = decoded(sub, Payload, "NDEATH")
    assert metrics(death) == {"bdSeq": node["bdSeq"]} and not death.HasField("seq")
    assert not [t for t, _, _ in sub.messages if not t.startswith("spBv1.0/")]  # no JSON status in Sparkplug mode


def test_seq_wraps_from_255_to_0(tmp_path, mosquitto, subscriber_factory, Payload):
    sub = subscriber_factory(mosquitto.port, topic="spBv1.0/#")
    cfg = config(mosquitto.port, tmp_path / "state")
    with Journal(tmp_path / "crackd.db") as journal:
        queue(journal, cfg, [event(i) for i in range(300)])
        pub = SparkplugPublisher(cfg, journal, IDENTITY)
        pub.start()
        sub.wait_for(lambda s: len(s.messages) >= 301, what="DBIRTH and 300 DDATA")
        assert wait(lambda: journal.outbox_depth() == 0)
        pub.stop()
    session = [(t.split("/")[2], Payload.FromString(p).seq) for t, p, _ in sub.messages if "/NDEATH/" not in t]
    assert [k for k, _ in session] == ["NBIRTH", "DBIRTH"] + ["DDATA"] * 300
    seqs = [seq for _, seq in session]
    assert seqs == [i % 256 for i in range(302)]  # NBIRTH 0, DBIRTH 1, data 2..255, then 0 again
    assert seqs[255:258] == [255, 0, 1]


def test_an_outage_replays_events_as_historical_after_new_births(tmp_path, mosquitto, subscriber_factory, Payload):
    sub = subscriber_factory(mosquitto.port, topic="spBv1.0/#")  # persistent session: queued for it across the outage
    cfg = config(mosquitto.port, tmp_path / "state")
    with Journal(tmp_path / "crackd.db") as journal:
        pub = SparkplugPublisher(cfg, journal, IDENTITY)
        pub.start()
        sub.wait_for(lambda s: decoded(s, Payload, "DBIRTH"), what="first births")
        mosquitto.stop()  # (births go at mqtt.qos 1 like the events: the broker keeps them for an offline host too)
        assert wait(lambda: not pub.connected)
        queue(journal, cfg, [event(i, t=f"2026-11-21T09:13:3{i}.000Z") for i in range(3)])
        pub.notify()
        mosquitto.start()
        sub.wait_for(lambda s: len(decoded(s, Payload, "DDATA")) >= 3, what="replayed DDATA")
        assert wait(lambda: journal.outbox_depth() == 0)
        pub.stop()
    kinds = [t.split("/")[2] for t, _, _ in sub.messages]
    second_session = kinds[kinds.index("NBIRTH", 1) :]  # (the broker sent the first session's NDEATH will meanwhile)
    assert second_session[:5] == ["NBIRTH", "DBIRTH", "DDATA", "DDATA", "DDATA"]
    assert all(
        metrics(d)["bdSeq"] == metrics(decoded(sub, Payload, "NBIRTH")[0])["bdSeq"]
        for d in decoded(sub, Payload, "NDEATH")[:-1]
    )
    nbirths = decoded(sub, Payload, "NBIRTH")
    assert metrics(nbirths[1])["bdSeq"] == (metrics(nbirths[0])["bdSeq"] + 1) % 256 and nbirths[1].seq == 0
    for i, data in enumerate(decoded(sub, Payload, "DDATA")):
        assert all(m.is_historical for m in data.metrics)
        assert {m.timestamp for m in data.metrics} == {1795252410000 + 1000 * i}  # 2026-11-21T09:13:3i


def test_a_lost_connection_gets_the_ndeath_will_of_its_session(tmp_path, mosquitto, subscriber_factory, Payload):
    sub = subscriber_factory(mosquitto.port, topic="spBv1.0/#")
    cfg = config(mosquitto.port, tmp_path / "state")
    with Journal(tmp_path / "crackd.db") as journal:
        pub = SparkplugPublisher(cfg, journal, IDENTITY)
        pub.start()
        sub.wait_for(lambda s: decoded(s, Payload, "DBIRTH"), what="births")
        first = metrics(decoded(sub, Payload, "NBIRTH")[0])["bdSeq"]
        pub.client.socket().shutdown(socket.SHUT_RDWR)  # the network goes away without a DISCONNECT
        sub.wait_for(
            lambda s: decoded(s, Payload, "NDEATH") and len(decoded(s, Payload, "NBIRTH")) >= 2, what="will and rebirth"
        )
        assert metrics(decoded(sub, Payload, "NDEATH")[0])["bdSeq"] == first
        assert metrics(decoded(sub, Payload, "NBIRTH")[1])["bdSeq"] == (first + 1) % 256
        pub.stop()
    restarted_bdseq = int((tmp_path / "state" / "sparkplug_bdseq").read_text())
    assert restarted_bdseq == (first + 1) % 256  # kept across restarts: the next run starts from here


def test_the_daemon_speaks_sparkplug_end_to_end(tmp_path, darkness_bundle, mosquitto, subscriber_factory, Payload):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 2)
    sub = subscriber_factory(mosquitto.port, topic="#")
    d = daemon_dict(
        tmp_path, darkness_bundle, frames, mosquitto.port, mqtt__format="sparkplug_b", mqtt__snapshots=False
    )
    InProcess(config_from_dict(d)).wait_finished()
    sub.wait_for(lambda s: decoded(s, Payload, "NDEATH"), what="the run and its NDEATH")
    events = [metrics(p) for p in decoded(sub, Payload, "DDATA")]
    events = [m for m in events if "Crack/Event Type" in m]
    assert [m["Crack/Event Type"] for m in events] == ["start", "end"] * 2
    assert len({m["Crack/Event UUID"] for m in events}) == 2
    assert {t.split("/")[0] for t, _, _ in sub.messages} == {"spBv1.0"}  # no JSON topics, no HA discovery


def test_sparkplug_ids_are_validated_with_their_line():
    with pytest.raises(ConfigError) as err:
        parse_config("mqtt:\n  format: sparkplug_b\n  sparkplug:\n    group_id: line/3\n", "<t>")
    assert str(err.value) == (
        "<t>:4: mqtt.sparkplug.group_id: expected one MQTT topic level, without /, + or #, got 'line/3'"
    )
    with pytest.raises(ConfigError) as err:
        parse_config("mqtt:\n  format: protobuf\n", "<t>")
    assert str(err.value) == "<t>:2: mqtt.format: expected one of json, sparkplug_b, got 'protobuf'"


def test_births_come_before_any_data_after_a_rebirth_request(tmp_path, mosquitto, subscriber_factory, Payload):
    sub = subscriber_factory(mosquitto.port, topic="spBv1.0/line3/+/cam1/#")
    cfg = config(mosquitto.port, tmp_path / "state")
    with Journal(tmp_path / "crackd.db") as journal:
        pub = SparkplugPublisher(cfg, journal, IDENTITY)
        pub.start()
        sub.wait_for(lambda s: decoded(s, Payload, "DBIRTH"), what="births")
        command = Payload(timestamp=int(time.time() * 1000))
        m = command.metrics.add()
        m.name, m.datatype, m.boolean_value = "Node Control/Rebirth", 11, True
        sub.client.publish("spBv1.0/line3/NCMD/cam1", command.SerializeToString(), qos=1)  # what a SCADA host sends
        sub.wait_for(
            lambda s: len(decoded(s, Payload, "NBIRTH")) >= 2 and len(decoded(s, Payload, "DBIRTH")) >= 2,
            what="rebirth",
        )
        rebirth = decoded(sub, Payload, "NBIRTH")[1]
        assert rebirth.seq == 0 and metrics(rebirth)["bdSeq"] == pub.bdseq  # same session: same bdSeq
        pub.stop()


def test_keeping_detections_is_a_health_metric_sent_as_soon_as_it_changes(
    tmp_path, mosquitto, subscriber_factory, Payload
):
    """The supervisor hands a pause (disk full: no detection could be kept) to the publisher as identity; in
    Sparkplug mode it becomes `Health/Keeping Detections`, false at once, true again when frames are taken."""
    sub = subscriber_factory(mosquitto.port, topic="spBv1.0/#")
    cfg = config(mosquitto.port, tmp_path / "state")
    with Journal(tmp_path / "crackd.db") as journal:
        pub = SparkplugPublisher(cfg, journal, IDENTITY)
        pub.start()
        sub.wait_for(lambda s: decoded(s, Payload, "DBIRTH"), what="births")
        (dbirth,) = decoded(sub, Payload, "DBIRTH")
        assert metrics(dbirth)["Health/Keeping Detections"] is None  # not known before the first stats
        pub.update_identity(detections_paused="not keeping detections: the disk is full")
        pub.update_identity(detections_paused=None)
        sub.wait_for(lambda s: len(decoded(s, Payload, "DDATA")) >= 2, what="the two changes")
        pub.stop()
    values = [metrics(p)["Health/Keeping Detections"] for p in decoded(sub, Payload, "DDATA")]
    assert values == [False, True]


class SlowHost:
    """A Sparkplug host that holds its PUBACKs back until `release()`: the broker then sends it at most its
    `max_inflight_messages` (mosquitto's default 20) QoS 1 messages and queues the rest, as for a busy host
    during a replay."""

    def __init__(self, port: int, topic: str) -> None:
        import threading
        import uuid

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes]] = []
        self._held: list[tuple[int, int]] = []
        self._released = False
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"host-{uuid.uuid4().hex[:8]}", manual_ack=True
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the test host could not subscribe")

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))
            if self._released:
                client.ack(msg.mid, msg.qos)
            else:
                self._held.append((msg.mid, msg.qos))

    def release(self) -> None:
        with self._lock:
            self._released = True
            for mid, qos in self._held:
                self.client.ack(mid, qos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_seq_stays_in_order_when_the_broker_queues_data_for_a_slow_host(tmp_path, mosquitto, Payload):
    """A replay fills the host's in-flight window at the broker (mosquitto's default max_inflight_messages 20); the
    broker queues the rest of the node's messages for it, and a message it may send ahead of them (a QoS 0 one)
    would reach the host with a seq from the future: every message of the session must arrive in seq order."""
    host = SlowHost(mosquitto.port, "spBv1.0/#")
    cfg = config(mosquitto.port, tmp_path / "state")
    try:
        with Journal(tmp_path / "crackd.db") as journal:
            queue(journal, cfg, [event(i) for i in range(30)])
            pub = SparkplugPublisher(cfg, journal, IDENTITY)
            pub.start()
            assert wait(lambda: journal.outbox_depth() == 0)  # the broker has all 30 events (20 sent to the host)
            assert pub.publish_stats({"fps": 5.0, "outbox_depth": 0})  # health while the host's window is full
            # The broker reads a connection in order: once this PUBACK is back, it has routed the health DDATA too.
            pub.client.publish("test/sync", b"", qos=1).wait_for_publish(10)
            host.release()
            wait(lambda: len(host.messages) >= 2 + 30 + 1, what="births, 30 events and the health DDATA")
            pub.stop()
    finally:
        host.close()
    session = [(t.split("/")[2], Payload.FromString(p)) for t, p in host.messages if "/NDEATH/" not in t]
    assert [kind for kind, _ in session[:2]] == ["NBIRTH", "DBIRTH"]
    assert [p.seq for _, p in session] == list(range(33)), [p.seq for _, p in session]
    assert "Health/FPS" in metrics(session[-1][1])  # the health DDATA came last, as it was sent


def test_a_full_disk_does_not_make_the_next_start_reuse_bdseq(tmp_path, small_fs, caplog):
    """STATE/sparkplug_bdseq is replaced through a new temporary file, which a full disk has no block for: it is
    then overwritten in place; where even that fails, the process counts on in memory and says what may repeat."""
    from tests.helpers.disk import fill_disk, remount

    cfg = config(1, small_fs / "state")
    with Journal(tmp_path / "crackd.db") as journal:
        first = SparkplugPublisher(cfg, journal, IDENTITY).bdseq
        filler = fill_disk(small_fs)
        restarted = SparkplugPublisher(cfg, journal, IDENTITY)  # a new process on the full disk
        assert restarted.bdseq == first + 1
        assert SparkplugPublisher(cfg, journal, IDENTITY).bdseq == first + 2  # kept: the next start counts on
        assert int(cfg.layout.sparkplug_bdseq.read_text()) == first + 2
        filler.unlink()
        remount(small_fs, "ro")
        try:
            stuck = SparkplugPublisher(cfg, journal, IDENTITY)
            assert stuck.bdseq == first + 3
            assert stuck._next_bdseq() == first + 4  # the next connection of the same process: a new one still
        finally:
            remount(small_fs, "rw")
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors and f"the next start of crackd may use bdSeq {first + 3} again" in errors[0]
