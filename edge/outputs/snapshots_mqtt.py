"""The event's picture on MQTT: `{prefix}/{device_id}/snapshot`, the overlay JPEG as raw bytes, retained.

Operators should see the crack where they already look (Home Assistant's image
entity, Node-RED, a SCADA) without SSH-ing into the Pi for the file the event
names. The overlay already written for the event (edge.daemon.snapshots) is published:

- raw JPEG bytes (what Home Assistant's MQTT `image` entity and Frigate-style
  consumers expect), retained and QoS 1, so a late subscriber sees the latest;
- when an event starts and each time its peak improves (a new overlay);
- at most `mqtt.snapshot_max_kb`: re-encoded at lower quality, then smaller,
  until it fits, so one picture never dominates a slow uplink or the outbox;
- tagged: a JPEG comment segment (COM) holds `{"uuid", "revision", "device_id"}`,
  and the event message names the same uuid + revision, so a consumer can match
  a picture to its event without a second topic (MQTT 3.1.1 has no properties);
- through the journal's outbox like events (a broker outage loses no picture),
  but replacing any pending snapshot of this device: only the newest waits, so
  an outage cannot fill the disk with pictures.

A broker whose message size limit is below the picture (mosquitto's `message_size_limit`)
acknowledges it and drops it without a word on MQTT 3.1.1. (MQTT 5 would answer with a
PUBACK reason code, but mosquitto 2.0 sends 0x95, which the spec does not allow on a PUBACK,
and paho 2 then drops the connection as a protocol error: the outbox would resend the picture
forever.) So `DeliveryCheck` subscribes to the device's own snapshot topic and expects each
picture back from the broker: one that does not come within ECHO_TIMEOUT_S of its PUBACK is
reported (log, status.json `mqtt_snapshot_error`, `crackd status`), naming the limit needed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from edge.events.journal import OutboxMessage

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

    from edge.config import Config
    from edge.events.decision import EventRecord
    from edge.outputs.publisher import Publisher

log = logging.getLogger(__name__)

TOPIC = "snapshot"
REENCODE_QUALITY = 70  # an oversized overlay is re-encoded at this quality, then scaled down as needed
MIN_SIDE_PX = 32  # below this the picture is useless; whatever size it has is sent
COMMENT_PREFIX = b"crackd:"
TAG_ROOM = 256  # bytes kept free under the limit for the COM segment
# A picture acknowledged by the broker but not delivered back to crackd within this is taken as dropped
# (generous: a slow uplink carries the picture down again, behind whatever else is queued).
ECHO_TIMEOUT_S = 30.0


def bounded_jpeg(jpeg: bytes, max_bytes: int) -> bytes:
    """`jpeg` itself when it fits in `max_bytes`, else a re-encoding (lower quality, then smaller) that fits.

    Runs on the inference thread at event starts and updates, so it aims rather than searches:
    one encoding at REENCODE_QUALITY, then sizes scaled by the square root of the overshoot
    (JPEG bytes grow about with the pixel count), usually two or three encodings in all."""
    if len(jpeg) <= max_bytes:
        return jpeg
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("snapshot is not a decodable JPEG")
    h, w = img.shape[:2]
    best, scale, frame = jpeg, 1.0, img
    while True:
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, REENCODE_QUALITY])
        if ok and len(data) < len(best):
            best = data.tobytes()
        if len(best) <= max_bytes:
            return best
        if min(frame.shape[:2]) <= MIN_SIDE_PX:
            log.warning(
                "snapshot: %d bytes even at %dx%d, over mqtt.snapshot_max_kb; sent anyway",
                len(best),
                *frame.shape[1::-1],
            )
            return best
        scale *= min(0.9, 0.95 * (max_bytes / len(data)) ** 0.5)
        size = (max(MIN_SIDE_PX, round(w * scale)), max(MIN_SIDE_PX, round(h * scale)))
        frame = cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def tag_jpeg(jpeg: bytes, meta: dict) -> bytes:
    """Insert a COM segment right after SOI holding `crackd:` + compact JSON (viewers ignore it)."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no SOI marker)")
    body = COMMENT_PREFIX + json.dumps(meta, separators=(",", ":")).encode()
    if len(body) + 2 > 0xFFFF:
        raise ValueError("snapshot tag too long")
    return jpeg[:2] + b"\xff\xfe" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


