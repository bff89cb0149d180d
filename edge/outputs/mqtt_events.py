"""The `mqtt` output: each event's messages for the broker (its picture on `snapshot`, then the `event`).

It owns the MQTT connection (`connect`): edge.outputs.publisher, or edge.outputs.sparkplug's
subclass for `mqtt.format: sparkplug_b`, with Home Assistant discovery (edge.outputs.homeassistant)
and the check that pictures arrive (edge.outputs.snapshots_mqtt.DeliveryCheck) riding on it. The
publisher drains this output's outbox rows in order and deletes each on its PUBACK; the daemon
also sends its status, camera, stats and frame messages through it. The picture goes first, so
the retained picture is there when the event names it.
"""

from __future__ import annotations

from edge.config import Config
from edge.daemon_status import OutputStatus
from edge.events.decision import END
from edge.events.journal import Journal, OutboxMessage
from edge.outputs import homeassistant, snapshots_mqtt
from edge.outputs.base import EventOut, EventOutput, OutputContext, register
from edge.outputs.payloads import PublishedPicture, event_payload
from edge.outputs.publisher import OUTPUT, Publisher


def connect(cfg: Config, journal: Journal, identity: dict) -> Publisher:
    """The daemon's MQTT connection, not started yet (raises ConfigError for a missing password and
    RuntimeError for a missing optional library)."""
    publisher_class: type[Publisher] = Publisher
    if cfg.mqtt.format == "sparkplug_b":
        from edge.outputs.sparkplug import SparkplugPublisher

        publisher_class = SparkplugPublisher
    return publisher_class(cfg, journal, identity, cfg.mqtt_password())


class MqttEvents(EventOutput):
    name = OUTPUT

    def __init__(self, cfg: Config, journal: Journal, publisher: Publisher | None) -> None:
        self.cfg = cfg
        self.journal = journal
        self.publisher = publisher
        self.snapshot_check: snapshots_mqtt.DeliveryCheck | None = None
        if publisher is not None:  # what rides on the connection: its hooks are in place before it connects
            homeassistant.attach(cfg, publisher)
            if cfg.mqtt.snapshots:
                self.snapshot_check = snapshots_mqtt.DeliveryCheck(cfg, publisher)
        # Per open event: the picture last queued for it, named again by its later messages (an `end`).
        self._published: dict[str, PublishedPicture | None] = {}

    def messages(self, event: EventOut) -> list[OutboxMessage]:
        cfg, r = self.cfg, event.record
        out = []
        if event.new_pictures and event.pictures is not None:
            picture = snapshots_mqtt.snapshot_message(cfg, r, cfg.state_dir / event.pictures.overlay)
            self._published[r.uuid] = None if picture is None else PublishedPicture(picture.topic, r.uuid, r.revision)
            if picture is not None:
                out.append(picture)
        payload = event_payload(event, self._published.get(r.uuid) if event.pictures is not None else None)
        out.append(OutboxMessage(cfg.topic("event"), payload, cfg.mqtt.qos, False, r.uuid))
        if r.kind == END:
            self._published.pop(r.uuid, None)
        return out

    def start(self) -> None:
        if self.publisher is not None:
            self.publisher.publish_camera("starting", {})
            self.publisher.start()

    def notify(self) -> None:
        if self.publisher is not None:
            self.publisher.notify()

    def stop(self, timeout: float) -> None:
        if self.publisher is not None:
            self.publisher.stop("shutdown", timeout=timeout)

    def status(self) -> OutputStatus:
        pub = self.publisher
        error = None if pub is None or pub.connected else pub.last_error or "not connected"
        return OutputStatus(self.name, self.waiting(self.journal), pub.published if pub else 0, error)

    def flush(self, timeout: float) -> bool:
        return self.publisher.flush(timeout) if self.publisher is not None else True


@register(OUTPUT)
def _factory(context: OutputContext) -> MqttEvents | None:
    cfg = context.cfg
    if not cfg.mqtt.enabled:
        return None
    return MqttEvents(cfg, context.journal, connect(cfg, context.journal, context.identity))
