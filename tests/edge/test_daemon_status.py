"""STATE/status.json as a contract (edge/daemon_status.py): what a real daemon writes matches
docs/schemas/state/status.schema.json and reads back unchanged through DaemonStatus; a file of an older
crackd still reads; a misspelt name or a wrong type fails loudly instead of reading None."""

from __future__ import annotations

import dataclasses
import json

import jsonschema
import pytest

from edge.config import config_from_dict
from edge.daemon_status import CameraStatus, DaemonStatus, LastReload, Percentiles, StatusReading
from tests.helpers import SCHEMAS, wait_until, write_frames
from tests.helpers.daemon import BLOCK, InProcess, daemon_dict

STATUS_SCHEMA = json.loads((SCHEMAS / "state" / "status.schema.json").read_text())


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_the_schema_names_exactly_the_fields_of_daemon_status_in_their_order():
    schema = STATUS_SCHEMA
    assert list(schema["properties"]) == _field_names(DaemonStatus) == schema["required"]
    assert list(schema["properties"]["camera"]["properties"]) == _field_names(CameraStatus)
    assert list(schema["$defs"]["percentiles"]["properties"]) == _field_names(Percentiles)
    assert list(schema["properties"]["last_reload"]["oneOf"][1]["properties"]) == _field_names(LastReload)


def test_the_status_a_running_daemon_writes_matches_its_schema_and_reads_back_unchanged(tmp_path, darkness_bundle):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK)
    cfg = config_from_dict(
        daemon_dict(tmp_path, darkness_bundle, frames, None, source__folder__fps=50, source__folder__loop=True)
    )
    path = tmp_path / "state" / "status.json"
    d = InProcess(cfg)
    written = []
    try:
        wait_until(lambda: DaemonStatus.read(path).frames_processed > 0, what="a status with frames")
        d.sup.request_reload()  # the same config again: a status with a last_reload
        wait_until(lambda: DaemonStatus.read(path).last_reload, what="a status after the reload")
        written.append(path.read_bytes())
    finally:
        d.stop()
    written.append(path.read_bytes())  # the last write of a clean stop
    for data in written:
        raw = json.loads(data)
        jsonschema.validate(raw, STATUS_SCHEMA)
        status = DaemonStatus.from_json(raw)
        assert (json.dumps(status.to_json(), indent=1) + "\n").encode() == data  # nothing lost or reordered
    running, stopped = (DaemonStatus.from_json(json.loads(data)) for data in written)
    assert running.state == "running" and running.last_reload.ok and running.camera.source == "folder"
    assert stopped.state == "stopped" and not stopped.healthy and stopped.frames_processed >= running.frames_processed


def test_stats_are_the_status_figures_and_match_the_stats_schema(tmp_path, darkness_bundle, schemas):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 2)
    d = InProcess(config_from_dict(daemon_dict(tmp_path, darkness_bundle, frames, None)))
    d.wait_finished()
    status, stats = d.sup.status(), d.sup.stats()
    assert stats["frames_processed"] == status.frames_processed == 16
    assert stats["events_started"] == status.events_started == 2
    assert stats["latency_ms"] == dataclasses.asdict(status.latency_ms)
    payload = {"schema_version": 1, "device_id": "cam1", "t": "2026-01-01T00:00:00Z", **stats}  # as published
    jsonschema.validate(payload, schemas["stats"])


def test_a_status_file_of_an_older_crackd_reads_with_defaults_and_unknown_keys_are_ignored(tmp_path):
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"pid": 41, "state": "running", "healthy": True, "fps": 3, "added_later": {"x": 1}}))
    status = DaemonStatus.read(path)
    assert status.pid == 41 and status.healthy and status.fps == 3
    assert status.frames_processed == 0 and status.latency_ms == Percentiles() and status.last_reload is None
    assert status.camera == CameraStatus() and status.bundle_version is None


def test_a_misspelt_name_fails_instead_of_reading_none(tmp_path):
    status = DaemonStatus.from_json({"pid": 41, "healthy": True})
    with pytest.raises(AttributeError):
        status.frames_procesed  # noqa: B018
    with pytest.raises(TypeError):
        DaemonStatus(frames_procesed=1)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"pid": "41"}, "pid: expected an integer, got '41'"),
        ({"healthy": "yes"}, "healthy: expected true or false, got 'yes'"),
        ({"frames_processed": True}, "frames_processed: expected an integer, got True"),
        ({"camera": {"stalls": 1.5}}, "camera.stalls: expected an integer, got 1.5"),
        ({"latency_ms": [1, 2]}, "latency_ms: expected a JSON object, got list"),
        ({"last_reload": {"ok": True}}, "last_reload.time: missing"),
        ([1, 2], "status: expected a JSON object, got list"),
    ],
)
def test_a_value_of_the_wrong_type_is_an_error_naming_its_key(doc, message):
    with pytest.raises(ValueError) as exc:
        DaemonStatus.from_json(doc)
    assert str(exc.value) == message


def test_a_reading_keeps_its_observations_beside_the_status_keys():
    reading = StatusReading(DaemonStatus(pid=7, state="running"), age_s=0.4, pid_alive=True)
    doc = reading.to_json()
    assert list(doc)[-2:] == ["status_age_s", "pid_alive"] and doc["pid"] == 7
    assert StatusReading.from_json(json.loads(json.dumps(doc))) == reading
    with pytest.raises(ValueError, match="pid_alive: expected true or false"):
        StatusReading.from_json({**doc, "pid_alive": "yes"})
