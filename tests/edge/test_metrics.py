"""Prometheus metrics (edge/outputs/metrics.py): scraped for real
from the running daemon and through Debian's node_exporter."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from functools import partial
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.config import ConfigError, config_from_dict, parse_config
from edge.outputs.metrics import STAGES, start_for
from edge.outputs.metrics_http import Limits
from edge.outputs.publisher import cpu_temperature_c
from tests.helpers import REPO, free_port, wait_until, write_frames
from tests.helpers.cli import crackd
from tests.helpers.daemon import BLOCK, InProcess, daemon_dict, write_config

wait = partial(wait_until, timeout=30.0)
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"


def scrape(port: int) -> dict:
    """GET /metrics and parse it with prometheus_client's own parser: {family name: family}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families: dict, name: str, sample: str | None = None, **labels) -> float:
    for s in families[name].samples:
        if s.name == (sample or name) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {sample or name} {labels}")


def try_scrape(port: int):
    try:
        return scrape(port)
    except OSError:
        return None


def test_the_running_daemon_serves_metrics_that_prometheus_parses(tmp_path, darkness_bundle, mosquitto):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 6)
    port = free_port()
    cfg = config_from_dict(
        daemon_dict(tmp_path, darkness_bundle, frames, mosquitto.port, max_fps=15, metrics={"http": True, "port": port})
    )
    d = InProcess(cfg)
    got = wait(
        lambda: (
            (f := try_scrape(port))
            and value(f, "crackd_frames_processed", "crackd_frames_processed_total") >= 10
            and value(f, "crackd_mqtt_connected") == 1
            and f
        ),
        what="10 frames in a scrape while connected",
    )
    kinds = {name: f.type for name, f in got.items()}
    assert kinds["crackd_frames_processed"] == "counter" and kinds["crackd_crack_frames"] == "counter"
    assert (
        kinds["crackd_events_started"]
        == kinds["crackd_journal_write_failures"]
        == kinds["crackd_camera_reconnects"]
        == "counter"
    )
    assert kinds["crackd_stage_latency_seconds"] == "histogram" and kinds["crackd_frame_latency_seconds"] == "histogram"
    assert kinds["crackd_outbox_depth"] == kinds["crackd_mqtt_connected"] == "gauge"
    assert kinds["crackd_build_info"] == "gauge"  # an info metric: a constant 1 with the versions as labels
    for stage in ("preprocess", "classify", "total"):
        assert value(got, "crackd_stage_latency_seconds", "crackd_stage_latency_seconds_count", stage=stage) >= 10
        assert (
            value(got, "crackd_stage_latency_seconds", "crackd_stage_latency_seconds_bucket", stage=stage, le="+Inf")
            >= 10
        )
    assert value(got, "crackd_build_info", bundle_version="1.0.0-test", device_id="cam1") == 1
    assert value(got, "crackd_camera_state", state="ok") == 1
    d.wait_finished()
    assert try_scrape(port) is None  # the endpoint closes with the daemon


