"""A start on a disk that is already full (systemd's restart after a crash onto a still-full disk).

Real 8 MB tmpfs (tests/helpers/disk.py), real SQLite, real models, real mosquitto. The rule under test: the daemon
never takes a detection it cannot keep. Opening the journal has a reserve of its own, so the held-writes reserve
still keeps what is held at a stop; with no room to keep a detection the pipeline stops taking frames (the camera's
frames are left where they are) and says so in status.json, health, metrics and the MQTT status, and it resumes by
itself when space returns.
"""

from __future__ import annotations

import json
import logging
import urllib.request

from edge.config import config_from_dict
from tests.helpers import wait_until, write_frames
from tests.helpers.daemon import BLOCK, InProcess, daemon_dict
from tests.helpers.disk import fill_disk
from tests.helpers.ports import free_port


def _started_uuids(records) -> list[str]:
    return [r.args[0] for r in records if r.getMessage().startswith("crack event") and "started" in r.getMessage()]


def _journalled_uuids(state) -> set[str]:
    from edge.events.journal import Journal

    with Journal(state / "crackd.db") as j:
        return {e.uuid for e in j.list_events()}


def _paused(d: InProcess) -> str | None:
    return getattr(d.sup.status(), "detections_paused", None)


def _prepare_full_disk(tmp_path, small_fs, darkness_bundle, port, **over):
    """A state directory as a first run leaves it (journal, reserves), then the disk filled to the last byte."""
    blank = tmp_path / "blank"
    write_frames(blank, ".")
    state = small_fs / "state"
    first = InProcess(
        config_from_dict(daemon_dict(tmp_path, darkness_bundle, blank, port, storage__state_dir=str(state), **over))
    )
    first.wait_finished()
    return state, fill_disk(small_fs)


def test_a_start_on_a_full_disk_keeps_every_detection_through_a_stop(
    tmp_path, darkness_bundle, mosquitto, subscriber_factory, small_fs, caplog
):
    """The issue's reproduction: the broker away, a start on a full disk, detections, SIGTERM. Every event that
    started reaches the journal or the held-writes reserve, and the broker once space and broker are back."""
    mosquitto.stop()
    state, filler = _prepare_full_disk(tmp_path, small_fs, darkness_bundle, mosquitto.port)
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 4, size=(160, 120))
    config = config_from_dict(
        daemon_dict(
            tmp_path,
            darkness_bundle,
            frames,
            mosquitto.port,
            source__folder__loop=True,
            storage__state_dir=str(state),
        )
    )
    caplog.set_level(logging.INFO)
    d = InProcess(config)
    try:
        wait_until(
            lambda: d.sup.journal_writer.held >= 3 or _paused(d),
            timeout=90,
            what="event writes held on the full disk (or the pipeline paused)",
        )
    finally:
        d.stop()
    detected = _started_uuids(caplog.records)
    lost = [r.getMessage() for r in caplog.records if "LOST" in r.getMessage() or "NOT recorded" in r.getMessage()]
    assert detected and not lost, f"{len(detected)} events detected; {lost[:2]}"

    caplog.clear()
    filler.unlink()
    mosquitto.start()
    sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/event")
    blank = tmp_path / "blank"
    again = config_from_dict(
        daemon_dict(
            tmp_path,
            darkness_bundle,
            blank,
            mosquitto.port,
            source__folder__loop=True,
            source__folder__fps=10,
            storage__state_dir=str(state),
        )
    )
    d2 = InProcess(again)
    try:
        delivered = sub.wait_for(
            lambda s: {p["uuid"] for p in s.on("event")} >= set(detected) and s,
            timeout=60,
            what="every event detected on the full disk, delivered",
        )
    finally:
        d2.stop()
    assert set(detected) <= _journalled_uuids(state)
    assert {p["uuid"] for p in delivered.on("event")} >= set(detected)


def test_with_no_room_to_keep_a_detection_the_pipeline_waits_says_so_and_resumes_when_space_returns(
    tmp_path, darkness_bundle, mosquitto, subscriber_factory, small_fs, caplog
):
    """The held-writes reserve is gone (spent by an earlier start) and the disk is full: not one frame is taken
    (the folder's frames stay unread) until space returns; then every event in them is detected and delivered."""
    metrics_port = free_port()
    state, filler = _prepare_full_disk(tmp_path, small_fs, darkness_bundle, mosquitto.port)
    (state / "held-writes.reserve").unlink()
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 3, size=(160, 120))
    status_sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/status")
    stats_sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/stats")
    config = config_from_dict(
        daemon_dict(
            tmp_path,
            darkness_bundle,
            frames,
            mosquitto.port,
            storage__state_dir=str(state),
            metrics={"http": True, "port": metrics_port},
        )
    )
    caplog.set_level(logging.INFO)
    d = InProcess(config)
    try:
        reason = wait_until(lambda: _paused(d), timeout=30, what="detections paused on the full disk")
        assert "not keeping detections" in reason
        status = d.sup.status()
        assert not status.healthy and status.frames_processed == 0 and status.events_started == 0
        on_disk = json.loads((state / "status.json").read_text()) if (state / "status.json").exists() else None
        assert on_disk is None or on_disk["detections_paused"] in (None, reason)  # written when there is room
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert "crackd_keeping_detections 0.0" in scrape
        status_sub.wait_for(
            lambda s: any(p.get("detections_paused") for p in s.on("status") if p["state"] == "online"),
            what="the MQTT status saying detections are paused",
        )
        stats_sub.wait_for(
            lambda s: any(p.get("detections_paused") == reason for p in s.on("stats")), what="stats saying so too"
        )
        filler.unlink()
        d.wait_finished(timeout=60)  # resumed by itself, then the folder ran out
    finally:
        if d.thread.is_alive():
            d.stop()
    assert not _paused(d) and d.sup.pipeline.events_started == 3
    detected = _started_uuids(caplog.records)
    assert len(detected) == 3 and set(detected) <= _journalled_uuids(state)
    messages = [r.getMessage() for r in caplog.records]
    assert any("not keeping detections" in m for m in messages)
    assert any("keeping detections again" in m for m in messages)
    assert (state / "held-writes.reserve").stat().st_size > 0  # made again once there was room
    online = [p for p in status_sub.on("status") if p["state"] == "online"]
    assert "detections_paused" not in online[-1]  # the all-clear was published too
