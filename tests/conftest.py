"""Shared fixtures. Each area appends its own below; keep fixtures real (real files, real processes)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_BUNDLE = REPO / "models" / "default"
# The "darkness" test bundle, checked in (15 KB) so the device tests need no TensorFlow: made once by
# tools/make_test_bundle.py from tests/bundle_factory.py with the trainer's own INT8 exporter.
TEST_BUNDLE = REPO / "tests" / "data" / "darkness-bundle"

if os.environ.get("CRACKD_TEST_WITHOUT_TENSORFLOW"):
    # Run the suite as on a device-only install (`pip install .[edge]`): TensorFlow and Keras cannot be
    # imported, and the tests that need them are skipped by their own importorskip.
    import importlib.abc

    class _NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
                raise ModuleNotFoundError(f"No module named {name!r} (CRACKD_TEST_WITHOUT_TENSORFLOW)", name=name)
            return None

    sys.meta_path.insert(0, _NoTensorFlow())


@pytest.fixture(scope="session")
def darkness_bundle(tmp_path_factory) -> Path:
    """A real INT8 bundle whose models flag dark pixels (tests/data/darkness-bundle; a private copy per session)."""
    dst = tmp_path_factory.mktemp("bundles") / "darkness"
    shutil.copytree(TEST_BUNDLE, dst)
    return dst


@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    """A private copy of the shipped default bundle that a test may damage."""
    dst = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, dst)
    return dst



# --------------------------------------------------------------------------- model releases, signing, deploy
# (edge/releases/manager.py, edge/releases/signing.py, deploy/): throwaway OpenSSH keys and modified copies of the shipped bundle.


@pytest.fixture(scope="session")
def signer_keys(tmp_path_factory):
    """Two throwaway ed25519 keys: `trusted` is listed in `allowed_signers`, `stranger` is not."""
    import subprocess
    from types import SimpleNamespace

    from edge.releases.signing import NAMESPACE

    d = tmp_path_factory.mktemp("signers")
    keys = {}
    for name in ("trusted", "stranger"):
        key = d / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(key)], check=True)
        keys[name] = key
    allowed = d / "allowed_signers"
    allowed.write_text(f'trusted@test namespaces="{NAMESPACE}" {(d / "trusted.pub").read_text().strip()}\n')
    return SimpleNamespace(trusted=keys["trusted"], stranger=keys["stranger"], allowed_signers=allowed, dir=d)


def copy_default_bundle(dst: Path, suffix: str, edit=None, sign=None) -> Path:
    """A copy of the shipped default bundle at `dst` with bundle_version `<shipped version>-<suffix>`.

    `edit(manifest_dict, bundle_dir)` may change the manifest and files before it is written; `sign`
    is an OpenSSH key to sign the result with. The FP32 reference models are left out (not needed).
    """
    import json

    from edge.releases.signing import sign_bundle

    shutil.copytree(DEFAULT_BUNDLE, dst, ignore=shutil.ignore_patterns("reference", "manifest.json.sig"))
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["bundle_version"] = f"{manifest['bundle_version']}-{suffix}"
    if edit is not None:
        edit(manifest, dst)
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if sign is not None:
        sign_bundle(dst, sign)
    return dst


def wedging_source(after_frames: int = 5):
    """A camera whose read() blocks for good after `after_frames` frames and ignores its timeout, like a wedged
    driver call; `.release.set()` lets it go (at the end of a test)."""
    import threading

    import numpy as np

    from edge.sources import FrameSource

    class Wedges(FrameSource):
        name = "wedges"

        def __init__(self):
            super().__init__()
            self.release = threading.Event()

        def open(self):
            pass

        def read(self, timeout):
            if self.health.frames >= after_frames:
                self.release.wait()
            time.sleep(0.01)
            return self._frame(np.full((48, 64, 3), 215, np.uint8))

    return Wedges()


def swap_golden_segmenter_outputs(manifest: dict) -> None:
    """Give each golden sample the recorded segmenter map of the next one: checksums and sizes stay consistent,
    the expectations are wrong (a self-test must catch it by comparing maps, not files)."""
    keys = ("segmenter_output", "segmenter_output_sha256", "segmenter_output_bytes")
    samples = manifest["golden"]["samples"]
    outs = [tuple(s.get(k) for k in keys) for s in samples]
    for s, out in zip(samples, outs[1:] + outs[:1]):
        s.update({k: v for k, v in zip(keys, out) if v is not None})


@pytest.fixture
def make_bundle(tmp_path):
    """Factory: make_bundle(suffix, edit=None, sign=None) -> a changed copy of the shipped bundle (see copy_default_bundle).

    Versions are the shipped bundle's version plus `-suffix`, so nothing depends on which bundle is shipped.
    """
    made = []

    def make(suffix: str, edit=None, sign=None) -> Path:
        made.append(suffix)
        return copy_default_bundle(tmp_path / f"bundle-{suffix}-{len(made)}", suffix, edit, sign)

    return make


# --------------------------------------------------------------------------- the daemon (edge/daemon/supervisor.py, publisher, journal)
# A real mosquitto on a free loopback port (killable and restartable to simulate outages), a test CA made
# with openssl for TLS, a password file made with mosquitto_passwd, and an MQTT subscriber that records.

MOSQUITTO = "/usr/sbin/mosquitto"


def wait_until(predicate, timeout: float = 20.0, what: str = "condition", interval: float = 0.05):
    """Poll `predicate` until it returns something truthy (returned) or `timeout` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A mosquitto process with a generated config. stop() (clean), kill() (SIGKILL), start() again on the same port.

    Retained messages and persistent sessions survive restarts (persistence on), like a production broker.
    """

    def __init__(self, workdir: Path, tls=None, password: tuple[str, str] | None = None):
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
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "max_queued_messages 10000",
        ]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")
        if password:
            import subprocess

            passwd = self.dir / "passwd"
            subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), *password], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [f"cafile {tls.ca}", f"certfile {tls.server_cert}", f"keyfile {tls.server_key}", "require_certificate true"]
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> "Broker":
        import socket
        import subprocess
        import time

        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


@pytest.fixture
def mosquitto(tmp_path):
    """A running plain-TCP, anonymous mosquitto; `.port`, `.stop()`, `.kill()`, `.start()`."""
    broker = Broker(tmp_path / "broker").start()
    yield broker
    broker.kill()


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    """A throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate (openssl, EC P-256)."""
    import subprocess
    from types import SimpleNamespace

    d = tmp_path_factory.mktemp("ca")

    def ssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=crackd test CA")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, cn in (("server", "localhost"), ("client", "crackd-test-device")):
        ssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        extra = ["-extfile", "server.ext"] if name == "server" else []
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", *extra)
    return SimpleNamespace(ca=d / "ca.crt", server_cert=d / "server.crt", server_key=d / "server.key",
                           client_cert=d / "client.crt", client_key=d / "client.key", dir=d)


@pytest.fixture
def tls_broker(tmp_path, test_ca):
    """mosquitto requiring TLS with a client certificate from the test CA and user `crackd` / password `s3cret`."""
    broker = Broker(tmp_path / "tls-broker", tls=test_ca, password=("crackd", "s3cret")).start()
    broker.user, broker.password = "crackd", "s3cret"
    yield broker
    broker.kill()


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
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"test-sub-{uuid.uuid4().hex[:8]}",
                                  clean_session=False)
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
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; got {[(t, p) for t, p, _ in self.messages][-8:]}")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber_factory():
    made = []

    def make(port, **kwargs) -> Subscriber:
        sub = Subscriber(port, **kwargs)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


def write_frames(folder: Path, pattern: str, size=(64, 48), start: int = 0) -> list[Path]:
    """Image files named in replay order from a pattern: 'C' = a dark crack line, '.' = blank light surface, 'X' = corrupt file."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    paths = []
    for i, ch in enumerate(pattern):
        path = folder / f"f{start + i:06d}.png"
        if ch == "X":
            path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
        else:
            img = np.full((h, w, 3), 215, np.uint8)
            if ch == "C":
                cv2.line(img, (4, 6 + i % 5), (w - 6, h - 8), (15, 15, 15), 3)
            cv2.imwrite(str(path), img)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def schemas():
    """The MQTT payload JSON Schemas from docs/schemas, by topic name."""
    import json

    return {p.name.split(".")[0]: json.loads(p.read_text()) for p in (REPO / "docs" / "schemas").glob("*.schema.json")}


# --------------------------------------------------------------------------- full and read-only disks
# A real 8 MB tmpfs: SQLite, snapshots and the pid file meet a real ENOSPC / EROFS. Mounting needs root:
# without it these tests are skipped (they are never skipped where the suite runs as root, as CI does).


def remount(mountpoint: Path, mode: str) -> None:
    """`ro` or `rw` (a read-only remount fails while a file on it is open for writing)."""
    import subprocess

    subprocess.run(["mount", "-o", f"remount,{mode}", str(mountpoint)], check=True)


def fill_disk(mountpoint: Path) -> Path:
    """Fill the file system until ENOSPC with one file; returns it (delete it to give the space back)."""
    filler = mountpoint / "filler"
    with open(filler, "ab", buffering=0) as f:
        for chunk in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    return filler


@pytest.fixture
def small_fs(tmp_path):
    """An 8 MB tmpfs mounted under tmp_path (root only)."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