def test_the_textfile_is_read_by_node_exporter_with_the_final_counts(tmp_path, darkness_bundle):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 4 + "X")
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    cfg = config_from_dict(
        daemon_dict(
            tmp_path, darkness_bundle, frames, None, metrics={"http": False, "textfile": str(textdir / "crackd.prom")}
        )
    )
    InProcess(cfg).wait_finished()
    port = free_port()
    exporter = subprocess.Popen(
        [
            NODE_EXPORTER,
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={textdir}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        got = wait(lambda: try_scrape(port), what="node_exporter answering")
    finally:
        exporter.kill()
        exporter.wait(10)
    assert value(got, "node_textfile_scrape_error") == 0  # node_exporter accepted the file
    assert value(got, "crackd_frames_processed", "crackd_frames_processed_total") == 32
    assert value(got, "crackd_crack_frames", "crackd_crack_frames_total") == 12  # 3 dark-line frames per block
    assert value(got, "crackd_events_started", "crackd_events_started_total") == 4
    assert value(got, "crackd_frames_bad", "crackd_frames_bad_total") == 1
    for stage in ("preprocess", "classify", "total"):
        assert value(got, "crackd_stage_latency_seconds", "crackd_stage_latency_seconds_count", stage=stage) == 32
    assert value(got, "crackd_stage_latency_seconds", "crackd_stage_latency_seconds_count", stage="segment") == 12
    assert value(got, "crackd_frame_latency_seconds", "crackd_frame_latency_seconds_count") == 32
    assert value(got, "crackd_journal_write_failures", "crackd_journal_write_failures_total") == 0
    assert value(got, "crackd_outbox_depth") == 0 and value(got, "crackd_mqtt_connected") == 0
    assert set(STAGES) >= {s.labels["stage"] for s in got["crackd_stage_latency_seconds"].samples}
    # The Grafana dashboard in docs/ queries only metrics that exist (the temperature only where the kernel has one).
    dashboard = json.loads((REPO / "docs" / "grafana" / "crackd-dashboard.json").read_text())
    queried = {
        name for p in dashboard["panels"] for t in p.get("targets", []) for name in re.findall(r"crackd_\w+", t["expr"])
    }
    exposed = {s.name for f in got.values() for s in f.samples}
    if cpu_temperature_c() is None:
        exposed.add("crackd_cpu_temperature_celsius")
    assert len(queried) >= 10 and queried <= exposed, queried - exposed


def test_without_prometheus_client_the_daemon_runs_without_metrics(monkeypatch, caplog):
    cfg = config_from_dict({"metrics": {"http": True}})
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # what a minimal install (no crackd[edge]) looks like
    assert start_for(SimpleNamespace(cfg=cfg)) is None
    assert "prometheus_client is not installed" in caplog.text
    assert start_for(SimpleNamespace(cfg=config_from_dict({"metrics": {"http": False}}))) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("metrics:\n  port: 70000\n", "<t>:2: metrics.port: expected an integer from 1 to 65535, got 70000"),
        (
            "metrics:\n  textfile: /tmp/crackd.txt\n",
            "<t>:2: metrics.textfile: '/tmp/crackd.txt': node_exporter reads only files ending in .prom",
        ),
        ("metrics:\n  htp: true\n", "<t>:2: metrics.htp: unknown key (did you mean 'http'?)"),
        (
            "metrics:\n  username: prometheus\n",
            "<t>:2: metrics.username: basic auth needs a password: set metrics.password_file or metrics.password_env",
        ),
        (
            "metrics:\n  username: a:b\n  password_env: PW\n",
            "<t>:2: metrics.username: 'a:b': a basic auth user name has no ':' and no control characters",
        ),
        (
            "metrics:\n  password_env: METRICS_PASSWORD\n",
            "<t>:2: metrics.username: a password is configured but no username",
        ),
        ("metrics:\n  tls:\n    cert: /c.pem\n", "<t>:3: metrics.tls.key: https needs both a certificate and its key"),
        (
            "metrics:\n  tls:\n    client_ca: /ca.pem\n",
            "<t>:3: metrics.tls.client_ca: client certificates need https: set metrics.tls.cert and metrics.tls.key",
        ),
    ],
)
def test_metrics_settings_are_validated_with_their_line(text, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "<t>")
    assert str(err.value) == expected


# --------------------------------------------------------------------------- who gets in, and for how long


def get(url: str, context: ssl.SSLContext | None = None, password: str | None = None) -> tuple[int, bytes]:
    """(HTTP status, body) of a GET, with basic auth user `prometheus` when a password is given."""
    request = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"prometheus:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_idle_connections_neither_block_a_scrape_nor_add_threads_and_are_dropped(tmp_path, darkness_bundle):
    """A slowloris (many connections that send nothing, or half a request) once held a thread each and, past the
    listen backlog of 5, kept real scrapes out."""
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK)
    port = free_port()
    cfg = config_from_dict(
        daemon_dict(
            tmp_path, darkness_bundle, frames, None, max_fps=20, source__folder__loop=True, metrics={"port": port}
        )
    )
    d = InProcess(cfg)
    try:
        wait(lambda: try_scrape(port), what="the endpoint answering")
        threads = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(300)]
        for s in idle[-10:]:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # a request head that never ends
        got = scrape(port)
        assert value(got, "crackd_frames_processed", "crackd_frames_processed_total") >= 1
        assert threading.active_count() <= threads + 5  # was one more thread per connection
        # Every idle connection is closed by the daemon: the oldest to make room, the rest at the request timeout.
        assert all(s.recv(1) == b"" for s in idle)
        assert scrape(port)
    finally:
        for s in idle:
            s.close()
        d.stop()


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "metrics-password"
    path.write_text("s3cret\n")
    return path


