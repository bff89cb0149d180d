"""Prometheus metrics (edge/outputs/metrics.py): scraped for real
from the running daemon and through Debian's node_exporter."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from functools import partial
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.config import ConfigError, config_from_dict, parse_config
from edge.outputs.metrics import STAGES, start_for
from edge.outputs.publisher import cpu_temperature_c
from tests.helpers import REPO, free_port, wait_until, write_frames
from tests.helpers.daemon import BLOCK, InProcess, daemon_dict

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
    ],
)
def test_metrics_settings_are_validated_with_their_line(text, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "<t>")
    assert str(err.value) == expected
