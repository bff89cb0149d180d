"""Sparkplug B output (`mqtt.format: sparkplug_b`), for inspection lines whose SCADA speaks Sparkplug.

The Pi is a Sparkplug *edge node* (`mqtt.sparkplug.edge_node_id`, default the device id) with
one *device* (`mqtt.sparkplug.device_id`, default `camera`) in group `mqtt.sparkplug.group_id`:

  spBv1.0/{group}/NBIRTH/{node}            on every connection: bdSeq, Node Control/Rebirth, properties
  spBv1.0/{group}/DBIRTH/{node}/{device}   right after: every metric with its current value
  spBv1.0/{group}/DDATA/{node}/{device}    events (from the outbox), health (stats), camera state
  spBv1.0/{group}/NDEATH/{node}            the last will (QoS 1), and published on a clean stop
  spBv1.0/{group}/NCMD/{node}              listened to: `Node Control/Rebirth` = true births again

Payloads are Sparkplug B protobuf (edge/outputs/proto/sparkplug_b.proto, module edge/outputs/sparkplug_b_pb2).
`seq` runs 0..255 and wraps, per session: NBIRTH is 0, then every DBIRTH/DDATA counts on.
`bdSeq` (0..255) increases with each connection attempt's last will and is kept in
STATE/sparkplug_bdseq across restarts, so a host can pair an NDEATH with its NBIRTH. On a full
disk the file is overwritten in place (its block is already there); where even that fails the
process goes on counting in memory and logs an error: the next start may then reuse a bdSeq.

Store and forward carries over from the JSON output: event messages wait in the journal's
outbox while the broker is away and are sent, in order, after the births, with each metric
`is_historical = true` and timestamped when the frame was captured. They go out at
`mqtt.qos` (1 by default) so the broker's PUBACK releases the outbox row; Sparkplug 3.0 asks
for QoS 0 on DDATA, which `mqtt.qos: 0` gives (rows are then released once written to the
socket). The raw snapshot JPEG, when on, is still published on `{prefix}/{device_id}/snapshot`.

Every message that carries a `seq` (NBIRTH, DBIRTH, DDATA of events and of health) goes out at
that one QoS, `mqtt.qos`: a broker sends a subscriber at most its in-flight limit of QoS 1/2
messages (mosquitto `max_inflight_messages`, 20 by default) and queues the rest in order, but
sends a QoS 0 message at once, ahead of the queued ones (paho does the same with its own
in-flight window). Mixed QoS would let a health DDATA or the next session's NBIRTH overtake the
events of a replay, and a host would see seq out of order and ask for a rebirth. At one QoS both
queues are first in, first out, whatever their limits; the host still receives at the QoS it
subscribed with (the lower of the two).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from edge import __version__
from edge.atomic_write import write_bytes_atomic
from edge.events.journal import Journal, OutboxRow
from edge.outputs.publisher import Publisher, WatchedClient

if TYPE_CHECKING:
    from edge.config import Config

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
# Sparkplug B datatypes (specification, "Datatypes").
INT32, INT64, UINT64, FLOAT, DOUBLE, BOOLEAN, STRING = 3, 4, 8, 9, 10, 11, 12
REBIRTH = "Node Control/Rebirth"

# Device metrics: name -> datatype. Births carry all of them; data messages only what changed.
EVENT_METRICS = {
    "Crack/Active": BOOLEAN,  # an event is open (start, update) / ended (end)
    "Crack/Event UUID": STRING,
    "Crack/Event Revision": INT32,  # with the uuid: deduplicate replays
    "Crack/Event Type": STRING,  # start | update | end
    "Crack/End Reason": STRING,  # clear | shutdown | interrupted (null while open)
    "Crack/Score": FLOAT,  # peak classifier score
    "Crack/Frames": INT64,
    "Crack/Count": INT32,  # cracks in the peak frame
    "Crack/Length px": DOUBLE,
    "Crack/Max Width px": DOUBLE,
    "Crack/Area px": INT64,
    "Crack/Area Fraction": DOUBLE,
    "Crack/Length mm": DOUBLE,  # null unless model.mm_per_pixel calibrates the view
    "Crack/Max Width mm": DOUBLE,
}
HEALTH_METRICS = {
    "Health/FPS": FLOAT,
    "Health/Latency p95 ms": FLOAT,
    "Health/Inference p95 ms": FLOAT,
    "Health/Frames Processed": INT64,
    "Health/Frames Skipped": INT64,
    "Health/Frames Failed": INT64,
    "Health/Outbox Depth": INT64,
    "Health/CPU Temperature C": FLOAT,
    "Health/Camera State": STRING,
    "Health/Bundle Version": STRING,
    "Health/Keeping Detections": BOOLEAN,  # false while no frame is taken: a detection could not be kept (disk full)
}
DEVICE_METRICS = {**EVENT_METRICS, **HEALTH_METRICS}


def overwrite_in_place(path: Path, data: bytes) -> None:
    """Write `data` over the start of the existing file `path` and cut it there, then fsync: unlike a
    write to a new file, this needs no free block for a few bytes (the file's own block takes them)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def _pb() -> Any:  # the generated protobuf module (imported late: protobuf is optional)
    from edge.outputs import sparkplug_b_pb2

    return sparkplug_b_pb2


def now_ms() -> int:
    return int(time.time() * 1000)


def add_metric(payload: Any, name: str, datatype: int, value: Any, timestamp: int, historical: bool = False) -> None:
    """Append a metric; None becomes is_null (Sparkplug's explicit null)."""
    m = payload.metrics.add()
    m.name = name
    m.datatype = datatype
    m.timestamp = timestamp
    if historical:
        m.is_historical = True
    if value is None:
        m.is_null = True
    elif datatype == BOOLEAN:
        m.boolean_value = bool(value)
    elif datatype == STRING:
        m.string_value = str(value)
    elif datatype == FLOAT:
        m.float_value = float(value)
    elif datatype == DOUBLE:
        m.double_value = float(value)
    elif datatype in (INT32,):
        m.int_value = int(value) & 0xFFFFFFFF  # the spec stores signed 32-bit in uint32 (two's complement)
    elif datatype in (INT64, UINT64):
        m.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    else:
        raise ValueError(f"unsupported Sparkplug datatype {datatype}")


def event_values(event: dict) -> dict:
    """Device metric values from an `event` payload (edge.outputs.payloads.event_payload)."""
    m = event.get("measurements") or {}
    return {
        "Crack/Active": event["type"] != "end",
        "Crack/Event UUID": event["uuid"],
        "Crack/Event Revision": event["revision"],
        "Crack/Event Type": event["type"],
        "Crack/End Reason": event.get("end_reason"),
        "Crack/Score": event.get("score"),
        "Crack/Frames": event.get("frames"),
        "Crack/Count": m.get("count"),
        "Crack/Length px": m.get("length_px"),
        "Crack/Max Width px": m.get("max_width_px"),
        "Crack/Area px": m.get("total_area_px"),
        "Crack/Area Fraction": m.get("area_fraction"),
        "Crack/Length mm": m.get("length_mm"),
        "Crack/Max Width mm": m.get("max_width_mm"),
    }


def health_values(stats: dict) -> dict:
    """Device metric values from a `stats` payload (edge.daemon.supervisor.Supervisor.stats)."""
    return {
        "Health/FPS": stats.get("fps"),
        "Health/Latency p95 ms": (stats.get("latency_ms") or {}).get("p95"),
        "Health/Inference p95 ms": (stats.get("inference_ms") or {}).get("p95"),
        "Health/Frames Processed": stats.get("frames_processed"),
        "Health/Frames Skipped": stats.get("frames_skipped"),
        "Health/Frames Failed": stats.get("frames_failed"),
        "Health/Outbox Depth": stats.get("outbox_depth"),
        "Health/CPU Temperature C": stats.get("cpu_temp_c"),
        "Health/Camera State": stats.get("camera_state"),
        "Health/Bundle Version": stats.get("bundle_version"),
        "Health/Keeping Detections": not stats.get("detections_paused"),
    }


class SparkplugPublisher(Publisher):
    """The daemon's Publisher speaking Sparkplug B (same outbox, same connection handling)."""

    def __init__(self, config: Config, journal: Journal, identity: dict, password: str | None = None) -> None:
        try:
            _pb()
        except ImportError as exc:
            raise RuntimeError(
                f"mqtt.format sparkplug_b needs protobuf >= 4.21 (pip install 'crackd[edge]'): {exc}"
            ) from None
        sp = config.mqtt.sparkplug
        self.group = sp.group_id
        self.node = sp.edge_node_id or config.device_id
        self.device = sp.device_id
        self._seq_lock = threading.RLock()  # held across the births too: no data between NBIRTH and DBIRTH
        self._seq = 0
        self.qos = config.mqtt.qos  # of every message with a seq: one QoS keeps them in one ordered queue
        self._born = False
        self._bdseq_file = config.layout.sparkplug_bdseq
        self.bdseq = -1  # none used yet: the first is read from the file
        self.bdseq = self._next_bdseq()
        self._values: dict = {name: None for name in DEVICE_METRICS}  # last known, for (re)births
        self._values["Crack/Active"] = False
        self._values["Health/Bundle Version"] = identity.get("bundle_version")
        super().__init__(config, journal, identity, password)
        self.client.message_callback_add(self.sp_topic("NCMD"), self._on_ncmd)

    # ------------------------------------------------------------------ topics, sequence numbers

    def sp_topic(self, kind: str, device: bool = False) -> str:
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}" + (f"/{self.device}" if device else "")

    def _next_bdseq(self) -> int:
        """bdSeq for the next connection: one more than the last used (kept across restarts), 0..255."""
        last = self.bdseq  # this process's own count: right even when the file could not be written
        if last < 0:
            try:
                last = int(self._bdseq_file.read_text().strip())
            except (OSError, ValueError):
                last = -1
        value = (last + 1) % 256
        data = f"{value}\n".encode()
        try:
            self._bdseq_file.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(self._bdseq_file, data)
        except OSError as exc:
            try:  # a full disk has no block for the temporary: overwrite the file's own (no new block needed)
                overwrite_in_place(self._bdseq_file, data)
                log.warning(
                    "sparkplug: %s rewritten in place (bdSeq %d): no room for a new copy (%s)",
                    self._bdseq_file,
                    value,
                    exc.strerror,
                )
            except OSError as exc2:
                log.error(
                    "sparkplug: cannot keep bdSeq %d in %s (%s): the next start of crackd may use bdSeq %d "
                    "again, and a host may pair this session's NDEATH with that one's NBIRTH",
                    value,
                    self._bdseq_file,
                    exc2.strerror,
                    value,
                )
        return value

    def _death_payload(self) -> bytes:
        pb = _pb()
        p = pb.Payload(timestamp=now_ms())
        add_metric(p, "bdSeq", UINT64, self.bdseq, p.timestamp)
        return p.SerializeToString()

    def _publish(self, topic: str, payload: Any, qos: int) -> mqtt.MQTTMessageInfo:
        """Stamp `seq` (0..255, wrapping) and publish, under one lock so seq order is send order (and, with one
        QoS for all, the order in which paho and the broker pass them on: see the module's docstring)."""
        with self._seq_lock:
            payload.seq = self._seq
            self._seq = (self._seq + 1) % 256
            return self.client.publish(topic, payload.SerializeToString(), qos=qos, retain=False)

    # ------------------------------------------------------------------ connection (overrides)

    def _make_client(self) -> WatchedClient:
        client = super()._make_client()
        client.will_set(self.sp_topic("NDEATH"), self._death_payload(), qos=1, retain=False)
        return client

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._born = False
        super()._on_disconnect(client, userdata, flags, reason_code, properties)
        if not self._stop.is_set():  # the next session gets a new bdSeq, in its will and its NBIRTH
            self.bdseq = self._next_bdseq()
            client.will_set(self.sp_topic("NDEATH"), self._death_payload(), qos=1, retain=False)

    def _announce(self, client: mqtt.Client) -> None:
        # paho resends what the lost connection left unacknowledged after this callback, behind the new births: a
        # DDATA handed to paho as the connection went down carries the old session's seq (the drain sends its row
        # again anyway).
        if isinstance(client, WatchedClient):
            client.forget_unacknowledged()
        client.subscribe(self.sp_topic("NCMD"), qos=1)
        self._births()

    def _births(self) -> None:
        pb = _pb()
        t = now_ms()
        node = pb.Payload(timestamp=t)
        add_metric(node, "bdSeq", UINT64, self.bdseq, t)
        add_metric(node, REBIRTH, BOOLEAN, False, t)
        add_metric(node, "Properties/crackd Version", STRING, self.identity.get("version") or __version__, t)
        add_metric(node, "Properties/Device ID", STRING, self.cfg.device_id, t)
        with self._seq_lock:  # a rebirth runs beside the drain and the health: none of their data between the two
            self._seq = 0  # NBIRTH always starts the session's sequence
            self._publish(self.sp_topic("NBIRTH"), node, self.qos)
            device = pb.Payload(timestamp=t)
            for name, datatype in DEVICE_METRICS.items():
                add_metric(device, name, datatype, self._values.get(name), t)
            self._publish(self.sp_topic("DBIRTH", device=True), device, self.qos)
            self._born = True
        log.info("sparkplug: NBIRTH/DBIRTH as %s/%s/%s (bdSeq %d)", self.group, self.node, self.device, self.bdseq)

    def _on_ncmd(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            payload = _pb().Payload.FromString(message.payload)
        except Exception as exc:  # a malformed command must not take the node down
            log.warning("sparkplug: unreadable NCMD ignored (%s)", exc)
            return
        for m in payload.metrics:
            if m.name == REBIRTH and m.boolean_value:
                log.info("sparkplug: rebirth requested")
                self._births()
                self._wake.set()

    def _send_row(self, row: OutboxRow, replayed: bool) -> mqtt.MQTTMessageInfo | None:
        if isinstance(row.payload, bytes) or row.topic != self.cfg.topic("event"):
            return super()._send_row(row, replayed)
        if not self._born:
            return None
        event = json.loads(row.payload)
        values = event_values(event)
        from edge.timestamps import parse_iso

        t = parse_iso(event.get("t"))
        stamp = int(t * 1000) if t is not None else now_ms()
        p = _pb().Payload(timestamp=now_ms())
        for name, value in values.items():
            add_metric(p, name, EVENT_METRICS[name], value, stamp, historical=replayed)
        if not replayed:
            self._values.update(values)
        return self._publish(self.sp_topic("DDATA", device=True), p, qos=row.qos)

    def _ddata(self, values: dict) -> bool:
        """Live device data (not stored; at the session's QoS, so never ahead of queued events): health, camera."""
        self._values.update(values)
        if not (self.connected and self._born):
            return False
        t = now_ms()
        p = _pb().Payload(timestamp=t)
        for name, value in values.items():
            add_metric(p, name, DEVICE_METRICS[name], value, t)
        return self._publish(self.sp_topic("DDATA", device=True), p, self.qos).rc == 0

    def publish_stats(self, stats: dict) -> bool:
        return self._ddata(health_values(stats))

    def publish_camera(self, state: str, info: dict) -> None:
        self._ddata({"Health/Camera State": state})

    def publish_frame(self, build_payload: Callable[[], dict]) -> bool:
        return False  # per-frame results stay off the Sparkplug namespace (events and health are its data)

    def update_identity(self, **fields: Any) -> None:
        self.identity.update(fields)
        if "bundle_version" in fields:
            self._ddata({"Health/Bundle Version": fields["bundle_version"]})
        if "detections_paused" in fields:  # at once, not only with the next stats
            self._ddata({"Health/Keeping Detections": not fields["detections_paused"]})

    def stop(self, reason: str = "shutdown", timeout: float = 2.0) -> None:
        """A clean disconnect suppresses the will: publish NDEATH ourselves first."""
        if self.connected:
            info = self.client.publish(self.sp_topic("NDEATH"), self._death_payload(), qos=1, retain=False)
            try:
                info.wait_for_publish(timeout=timeout)
            except (RuntimeError, ValueError):
                pass
        self._born = False
        self.connected = (
            False  # no JSON `offline` status in Sparkplug mode (base stop publishes it only when connected)
        )
        super().stop(reason, timeout)