def serve(options: dict):
    """The metrics endpoint of a daemon still starting (no figures yet), per `metrics` config `options`."""
    cfg = config_from_dict({"metrics": options})
    return start_for(SimpleNamespace(cfg=cfg, started=False))


def test_basic_auth_answers_401_without_the_password_and_200_with_it(password_file, caplog):
    port = free_port()
    # Listening beyond loopback with a password but no TLS: the daemon says so in its log.
    caplog.set_level(logging.WARNING)
    metrics = serve({"host": "0.0.0.0", "port": port, "username": "prometheus", "password_file": str(password_file)})
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        status, _ = get(url)
        assert status == 401
        assert get(url, password="wrong")[0] == 401
        status, body = get(url, password="s3cret")
        assert status == 200 and b"crackd_frame_latency_seconds" in body
    finally:
        metrics.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("metrics.host 0.0.0.0 listens beyond loopback" in w and "without TLS" in w for w in warnings), warnings


def test_https_with_basic_auth_and_client_certificates(test_ca, password_file):
    port = free_port()
    tls = {"cert": str(test_ca.server_cert), "key": str(test_ca.server_key), "client_ca": str(test_ca.ca)}
    metrics = serve({"port": port, "username": "prometheus", "password_file": str(password_file), "tls": tls})
    try:
        url = f"https://localhost:{port}/metrics"
        client = ssl.create_default_context(cafile=test_ca.ca)
        client.load_cert_chain(test_ca.client_cert, test_ca.client_key)
        status, body = get(url, client, password="s3cret")
        assert status == 200 and b"crackd_frame_latency_seconds" in body
        assert get(url, client)[0] == 401
        with pytest.raises(OSError):  # no client certificate: the handshake fails
            get(url, ssl.create_default_context(cafile=test_ca.ca), password="s3cret")
        with pytest.raises(OSError):  # plain http gets no metrics
            get(f"http://127.0.0.1:{port}/metrics", password="s3cret")
    finally:
        metrics.stop()


@pytest.mark.parametrize(
    "metrics, warning",
    [
        ({"host": "0.0.0.0"}, "listens beyond loopback on port 9808 with no authentication and no TLS"),
        ({"host": "::", "username": "prometheus", "password_env": "PW"}, "without TLS"),
        ({"host": "127.0.0.1"}, None),
        ({"host": "localhost"}, None),
        ({"host": "0.0.0.0", "http": False}, None),
    ],
)
def test_check_config_warns_when_the_endpoint_listens_beyond_loopback(tmp_path, metrics, warning):
    path = write_config(
        tmp_path, {"storage": {"state_dir": str(tmp_path)}, "mqtt": {"enabled": False}, "metrics": metrics}
    )
    result = crackd("check-config", str(path), env={**os.environ, "PW": "s3cret"})
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    if warning is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warning in warnings[0] and "Securing the broker" in warnings[0], warnings


def test_the_unit_caps_open_files_below_select_s_limit_with_room_for_the_endpoint():
    """paho-mqtt's network loop uses select(), which fails on descriptors numbered 1024 or more."""
    unit = (REPO / "systemd" / "crackd.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert int(settings["LimitNOFILE"]) <= 1024
    assert int(settings["LimitNOFILE"]) >= 10 * (Limits().max_connections + 1)


def test_check_config_refuses_a_certificate_it_cannot_load_in_one_line(tmp_path, password_file):
    (tmp_path / "metrics.crt").write_text("not a certificate\n")
    (tmp_path / "metrics.key").write_text("not a key\n")
    tls = {"cert": str(tmp_path / "metrics.crt"), "key": str(tmp_path / "metrics.key")}
    path = write_config(
        tmp_path,
        {
            "storage": {"state_dir": str(tmp_path)},
            "mqtt": {"enabled": False},
            "metrics": {"username": "prometheus", "password_file": str(password_file), "tls": tls},
        },
    )
    result = crackd("check-config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}: metrics.tls: cannot use cert {tls['cert']}" in lines[0], lines