def read_tag(jpeg: bytes) -> dict | None:
    """The `crackd:` COM segment's JSON (see tag_jpeg), or None; walks the header segments up to SOS."""
    if jpeg[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(jpeg) and jpeg[i] == 0xFF:
        marker = jpeg[i + 1]
        if marker == 0xDA:  # start of scan: no more header segments
            return None
        length = int.from_bytes(jpeg[i + 2 : i + 4], "big")
        if marker == 0xFE and jpeg[i + 4 : i + 4 + len(COMMENT_PREFIX)] == COMMENT_PREFIX:
            try:
                return json.loads(jpeg[i + 4 + len(COMMENT_PREFIX) : i + 2 + length])
            except ValueError:
                return None
        i += 2 + length
    return None


def snapshot_message(cfg: Config, record: EventRecord, overlay_path: Path) -> OutboxMessage | None:
    """The outbox message carrying an event's overlay (None when switched off or unreadable).

    `cfg`: edge.config.Config; `record`: edge.events.decision.EventRecord whose snapshot was just (re)written.
    """
    m = cfg.mqtt
    if not (m.enabled and m.snapshots):
        return None
    try:
        data = bounded_jpeg(Path(overlay_path).read_bytes(), m.snapshot_max_kb * 1024 - TAG_ROOM)
        data = tag_jpeg(data, {"uuid": record.uuid, "revision": record.revision, "device_id": cfg.device_id})
    except (OSError, ValueError) as exc:
        log.error("snapshot for event %s not published: %s", record.uuid, exc)
        return None
    return OutboxMessage(cfg.topic(TOPIC), data, qos=1, retain=True, event_uuid=record.uuid, replace_pending=True)


@dataclass
class _Sent:
    size: int  # payload bytes
    info: object  # paho's MQTTMessageInfo: is_published() once the broker acknowledged it
    acked_at: float | None = None  # time.monotonic() when the acknowledgement was first seen


class DeliveryCheck:
    """Expects each snapshot crackd publishes back from the broker (it subscribes to its own topic).

    Attached to a Publisher (hooks on connect and on each outbox message sent); `problem()` is
    polled by the daemon's status writer about every second."""

    def __init__(self, cfg: Config, publisher: Publisher, timeout_s: float = ECHO_TIMEOUT_S) -> None:
        self.cfg = cfg
        self.publisher = publisher
        self.timeout_s = timeout_s
        self.topic = cfg.topic(TOPIC)
        self.dropped = 0  # pictures the broker acknowledged and did not deliver
        self.error: str | None = None
        self._lock = threading.Lock()
        self._sent: dict[tuple[object, object], _Sent] = {}  # (uuid, revision) of the picture's tag
        self._echoed: deque[tuple[object, object]] = deque(maxlen=16)  # the pictures that came back last
        self._subscribed = False  # the broker granted the subscription on this connection
        self._refusal_logged = False
        publisher.client.message_callback_add(self.topic, self._on_echo)
        publisher.on_connect_hooks.append(self._on_connect)
        publisher.on_sent_hooks.append(self._on_sent)
        publisher.on_suback_hooks[self.topic] = self._on_suback

    def _on_connect(self, client: mqtt.Client) -> None:
        with self._lock:
            self._sent.clear()  # what was in flight on the last connection: unknown, not a drop
            self._subscribed = False
        self.publisher.subscribe(client, self.topic, qos=0)

    def _on_suback(self, granted: bool) -> None:
        with self._lock:
            self._subscribed = granted
        if not granted and not self._refusal_logged:
            self._refusal_logged = True
            log.warning(
                "MQTT: the broker refused crackd's subscription to its own %s (ACL), so a snapshot the broker "
                "drops for its size cannot be noticed; allow the device to read that topic (docs/mqtt.md)",
                self.topic,
            )

    def _on_sent(self, topic: str, payload: dict | bytes, info: object) -> None:
        if topic != self.topic or not isinstance(payload, bytes):
            return
        tag = read_tag(payload)
        if tag:
            key = (tag.get("uuid"), tag.get("revision"))
            with self._lock:
                if key not in self._echoed:  # the echo can beat this hook, which runs after publish() returned
                    self._sent[key] = _Sent(len(payload), info)

    def _on_echo(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:  # paho's thread
        tag = read_tag(bytes(message.payload))
        if not tag:
            return
        key = (tag.get("uuid"), tag.get("revision"))
        with self._lock:
            self._echoed.append(key)
            was_pending = self._sent.pop(key, None) is not None
            if was_pending or not message.retain:  # a picture just sent arrived (not the retained one of old)
                self.error = self.publisher.oversize_error = None

    def pending(self) -> int:
        """Pictures sent on this connection and not yet back from the broker."""
        with self._lock:
            return len(self._sent)

    def problem(self, now: float | None = None) -> str | None:
        """Why the last dropped picture did not arrive (None: every picture came back, or none is overdue)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if not self._subscribed:
                return self.error or self.publisher.oversize_error
            for key, sent in list(self._sent.items()):
                if sent.acked_at is None:
                    if sent.info.is_published():  # type: ignore[attr-defined]
                        sent.acked_at = now
                    continue
                if now - sent.acked_at < self.timeout_s:
                    continue
                del self._sent[key]
                self.dropped += 1
                self.error = (
                    f"the broker acknowledged the snapshot of event {key[0]} ({sent.size} bytes) but did not deliver "
                    f"it: its message size limit is too small; raise it (mosquitto: message_size_limit >= "
                    f"{sent.size}, or max_packet_size >= {sent.size + len(self.topic) + 16}) or lower "
                    f"mqtt.snapshot_max_kb (now {self.cfg.mqtt.snapshot_max_kb})"
                )
                log.error("MQTT: %s", self.error)
            return self.error or self.publisher.oversize_error
