"""The webhook output (edge/outputs/webhook.py) against a real local HTTP server with failures injected:
error answers, timeouts, redirects, an outage, TLS; nothing lost, each POST signed, MQTT never held back."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from functools import partial

import jsonschema
import pytest
from referencing import Registry, Resource

from edge.config import ConfigError, config_from_dict, parse_config
from edge.events.decision import END, START, EventRecord
from edge.events.journal import EventWrite, Journal, OutboxMessage
from edge.outputs.base import EventOut, OutputContext, Pictures, build_outputs
from edge.outputs.webhook import Webhook
from tests.helpers import wait_until, write_frames
from tests.helpers.daemon import BLOCK, InProcess, daemon_dict
from tests.helpers.http_receiver import Receiver
from tests.helpers.paths import SCHEMAS

wait = partial(wait_until, timeout=15.0)
SECRET = "hook-s3cret"
IDENTITY = {"version": "0.1.0", "bundle_version": "1.1.0", "bundle_sha256": "ab" * 32, "started_at": None}
U1, U2 = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"


def webhook_config(tmp_path, url, **webhook):
    return config_from_dict(
        {
            "device_id": "cam1",
            "storage": {"state_dir": str(tmp_path)},
            "mqtt": {"enabled": False},
            "webhook": {"enabled": True, "url": url, "retry_min_s": 0.05, "retry_max_s": 0.2, **webhook},
        }
    )


def event(uuid: str, kind: str, revision: int, pictures: Pictures | None = None) -> EventOut:
    record = EventRecord(
        kind=kind,
        uuid=uuid,
        revision=revision,
        started_at=1_700_000_000.0,
        t=1_700_000_001.0 + revision,
        ended_at=1_700_000_009.0 if kind == END else None,
        frames=3 + revision,
        peak_score=0.93,
        peak_measurements=None,
        peak_frame_seq=7,
        first_frame_seq=5,
        last_frame_seq=7 + revision,
        end_reason="clear" if kind == END else None,
    )
    write = EventWrite(record, "1.1.0", "ab" * 32, "cam1")
    return EventOut(write, pictures, new_pictures=pictures is not None)


def queue(journal: Journal, hook, events: list[EventOut]) -> None:
    for e in events:
        journal.record(None, [e.write], hook.messages(e))
    hook.notify()


@pytest.fixture(scope="module")
def webhook_schema():
    schema = json.loads((SCHEMAS / "http" / "webhook.schema.json").read_text())
    event_schema = json.loads((SCHEMAS / "event.schema.json").read_text())
    registry = Registry().with_resource(event_schema["$id"], Resource.from_contents(event_schema))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def test_every_event_arrives_once_in_order_and_signed_through_errors_timeouts_redirects_and_an_outage(
    tmp_path, webhook_schema, monkeypatch
):
    monkeypatch.setenv("CRACKD_TEST_HOOK_SECRET", SECRET)
    receiver = Receiver(hang_s=2.0).start()
    receiver.plan = [500, "hang", 302, 503]  # the first four POSTs fail, each differently
    cfg = webhook_config(tmp_path, receiver.url, timeout_s=0.5, secret_env="CRACKD_TEST_HOOK_SECRET")
    with Journal(tmp_path / "crackd.db") as journal:
        (hook,) = build_outputs(OutputContext(cfg, journal, IDENTITY))
        assert isinstance(hook, Webhook)
        hook.start()
        try:
            queue(journal, hook, [event(U1, START, 0), event(U1, "update", 1), event(U1, END, 2)])
            assert wait(lambda: len(receiver.received) == 3) and hook.failures == 4
            receiver.stop()  # the receiver goes away: connection refused
            queue(journal, hook, [event(U2, START, 0), event(U2, END, 1)])
            assert wait(lambda: hook.failures >= 6) and journal.outbox_depth("webhook") == 2
            assert "Connection refused" in (hook.last_error or "")
            waiting = hook.status()
            assert (waiting.name, waiting.waiting, waiting.delivered) == ("webhook", 2, 3) and waiting.error
            receiver.start()
            assert wait(lambda: len(receiver.received) == 5 and journal.outbox_depth("webhook") == 0)
        finally:
            hook.stop(timeout=5)
            receiver.stop()
    bodies = receiver.bodies()
    assert [(b["event"]["uuid"], b["event"]["type"]) for b in bodies] == [
        (U1, "start"),
        (U1, "update"),
        (U1, "end"),
        (U2, "start"),
        (U2, "end"),
    ]
    seqs = [b["event"]["seq"] for b in bodies]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert [b["event"]["replayed"] for b in bodies] == [True, True, True, True, True]  # each waited behind a failure
    for headers, raw in receiver.received:
        expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-crackd-signature"], expected)
        body = json.loads(raw)
        assert (
            headers["x-crackd-delivery"] == str(body["event"]["seq"])
            and headers["x-crackd-event"] == body["event"]["type"]
        )
        webhook_schema.validate(body)


def test_a_receiver_that_is_down_holds_back_no_mqtt_message(tmp_path, mosquitto, subscriber_factory):
    """Per-output delivery: the webhook's rows wait while the MQTT output's rows are delivered and deleted."""
    receiver = Receiver()  # never started: nothing listens on its port
    cfg = config_from_dict(
        {
            "device_id": "cam1",
            "storage": {"state_dir": str(tmp_path)},
            "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "reconnect_min_s": 1, "keepalive": 5},
            "webhook": {"enabled": True, "url": receiver.url, "retry_min_s": 0.05, "retry_max_s": 0.2},
        }
    )
    sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/event")
    with Journal(tmp_path / "crackd.db") as journal:
        outputs = build_outputs(OutputContext(cfg, journal, IDENTITY))
        assert [o.name for o in outputs] == ["mqtt", "webhook"]
        for o in outputs:
            o.start()  # the mqtt output connects
        for e in (event(U1, START, 0), event(U1, END, 1)):
            journal.record(None, [e.write], [m for o in outputs for m in o.messages(e)])
        for o in outputs:
            o.notify()
        sub.wait_for(lambda s: len(s.on("event")) == 2, what="the MQTT events")
        assert wait(lambda: journal.outbox_depth("mqtt") == 0)
        assert journal.outbox_depth("webhook") == 2 and outputs[1].failures >= 1
        receiver.start()
        assert wait(lambda: journal.outbox_depth("webhook") == 0)
        for o in outputs:
            o.stop(timeout=5)
        receiver.stop()
    assert [b["event"]["type"] for b in receiver.bodies()] == ["start", "end"]
    assert [p["uuid"] for p in sub.on("event")] == [U1, U1]


def test_the_snapshot_goes_with_the_messages_that_took_it_and_tls_is_verified(tmp_path, test_ca):
    (tmp_path / "snapshots").mkdir()
    jpeg = b"\xff\xd8 a picture \xff\xd9"
    (tmp_path / "snapshots" / "o.jpg").write_bytes(jpeg)
    pictures = Pictures("snapshots/f.jpg", "snapshots/o.jpg", 7)
    receiver = Receiver(tls=test_ca).start()
    try:
        unverified = webhook_config(tmp_path, receiver.url, include_snapshot=True)  # the system CAs: not ours
        with Journal(tmp_path / "crackd.db") as journal:
            hook = Webhook(unverified, journal, None)
            hook.start()
            queue(journal, hook, [event(U1, START, 0, pictures)])
            assert wait(lambda: "CERTIFICATE_VERIFY_FAILED" in (hook.last_error or ""))
            hook.stop(timeout=5)
            assert receiver.received == [] and journal.outbox_depth("webhook") == 1
            hook = Webhook(
                webhook_config(tmp_path, receiver.url, include_snapshot=True, ca=str(test_ca.ca)), journal, None
            )
            hook.start()
            queue(journal, hook, [EventOut(event(U1, END, 1).write, pictures, new_pictures=False)])
            assert wait(lambda: journal.outbox_depth("webhook") == 0)
            hook.stop(timeout=5)
    finally:
        receiver.stop()
    start, end = receiver.bodies()
    assert base64.b64decode(start["snapshot_jpeg"]) == jpeg and end["snapshot_jpeg"] is None
    assert start["event"]["snapshot"] == {"frame": "snapshots/f.jpg", "overlay": "snapshots/o.jpg", "frame_seq": 7}
    assert "x-crackd-signature" not in receiver.received[0][0]  # no secret configured


@pytest.mark.parametrize(
    "text, expected",
    [
        ("webhook:\n  enabled: true\n", "<t>:2: webhook.url: the webhook is enabled but has no url"),
        ("webhook:\n  url: ftp://x/y\n", "<t>:2: webhook.url: 'ftp://x/y': expected an http:// or https:// URL"),
        (
            "webhook:\n  retry_min_s: 5\n  retry_max_s: 1\n",
            "<t>:3: webhook.retry_max_s: must be >= webhook.retry_min_s (5)",
        ),
    ],
)
def test_webhook_settings_are_validated_with_their_line(text, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "<t>")
    assert str(err.value) == expected


def test_an_outbox_message_of_an_older_journal_belongs_to_mqtt(tmp_path):
    with Journal(tmp_path / "crackd.db") as journal:
        journal.record(None, [], [OutboxMessage("crackd/cam1/event", {"n": 1})])
        assert journal.outbox_depth("mqtt") == 1 and journal.outbox_fetch(output="webhook") == []


def test_the_daemon_posts_its_events_and_pictures_to_the_webhook_without_a_broker(
    tmp_path, darkness_bundle, webhook_schema
):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK, size=(320, 240))
    receiver = Receiver().start()
    try:
        d = daemon_dict(tmp_path, darkness_bundle, frames, None)
        d["webhook"] = {"enabled": True, "url": receiver.url, "include_snapshot": True}
        InProcess(config_from_dict(d)).wait_finished()  # a clean stop flushes the webhook's outbox
    finally:
        receiver.stop()
    bodies = receiver.bodies()
    assert bodies[0]["event"]["type"] == "start" and bodies[-1]["event"]["type"] == "end"
    for body in bodies:
        webhook_schema.validate(body)
    assert base64.b64decode(bodies[0]["snapshot_jpeg"])[:2] == b"\xff\xd8"
    with Journal(tmp_path / "state" / "crackd.db") as journal:
        assert journal.outbox_depth() == 0
