"""The event picture on MQTT (edge/outputs/snapshots_mqtt.py):
bounded, tagged, retained, through the outbox, newest only."""

from __future__ import annotations

from functools import partial

import cv2
import jsonschema
import numpy as np

from edge.config import config_from_dict
from edge.events.decision import START, EventRecord
from edge.events.journal import EventWrite, Journal, OutboxMessage
from edge.outputs.base import EventOut, Pictures
from edge.outputs.mqtt_events import MqttEvents
from edge.outputs.publisher import Publisher
from edge.outputs.snapshots_mqtt import (
    DeliveryCheck,
    bounded_jpeg,
    read_tag,
    snapshot_message,
    tag_jpeg,
)
from tests.helpers import wait_until, write_frames
from tests.helpers.daemon import BLOCK, InProcess, daemon_dict
from tests.helpers.mqtt import Broker

wait = partial(wait_until, timeout=15.0)
IDENTITY = {
    "version": "0.1.0",
    "bundle_version": "1.0",
    "bundle_sha256": "ab" * 32,
    "started_at": "2024-01-01T00:00:00.000Z",
}


def noisy_jpeg(w=1280, h=960, quality=95) -> bytes:
    """A picture JPEG cannot compress well (random texture): hundreds of KB at quality 95."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    cv2.line(img, (10, 10), (w - 10, h - 10), (0, 0, 255), 9)
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def record(uuid="f84147e9-8af8-4cde-a02f-98b733151eba", revision=0) -> EventRecord:
    return EventRecord(
        kind=START,
        uuid=uuid,
        revision=revision,
        started_at=1.0,
        t=1.0,
        ended_at=None,
        frames=2,
        peak_score=0.9,
        peak_measurements=None,
        peak_frame_seq=3,
        first_frame_seq=2,
        last_frame_seq=3,
    )


def decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a decodable JPEG"
    return img


def test_an_overlay_over_the_limit_is_reencoded_under_it_and_still_decodes():
    big = noisy_jpeg()
    assert len(big) > 600 * 1024
    small = bounded_jpeg(big, 100 * 1024)
    assert len(small) <= 100 * 1024
    img = decode(small)
    assert img.shape[2] == 3 and abs(img.shape[1] / img.shape[0] - 1280 / 960) < 0.01  # scaled, not cropped
    fits = noisy_jpeg(64, 48)
    assert bounded_jpeg(fits, 100 * 1024) is fits  # already small enough: the bytes written to disk go out unchanged


def test_the_comment_segment_names_the_event_and_the_picture_still_decodes():
    tagged = tag_jpeg(noisy_jpeg(64, 48), {"uuid": "u-1", "revision": 3, "device_id": "cam1"})
    assert read_tag(tagged) == {"uuid": "u-1", "revision": 3, "device_id": "cam1"}
    assert decode(tagged).shape == (48, 64, 3)
    assert read_tag(noisy_jpeg(64, 48)) is None


def test_switched_off_there_is_no_message_and_the_event_names_no_picture(tmp_path):
    (tmp_path / "o.jpg").write_bytes(noisy_jpeg(64, 48))

    def event(revision, new_pictures=True):
        write = EventWrite(record(revision=revision), "1.0", "ab" * 32, "cam1", "f.jpg", "o.jpg")
        return EventOut(write, Pictures("f.jpg", "o.jpg", 3), new_pictures=new_pictures)

    journal = Journal(tmp_path / "crackd.db")
    off_cfg = {"device_id": "cam1", "storage": {"state_dir": str(tmp_path)}, "mqtt": {"snapshots": False}}
    off = MqttEvents(config_from_dict(off_cfg), journal, None)
    (only,) = off.messages(event(0))
    assert only.topic == "crackd/cam1/event" and "mqtt" not in only.payload["snapshot"]
    on = MqttEvents(config_from_dict({"device_id": "cam1", "storage": {"state_dir": str(tmp_path)}}), journal, None)
    picture, message = on.messages(event(2))
    assert picture.topic == "crackd/cam1/snapshot" and picture.retain and picture.qos == 1
    named = {"topic": "crackd/cam1/snapshot", "uuid": record().uuid, "revision": 2}
    assert message.payload["snapshot"]["mqtt"] == named
    (later,) = on.messages(event(3, new_pictures=False))  # a message without a new picture names the last one
    assert later.payload["snapshot"]["mqtt"] == named
    journal.close()


def test_the_daemon_publishes_each_events_overlay_retained_bounded_and_named_by_the_event(
    tmp_path, darkness_bundle, mosquitto, subscriber_factory, schemas
):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 2, size=(320, 240))
    sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/#")
    cfg = config_from_dict(daemon_dict(tmp_path, darkness_bundle, frames, mosquitto.port, mqtt__snapshot_max_kb=16))
    InProcess(cfg).wait_finished()
    sub.wait_for(lambda s: len(s.on("event")) >= 4 and len(s.on("snapshot")) >= 2, what="events and snapshots")
    events = sub.on("event")
    for p in events:
        jsonschema.validate(p, schemas["event"])
    pictures = sub.on("snapshot")
    assert all(isinstance(p, bytes) and len(p) <= 16 * 1024 for p in pictures)
    tags = [(t["uuid"], t["revision"]) for t in map(read_tag, pictures)]
    # A picture goes out at each start and whenever the peak improved (here possibly at the end, updates being
    # rate-limited): every message names the latest picture of its event, and every picture is named.
    named = [(p["snapshot"]["mqtt"]["uuid"], p["snapshot"]["mqtt"]["revision"]) for p in events]
    assert all(uuid == p["uuid"] and rev <= p["revision"] for (uuid, rev), p in zip(named, events))
    assert set(named) == set(tags) and len(tags) == len(set(tags))
    assert {p["uuid"] for p in events if p["type"] == "start"} == {u for u, _ in tags}
    # The bytes are the overlay written for the event (same picture, the red tint of the crack included).
    on_disk = cv2.imread(str(tmp_path / "state" / events[-1]["snapshot"]["overlay"]))
    sent = decode(pictures[-1])
    assert sent.shape == on_disk.shape
    assert np.abs(sent.astype(int) - on_disk.astype(int)).mean() < 6
    red = (sent[..., 2] > 150) & (sent[..., 1] < 110) & (sent[..., 0] < 110)
    assert red.sum() > 100
    late = subscriber_factory(mosquitto.port, topic="crackd/cam1/snapshot")  # after the run: the retained copy
    (retained,) = late.wait_for(lambda s: s.on("snapshot"), what="retained snapshot")
    assert late.messages[0][2] is True and (read_tag(retained)["uuid"], read_tag(retained)["revision"]) == tags[-1]


def test_an_outage_keeps_only_the_newest_pending_picture_and_delivers_it_on_reconnect(
    tmp_path, mosquitto, subscriber_factory
):
    big = tmp_path / "overlay.jpg"
    big.write_bytes(noisy_jpeg(320, 240))
    cfg = config_from_dict(
        {
            "device_id": "cam1",
            "mqtt": {
                "host": "127.0.0.1",
                "port": mosquitto.port,
                "reconnect_min_s": 1,
                "reconnect_max_s": 1,
                "keepalive": 5,
            },
        }
    )
    sub = subscriber_factory(
        mosquitto.port, topic="crackd/cam1/#"
    )  # persistent session: queued for it across the outage
    with Journal(tmp_path / "crackd.db") as journal:
        pub = Publisher(cfg, journal, IDENTITY)
        pub.start()
        assert wait(lambda: pub.connected)
        mosquitto.stop()
        assert wait(lambda: not pub.connected)
        for i in range(5):  # five events while the broker is away, each with its picture and its start message
            rec = record(uuid=f"00000000-0000-4000-8000-00000000000{i}")
            journal.record(
                None,
                [],
                [
                    snapshot_message(cfg, rec, big),
                    OutboxMessage(cfg.topic("event"), {"uuid": rec.uuid}, 1, False, rec.uuid),
                ],
            )
        assert journal.outbox_depth() == 6  # five events, one picture: the newest
        mosquitto.start()
        sub.wait_for(lambda s: len(s.on("event")) >= 5, what="replayed events")
        assert wait(lambda: journal.outbox_depth() == 0)
        late = subscriber_factory(mosquitto.port, topic="crackd/cam1/snapshot")
        (retained,) = late.wait_for(lambda s: s.on("snapshot"), what="retained snapshot")
        assert read_tag(retained)["uuid"] == "00000000-0000-4000-8000-000000000004"
        # Sent once. (A subscriber that reconnects after crackd also gets the retained copy when it subscribes
        # again: that copy carries the retain flag, a message the broker forwards or queued does not.)
        forwarded = [p for t, p, retained in sub.messages if t.endswith("/snapshot") and not retained]
        assert [read_tag(p)["uuid"] for p in forwarded] == ["00000000-0000-4000-8000-000000000004"]
        pub.stop()


def test_a_picture_the_broker_drops_for_its_size_limit_is_reported_with_the_limit_needed(tmp_path):
    """mosquitto's message_size_limit: the broker acknowledges the picture and delivers it to nobody."""
    broker = Broker(tmp_path / "broker", extra=("message_size_limit 20000",)).start()
    small, big = tmp_path / "small.jpg", tmp_path / "big.jpg"
    small.write_bytes(noisy_jpeg(64, 48))
    big.write_bytes(noisy_jpeg(320, 240))
    cfg = config_from_dict(
        {
            "device_id": "cam1",
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "reconnect_min_s": 1, "keepalive": 5},
        }
    )
    try:
        with Journal(tmp_path / "crackd.db") as journal:
            pub = Publisher(cfg, journal, IDENTITY)
            check = DeliveryCheck(cfg, pub, timeout_s=2.0)
            pub.start()

            def send(picture, revision):
                journal.record(None, [], [snapshot_message(cfg, record(revision=revision), picture)])
                pub.notify()
                assert wait(lambda: journal.outbox_depth() == 0)  # acknowledged by the broker either way

            send(small, 0)
            assert wait(lambda: check.pending() == 0) and check.problem() is None  # it came back
            send(big, 1)
            assert len(snapshot_message(cfg, record(), big).payload) > 20000
            assert wait(lambda: check.problem() is not None)
            assert check.dropped == 1 and "message_size_limit >= " in check.problem()
            assert "f84147e9-8af8-4cde-a02f-98b733151eba" in check.problem()
            send(small, 2)  # a picture that fits again clears the report
            assert wait(lambda: check.problem() is None)
            pub.stop()
    finally:
        broker.kill()


