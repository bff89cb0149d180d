"""A real MQTT broker and a recording subscriber for the tests that publish.

`Broker` runs mosquitto on a free loopback port from a generated config: stop() (clean), kill() (SIGKILL) and
start() again on the same port simulate outages; retained messages and persistent sessions survive restarts, like a
production broker. `make_test_ca` makes a throwaway CA with openssl for the TLS broker, `Subscriber` records every
message under a topic filter.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

from tests.helpers.ports import free_port

MOSQUITTO = "/usr/sbin/mosquitto"


class Broker:
    """A mosquitto process with a generated config. stop() (clean), kill() (SIGKILL), start() again on the same port.

    Retained messages and persistent sessions survive restarts (persistence on), like a production broker.
    """

    def __init__(self, workdir: Path, tls=None, password: tuple[str, str] | None = None, extra: tuple[str, ...] = ()):
        """`extra`: more mosquitto.conf lines (e.g. "message_size_limit 20000")."""
        import getpass

        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        self.proc = None
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            f"log_dest file {self.dir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "max_queued_messages 10000",
        ]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")
        if password:
            passwd = self.dir / "passwd"
            subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), *password], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [
                f"cafile {tls.ca}",
                f"certfile {tls.server_cert}",
                f"keyfile {tls.server_key}",
                "require_certificate true",
            ]
        lines += extra
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> Broker:
        import socket
        import time

        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()} {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        try:
            return (self.dir / "mosquitto.log").read_text()[-2000:]
        except OSError:
            return ""


def make_test_ca(d: Path) -> SimpleNamespace:
    """A throwaway CA, a server certificate for localhost/127.0.0.1
    and a client certificate (openssl, EC P-256) in `d`."""

    def ssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=crackd test CA")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, cn in (("server", "localhost"), ("client", "crackd-test-device")):
        ssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        extra = ["-extfile", "server.ext"] if name == "server" else []
        ssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            *extra,
        )
    return SimpleNamespace(
        ca=d / "ca.crt",
        server_cert=d / "server.crt",
        server_key=d / "server.key",
        client_cert=d / "client.crt",
        client_key=d / "client.key",
        dir=d,
    )


class Subscriber:
    """Records every message under a topic filter (QoS 1, persistent session so outages lose nothing)."""

    def __init__(self, port: int, topic: str = "#", tls=None, auth=None, client_id: str | None = None):
        import threading
        import uuid

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, object, bool]] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.topic = topic
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"test-sub-{uuid.uuid4().hex[:8]}", clean_session=False
        )
        if auth:
            self.client.username_pw_set(*auth)
        if tls:
            self.client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
        self.client.reconnect_delay_set(1, 1)
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        # Wait for the SUBACK, not only the connection: a message published before it would not reach us.
        if not self.connected.wait(10) or not self.subscribed.wait(10):
            raise RuntimeError("test subscriber could not connect and subscribe")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)
            self.connected.set()

    def _on_message(self, client, userdata, msg):
        import json

        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = msg.payload
        with self.lock:
            self.messages.append((msg.topic, payload, bool(msg.retain)))

    def on(self, suffix: str) -> list:
        """Payloads received on topics ending with `/suffix`, in arrival order."""
        with self.lock:
            return [p for t, p, _ in self.messages if t.endswith("/" + suffix)]

    def wait_for(self, predicate, timeout: float = 15.0, what: str = "condition"):
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate(self)
            if result:
                return result
            time.sleep(0.05)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; got {[(t, p) for t, p, _ in self.messages][-8:]}"
        )

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
