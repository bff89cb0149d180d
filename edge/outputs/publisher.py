"""MQTT publishing with store-and-forward: the outbox in the journal is the source of truth.

paho keeps unacknowledged messages only in memory, so events are never handed
to paho directly: the daemon writes them to the journal's outbox (in the same
transaction as the detection), and the `outbox` thread here drains it in id
order, at most `max_inflight` ahead of the broker's PUBACKs, and deletes a row
only once its PUBACK arrived. On every new connection the drain restarts from
the oldest undelivered row; a message created before the current connection was
established goes out with `replayed: true` (Sparkplug's "historical"). Every
message carries `seq` (its outbox id, increasing across restarts) and events
their `uuid`, so a consumer drops duplicates.

Topics, all under `{prefix}/{device_id}/` (payloads: docs/mqtt.md, docs/schemas/):
  status  retained: `online` birth (version, bundle, started_at, last reload) / `offline` last will
  camera  retained: camera state and counters
  event   QoS mqtt.qos (1): event start / update / end
  stats   QoS 0, every stats_interval_s
  frame   QoS 0, per-frame results, rate-limited (optional)
  snapshot retained, QoS 1, raw JPEG via the outbox (edge.outputs.snapshots_mqtt): bytes rows are sent as they are
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge.events.journal import Journal, OutboxRow
from edge.outputs.payloads import PAYLOAD_SCHEMA_VERSION
from edge.timestamps import iso_utc

if TYPE_CHECKING:
    from edge.config import Config, MQTTConfig

log = logging.getLogger(__name__)

OUTPUT = "mqtt"  # the outbox rows this publisher delivers (edge.outputs.mqtt_events writes them)
# Client-id takeover: TAKEOVER_COUNT connections closed by the broker within TAKEOVER_SHORT_S of being
# accepted, inside TAKEOVER_WINDOW_S, are reported (at most every TAKEOVER_LOG_INTERVAL_S).
TAKEOVER_SHORT_S = 10.0
TAKEOVER_WINDOW_S = 60.0
TAKEOVER_COUNT = 3
TAKEOVER_LOG_INTERVAL_S = 300.0
# Connections lost in a row while the same picture was in flight before it is taken as too large for the broker.
OVERSIZE_LOSSES = 3


def cpu_temperature_c(root: str = "/sys/class/thermal") -> float | None:
    """The CPU temperature where the kernel exposes it (thermal zone 'cpu-thermal' preferred), else None."""
    zones = sorted(Path(root).glob("thermal_zone*"))
    readings = []
    for zone in zones:
        try:
            kind = (zone / "type").read_text().strip()
            milli = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        readings.append((0 if "cpu" in kind or "soc" in kind else 1, milli / 1000.0))
    return round(sorted(readings)[0][1], 1) if readings else None


def disk_free_mb(path: str | Path) -> float | None:
    try:
        return round(shutil.disk_usage(path).free / 1024 / 1024, 1)
    except OSError:
        return None


def rss_mb() -> float | None:
    """Resident memory of this process (Linux /proc), MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def authenticate(client: mqtt.Client, m: MQTTConfig, password: str | None) -> None:
    """Username/password and TLS from the `mqtt` config section, for every client crackd opens."""
    if m.username:
        client.username_pw_set(m.username, password)
    if m.tls.enabled:
        client.tls_set(
            ca_certs=m.tls.ca,
            certfile=m.tls.cert,
            keyfile=m.tls.key,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        if m.tls.insecure:
            client.tls_insecure_set(True)


class WatchedClient(mqtt.Client):
    """paho's client whose network thread (loop_start) records the exception that ended it.

    paho's thread dies on an exception it does not handle, and nothing in its API says so; the
    Publisher's drain thread checks `network_alive()` and starts the loop again."""

    network_error: str | None = None
    network_exc: BaseException | None = None

    def _thread_main(self) -> None:  # paho's loop_start target; it clears self._thread when it returns
        try:
            super()._thread_main()
        except Exception as exc:  # logged by the Publisher (with the traceback the first time)
            self.network_exc = exc
            self.network_error = f"{type(exc).__name__}: {exc}"[:300]

    def forget_unacknowledged(self) -> None:
        """Drop paho's own copies of the messages the lost connection left unacknowledged.

        paho resends them after reconnecting, whatever clean_session says; crackd resends every
        unacknowledged outbox row itself and republishes its state messages on each connection, so
        paho's copies are only duplicates, and a picture the broker refuses (closing the
        connection) would be resent by paho forever."""
        with self._out_message_mutex:
            self._out_messages.clear()
            self._inflight_messages = 0

    def network_alive(self) -> bool:
        """False once the thread loop_start() started has ended without loop_stop() being asked for."""
        return self.network_error is None


class Publisher:
    """One MQTT connection (paho loop thread) plus the outbox drain thread."""

    def __init__(self, config: Config, journal: Journal, identity: dict, password: str | None = None) -> None:
        """`config`: edge.config.Config; `identity`: version, bundle_version, bundle_sha256, started_at (ISO)."""
        self.cfg = config
        self.m = config.mqtt
        self.journal = journal
        self.identity = dict(identity)
        self.connected = False
        self.connected_since: float | None = None
        self.last_error: str | None = None
        self.published = 0  # outbox messages acknowledged by the broker
        self.replayed = 0
        self._password = password
        self._generation = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._acks: deque = deque()
        self._inflight: dict[int, int] = {}  # mid -> outbox row id (drain thread only)
        self._acked_rows: list[int] = []  # acknowledged rows whose delete failed, retried
        self._pictures_in_flight: dict[int, int] = {}  # outbox row id -> bytes, of pictures sent (drain thread)
        self._picture_losses: dict[int, int] = {}  # picture row id -> connections lost in a row while it was sent
        self.oversize_error: str | None = None  # the last picture dropped because the broker kept refusing it
        self._short_connections: deque = deque()  # when connections that lived < TAKEOVER_SHORT_S were closed
        self._takeover_logged = 0.0
        self._ack_error_logged = 0.0
        self._camera: dict | None = None
        self._last_frame_t = 0.0
        self._thread: threading.Thread | None = None
        self._logged_unreachable = False
        # extra outputs (edge.outputs.homeassistant): per connection, and per outbox message sent (drain thread)
        self.on_connect_hooks: list[Callable[[mqtt.Client], None]] = []
        self.on_sent_hooks: list[Callable[[str, dict | bytes, mqtt.MQTTMessageInfo], None]] = []
        self.on_suback_hooks: dict[str, Callable[[bool], None]] = {}  # topic filter -> called with "granted"
        self._subscriptions: dict[int, str] = {}  # SUBSCRIBE mid -> topic filter
        self.network_restarts = 0  # times paho's network thread died and was started again
        self._network_restart_at: float | None = None  # time.monotonic() of the next restart
        self._network_backoff = 0.0
        self.client = self._make_client()

    # ------------------------------------------------------------------ connection

    def topic(self, name: str) -> str:
        return self.cfg.topic(name)

    def _status_payload(self, state: str, reason: str | None = None) -> dict:
        p = {
            "schema_version": PAYLOAD_SCHEMA_VERSION,
            "state": state,
            "device_id": self.cfg.device_id,
            "version": self.identity.get("version"),
            "bundle_version": self.identity.get("bundle_version"),
            "bundle_sha256": self.identity.get("bundle_sha256"),
            "started_at": self.identity.get("started_at"),
            "t": iso_utc(time.time()),
        }
        if state == "online":
            p["last_reload"] = self.identity.get("last_reload")
            if self.identity.get("detections_paused"):  # only while so: the payload stays as it was otherwise
                p["detections_paused"] = self.identity["detections_paused"]
        else:
            p["reason"] = reason or "connection lost"
        return p

    def _make_client(self) -> WatchedClient:
        m = self.m
        client = WatchedClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.cfg.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.max_inflight_messages_set(max(20, 2 * m.max_inflight))
        client.reconnect_delay_set(min_delay=max(1, int(m.reconnect_min_s)), max_delay=max(1, int(m.reconnect_max_s)))
        will = self._status_payload("offline", "connection lost")
        client.will_set(self.topic("status"), json.dumps(will), qos=1, retain=True)
        authenticate(client, m, self._password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        return client

    def start(self) -> None:
        self.client.connect_async(self.m.host, self.m.port, keepalive=self.m.keepalive)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._drain_loop, name="outbox", daemon=True)
        self._thread.start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.connected = False
            self.last_error = f"broker refused the connection: {reason_code}"
            log.error("MQTT %s:%d refused the connection: %s", self.m.host, self.m.port, reason_code)
            return
        self.connected_since = time.time()
        self._generation += 1
        self.connected = True
        self.last_error = None
        self._logged_unreachable = False
        log.info("MQTT connected to %s:%d as %s", self.m.host, self.m.port, self.cfg.client_id)
        self._announce(client)
        for hook in self.on_connect_hooks:
            try:
                hook(client)
            except Exception:
                log.exception("MQTT on-connect hook %r failed", hook)
        self._wake.set()

    def subscribe(self, client: mqtt.Client, topic: str, qos: int) -> None:
        """Subscribe (from an on-connect hook); the SUBACK goes to on_suback_hooks[topic]."""
        _, mid = client.subscribe(topic, qos=qos)
        if mid is not None:
            self._subscriptions[mid] = topic

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        hook = self.on_suback_hooks.get(self._subscriptions.pop(mid, ""))
        if hook is not None:
            hook(all(not rc.is_failure for rc in reason_codes))

    def _announce(self, client: mqtt.Client) -> None:
        """What every new connection starts with: the retained birth and camera state (Sparkplug: NBIRTH/DBIRTH)."""
        self._publish_retained("status", self._status_payload("online"))
        if self._camera is not None:
            self._publish_retained("camera", self._camera)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.last_error = f"cannot reach broker {self.m.host}:{self.m.port}"
        if not self._logged_unreachable:
            log.warning(
                "MQTT: cannot reach %s:%d; retrying with backoff, events wait in the outbox", self.m.host, self.m.port
            )
            self._logged_unreachable = True

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self.connected
        self.connected = False
        if isinstance(client, WatchedClient):
            client.forget_unacknowledged()
        if was and not self._stop.is_set():
            self.last_error = f"disconnected: {reason_code}"
            log.warning(
                "MQTT disconnected from %s:%d (%s); reconnecting, events wait in the outbox",
                self.m.host,
                self.m.port,
                reason_code,
            )
            if not self._pictures_in_flight:  # else more likely a picture over the broker's limit (_check_oversized)
                self._check_takeover(time.time())

    def _check_takeover(self, now: float) -> None:
        """Several connections the broker closed soon after accepting them: another client has our client id.

        MQTT lets one connection per client id: a second client with the same id makes the broker close the
        first, which reconnects and closes the second in turn; each close makes the broker publish our
        `offline` will. A broker restart closes a connection once, not again and again within a minute.
        """
        if self.connected_since is not None and now - self.connected_since < TAKEOVER_SHORT_S:
            self._short_connections.append(now)
        while self._short_connections and now - self._short_connections[0] > TAKEOVER_WINDOW_S:
            self._short_connections.popleft()
        if len(self._short_connections) < TAKEOVER_COUNT:
            return
        self.last_error = (
            f"another client uses this client id ({self.cfg.client_id}) / device_id {self.cfg.device_id}: "
            "the broker keeps closing this connection"
        )
        if now - self._takeover_logged >= TAKEOVER_LOG_INTERVAL_S:
            self._takeover_logged = now
            log.error(
                "MQTT %s:%d closed this connection %d times in %.0f s right after accepting it: another "
                "client uses this client id (%s) / device_id %s. Give every device its own device_id (or "
                "mqtt.client_id), and require authentication with a per-device ACL on the broker "
                "(docs/mqtt.md, 'Securing the broker'); until then consumers see false 'offline' announcements",
                self.m.host,
                self.m.port,
                len(self._short_connections),
                TAKEOVER_WINDOW_S,
                self.cfg.client_id,
                self.cfg.device_id,
            )

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        # Called by paho's network thread with its message lock held: only hand the mid over.
        self._acks.append(mid)
        self._wake.set()

    # ------------------------------------------------------------------ the drain

    def notify(self) -> None:
        """New outbox rows were committed."""
        self._wake.set()

    def _drain_loop(self) -> None:
        generation = -1
        last_sent = 0
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._apply_acks()
                if self._stop.is_set() and not self.connected:
                    break
                self._watch_network_thread()
                if not self.connected:
                    continue
                if generation != self._generation:  # new connection: resend everything not acknowledged
                    generation = self._generation
                    self._check_oversized(set(self._inflight.values()))
                    self._inflight.clear()
                    last_sent = 0
                room = self.m.max_inflight - len(self._inflight)
                if room <= 0:
                    continue
                rows = self.journal.outbox_fetch(after_id=last_sent, limit=room, output=OUTPUT)
                if not rows and not self._inflight:
                    if self._stop.is_set():
                        break
                    continue
                not_ready = False
                for row in rows:
                    replayed = self.connected_since is not None and row.created_at < self.connected_since
                    info = self._send_row(row, replayed)
                    if info is None:  # the output is not ready for data yet (Sparkplug: before its births)
                        not_ready = True
                        break
                    if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        log.debug("outbox: publish of row %d returned %s; waiting for the connection", row.id, info.rc)
                        break
                    if row.qos == 0:
                        self._acks.append(("row", row.id))  # QoS 0 has no acknowledgement: done once sent
                    else:
                        self._inflight[info.mid] = row.id
                    if isinstance(row.payload, bytes):
                        self._pictures_in_flight[row.id] = len(row.payload)
                    last_sent = row.id
                    if replayed:
                        self.replayed += 1
                if rows and not not_ready:
                    self._wake.set()
            except Exception:
                log.exception("outbox drain failed; retrying")
                self._stop.wait(1.0)

    def _watch_network_thread(self) -> None:
        """paho's network thread ends for good on an exception it does not handle (one raised in a
        callback, a CONNECT it cannot encode): then nothing is sent or received, no disconnect is
        reported and the outbox only grows. Say so and start the thread again, with back-off."""
        client = self.client
        if isinstance(client, WatchedClient) and client.network_alive():
            self._network_backoff = 0.0
            return
        if self._stop.is_set() or not isinstance(client, WatchedClient):
            return
        now = time.monotonic()
        if self._network_restart_at is None:  # just found dead
            self.connected = False
            self._network_backoff = min(
                max(float(self.m.reconnect_min_s), 2 * self._network_backoff), float(self.m.reconnect_max_s)
            )
            self._network_restart_at = now + self._network_backoff
            self.last_error = f"MQTT network thread stopped ({client.network_error}); not publishing, restarting"
            log.error(
                "MQTT: paho's network thread stopped (%s); nothing is published, events wait in the outbox; "
                "starting it again in %.0f s",
                client.network_error,
                self._network_backoff,
                exc_info=client.network_exc if self.network_restarts == 0 else None,  # the traceback once
            )
            return
        if now < self._network_restart_at:
            return
        self._network_restart_at = None
        self.network_restarts += 1
        client.network_error = None
        # A fresh connection (the old socket is closed by paho's reconnect), so the drain resends
        # what was in flight and the births are published again.
        client.connect_async(self.m.host, self.m.port, keepalive=self.m.keepalive)
        client.loop_start()

    def _check_oversized(self, unacknowledged: set[int]) -> None:
        """A picture over the broker's packet limit (mosquitto `max_packet_size`) makes it close the
        connection; resent after each reconnection, it would stall the outbox for good. A picture in
        flight when OVERSIZE_LOSSES connections in a row ended is dropped from the outbox (the event
        messages behind it go on; the file stays on the device) and the limit needed is reported."""
        losses = {
            row: self._picture_losses.get(row, 0) + 1 for row in unacknowledged if row in self._pictures_in_flight
        }
        self._picture_losses = losses
        sizes, self._pictures_in_flight = self._pictures_in_flight, {}
        for row, count in list(losses.items()):
            if count < OVERSIZE_LOSSES:
                continue
            del self._picture_losses[row]
            self.oversize_error = (
                f"the broker closed the connection {count} times in a row while a snapshot of {sizes[row]} bytes was "
                f"in flight: its packet size limit is below it (mosquitto: max_packet_size >= {sizes[row] + 1024}); "
                f"that picture was dropped; raise the limit or lower mqtt.snapshot_max_kb "
                f"(now {self.m.snapshot_max_kb})"
            )
            log.error("MQTT: %s", self.oversize_error)
            self.journal.outbox_ack([row])

    def _send_row(self, row: OutboxRow, replayed: bool) -> mqtt.MQTTMessageInfo | None:
        """Publish one outbox row; returns paho's MQTTMessageInfo (None: not now, retry later)."""
        data: bytes | str
        payload: dict | bytes
        if isinstance(row.payload, bytes):  # a picture: sent as it is
            data = payload = row.payload
        else:
            event: dict = json.loads(row.payload)
            event["seq"] = row.id
            event["replayed"] = replayed
            data = json.dumps(event, separators=(",", ":"))
            payload = event
        info = self.client.publish(row.topic, data, qos=row.qos, retain=row.retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            for hook in self.on_sent_hooks:
                try:
                    hook(row.topic, payload, info)
                except Exception:
                    log.exception("MQTT on-sent hook %r failed", hook)
        return info

    def _apply_acks(self) -> None:
        # Rows acknowledged but not yet deleted (the delete failed: disk full) are kept and retried, so a
        # delivered message is not sent again on this connection.
        done, self._acked_rows = self._acked_rows, []
        while self._acks:
            item = self._acks.popleft()
            if isinstance(item, tuple):
                done.append(item[1])
                continue
            row = self._inflight.pop(item, None)
            if row is not None:
                done.append(row)
        for row_id in done:
            self._pictures_in_flight.pop(row_id, None)
        if done:
            try:
                self.journal.outbox_ack(done)
            except sqlite3.Error as exc:  # delivery goes on: the deletes are retried, a duplicate is harmless
                self._acked_rows = done
                now = time.monotonic()
                if now - self._ack_error_logged >= 30.0:
                    self._ack_error_logged = now
                    log.error(
                        "outbox: %d delivered messages cannot be deleted from the journal (%s); retrying, "
                        "they may be sent again after a reconnect",
                        len(done),
                        exc,
                    )
                return
            self.published += len(done)

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (True) or `timeout` passes
        (False); a broker reconnecting meanwhile is waited for."""
        deadline = time.monotonic() + timeout
        while True:
            if self.journal.outbox_depth(OUTPUT) == 0:  # rows go only after their PUBACK: empty = all delivered
                return True
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.05)

    def stop(self, reason: str = "shutdown", timeout: float = 2.0) -> None:
        """Publish `offline` (a clean disconnect suppresses the will), disconnect, stop the threads."""
        self._stop.set()
        if self.connected:
            info = self._publish_retained("status", self._status_payload("offline", reason))
            try:
                info.wait_for_publish(timeout=timeout)
            except (RuntimeError, ValueError):
                pass
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self._apply_acks()
        except Exception:
            pass
        self.client.disconnect()
        self.client.loop_stop()

    # ------------------------------------------------------------------ direct (non-outbox) messages

    def _publish_retained(self, subtopic: str, payload: dict) -> mqtt.MQTTMessageInfo:
        """A retained QoS 1 state message (status, camera): the broker hands the latest to late subscribers."""
        return self.client.publish(self.topic(subtopic), json.dumps(payload), qos=1, retain=True)

    def update_identity(self, **fields: Any) -> None:
        """Bundle swapped or reload attempted: republish the retained birth."""
        self.identity.update(fields)
        if self.connected:
            self._publish_retained("status", self._status_payload("online"))

    def publish_camera(self, state: str, info: dict) -> None:
        payload = {
            "schema_version": PAYLOAD_SCHEMA_VERSION,
            "device_id": self.cfg.device_id,
            "state": state,
            "source": self.cfg.source.type,
            "t": iso_utc(time.time()),
            "frames": int(info.get("frames", 0)),
            "bad_frames": int(info.get("bad_frames", 0)),
            "stalls": int(info.get("stalls", 0)),
            "errors": int(info.get("errors", 0)),
            "reconnects": int(info.get("reconnects", 0)),
            "last_error": info.get("last_error"),
        }
        self._camera = payload
        if self.connected:
            self._publish_retained("camera", payload)

    def publish_stats(self, stats: dict) -> bool:
        if not self.connected:
            return False
        payload = {
            "schema_version": PAYLOAD_SCHEMA_VERSION,
            "device_id": self.cfg.device_id,
            "t": iso_utc(time.time()),
            **stats,
        }
        return self.client.publish(self.topic("stats"), json.dumps(payload), qos=0).rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def publish_frame(self, build_payload: Callable[[], dict]) -> bool:
        """Per-frame result at QoS 0, at most `frame_rate` per second; dropped when disconnected.

        Takes a builder so that the frames that are not published cost nothing on the inference thread."""
        if not (self.m.publish_frames and self.connected):
            return False
        now = time.monotonic()
        if now - self._last_frame_t < 1.0 / self.m.frame_rate:
            return False
        self._last_frame_t = now
        payload = {"schema_version": PAYLOAD_SCHEMA_VERSION, "device_id": self.cfg.device_id, **build_payload()}
        return self.client.publish(self.topic("frame"), json.dumps(payload), qos=0).rc == MQTTErrorCode.MQTT_ERR_SUCCESS