def test_a_picture_over_the_brokers_packet_limit_does_not_stall_the_events_behind_it(tmp_path, subscriber_factory):
    """mosquitto's max_packet_size: the broker closes the connection on the picture, at every resend."""
    broker = Broker(tmp_path / "broker", extra=("max_packet_size 20000",)).start()
    big = tmp_path / "big.jpg"
    big.write_bytes(noisy_jpeg(320, 240))
    cfg = config_from_dict(
        {
            "device_id": "cam1",
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "reconnect_min_s": 1, "keepalive": 5},
        }
    )
    try:
        sub = subscriber_factory(broker.port, topic="crackd/cam1/event")
        with Journal(tmp_path / "crackd.db") as journal:
            rec = record()
            journal.record(
                None,
                [],
                [snapshot_message(cfg, rec, big)]
                + [OutboxMessage(cfg.topic("event"), {"n": i}, 1, False, rec.uuid) for i in range(3)],
            )
            pub = Publisher(cfg, journal, IDENTITY)
            check = DeliveryCheck(cfg, pub)
            pub.start()
            sub.wait_for(lambda s: len(s.on("event")) >= 3, what="the events behind the picture")
            assert wait(lambda: journal.outbox_depth() == 0)
            assert "max_packet_size >= " in (check.problem() or "")
            pub.stop()
    finally:
        broker.kill()
