"""The daemon end to end: real mosquitto, real SQLite, real INT8 models, real folders of image files.

The models are the "darkness" test bundle (tests/helpers/bundle_factory.py): a frame with
a dark line is a crack, a blank light frame is not, so every test knows which
frames must become events whatever the shipped bundle currently scores. Folder
frames come from a pattern ('C' crack, '.' clear, 'X' corrupt file).
Some tests run the Supervisor in this process (fast); the ones about signals and
SIGKILL run `python -m edge.cli run --config ...` as a real child process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import sqlite3
import threading
import time
from datetime import UTC
from pathlib import Path

import jsonschema
import pytest
import yaml

from edge.config import config_from_dict
from edge.daemon.notify import Notifier
from edge.daemon.supervisor import Supervisor
from edge.events.journal import EventRow, Journal, integrity_check
from edge.layout import StateLayout
from tests.helpers import read_status, wait_until, write_frames
from tests.helpers.cli import crackd
from tests.helpers.daemon import BLOCK, InProcess, daemon_dict, start_daemon, stop_process, write_config
from tests.helpers.disk import fill_disk, remount
from tests.helpers.sources import wedging_source


def journal_events(state: Path) -> list[EventRow]:
    with Journal(state / "crackd.db") as j:
        return j.list_events(newest_first=False)


def first_occurrences(messages, key):
    seen = {}
    for m in messages:
        seen.setdefault(m[key], m)
    return list(seen.values())


# --------------------------------------------------------------------------- in-process


def test_events_status_camera_stats_and_frames_match_their_schemas(
    tmp_path, darkness_bundle, mosquitto, subscriber_factory, schemas
):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 3 + "X" + BLOCK * 3 + "X" + "...")
    sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/#")
    # fps 0: the folder waits for the pipeline (no frame skipped); max_fps stretches the run over stats_interval_s
    cfg = config_from_dict(
        daemon_dict(
            tmp_path,
            darkness_bundle,
            frames,
            mosquitto.port,
            max_fps=40,
            mqtt__publish_frames=True,
            mqtt__frame_rate=50,
        )
    )
    d = InProcess(cfg)
    d.wait_finished()  # the folder is replayed once: the daemon stops by itself, flushing the outbox
    state = tmp_path / "state"
    events = journal_events(state)
    assert len(events) == 6 and all(e.state == "ended" for e in events)
    got = sub.wait_for(
        lambda s: len(s.on("event")) >= 12 and [p for p in s.on("status") if p["state"] == "offline"], what="events"
    )
    assert got
    for topic in ("event", "status", "camera", "stats", "frame"):
        payloads = sub.on(topic)
        assert payloads, f"nothing on {topic}"
        for p in payloads:
            jsonschema.validate(p, schemas[topic])
    by_uuid = {}
    for p in sub.on("event"):
        by_uuid.setdefault(p["uuid"], []).append(p["type"])
    assert set(by_uuid) == {e.uuid for e in events}
    assert all(kinds == ["start", "end"] for kinds in by_uuid.values())
    start = sub.on("event")[0]
    assert start["measurements"]["length_px"] > 10 and start["bundle_version"] == "1.0.0-test"
    assert (state / start["snapshot"]["frame"]).is_file() and (state / start["snapshot"]["overlay"]).is_file()
    status = read_status(state)
    assert status.frames_processed == 51 and status.frames_skipped == 0
    assert status.frames_bad == 2 and status.frames_failed == 0
    assert status.state == "stopped" and status.outbox_depth == 0 and status.camera_state == "finished"
    assert sub.on("camera")[-1]["bad_frames"] == 2
    assert [p["state"] for p in sub.on("status")][-1] == "offline"
    assert not (state / "crackd.pid").exists()


@pytest.mark.parametrize(
    ("pattern", "events"),
    [("GGGG....", 0), ("SSSS....", 0), ("CCCC....", 1)],
    ids=["empty-mask", "only-a-speck", "confirmed-crack"],
)
def test_only_frames_the_segmenter_confirms_start_an_event(tmp_path, darkness_bundle, pattern, events):
    """Every frame here passes the classifier's gate; only a crack of the minimum length (here 16 px) is an event."""
    frames = tmp_path / "frames"
    write_frames(frames, pattern)
    InProcess(
        config_from_dict(daemon_dict(tmp_path, darkness_bundle, frames, None, model__cracks={"min_length": 0.2}))
    ).wait_finished()
    state = tmp_path / "state"
    recorded = journal_events(state)
    assert len(recorded) == events
    assert all(e.peak_measurements and e.peak_measurements["count"] >= 1 for e in recorded)
    with Journal(state / "crackd.db") as j:
        gated = j._conn.execute("SELECT crack, segmented FROM frames WHERE score >= 0.5").fetchall()
    assert [tuple(map(bool, row)) for row in gated] == [(events == 1, True)] * 4


def test_broker_outage_during_hundreds_of_crack_frames_loses_nothing(
    tmp_path, darkness_bundle, mosquitto, subscriber_factory
):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 40)  # 320 frames, 40 events
    sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/event")
    cfg = config_from_dict(daemon_dict(tmp_path, darkness_bundle, frames, mosquitto.port, max_fps=120))
    d = InProcess(cfg)
    wait_until(lambda: d.sup.publisher.connected, what="connection")
    mosquitto.stop()
    wait_until(lambda: d.sup.pipeline.frames_processed >= 180, what="frames during the outage")
    assert d.sup.journal_writer.journal.outbox_depth() > 0  # events wait in SQLite while the broker is away
    mosquitto.start()
    d.wait_finished(timeout=60)
    state = tmp_path / "state"
    recorded = journal_events(state)
    assert len(recorded) == 40
    sub.wait_for(
        lambda s: {p["uuid"] for p in s.on("event") if p["type"] == "end"} >= {e.uuid for e in recorded},
        timeout=20,
        what="every event's end",
    )
    got = sub.on("event")
    firsts = first_occurrences(got, "seq")
    assert [m["seq"] for m in firsts] == sorted(m["seq"] for m in firsts), "events out of order"
    starts = [m["uuid"] for m in firsts if m["type"] == "start"]
    assert starts == [e.uuid for e in recorded]  # every event, in the order detected
    assert any(m["replayed"] for m in got)
    with Journal(state / "crackd.db") as j:
        assert j.outbox_depth() == 0


def test_a_source_that_fails_and_comes_back_is_reconnected_and_its_state_published(
    tmp_path, darkness_bundle, mosquitto, subscriber_factory
):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK)
    sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/camera")
    cfg = config_from_dict(
        daemon_dict(
            tmp_path, darkness_bundle, frames, mosquitto.port, source__folder__fps=50, source__folder__loop=True
        )
    )
    d = InProcess(cfg)
    try:
        sub.wait_for(lambda s: any(p["state"] == "ok" for p in s.on("camera")), what="camera ok")
        shutil.move(frames, tmp_path / "unplugged")
        sub.wait_for(lambda s: any(p["state"] == "reconnecting" for p in s.on("camera")), what="camera reconnecting")
        # status.json is rewritten about once a second: wait for the write that follows the state change
        wait_until(
            lambda: read_status(tmp_path / "state").camera_state in ("reconnecting", "ok"),
            what="camera state in status.json",
        )
        shutil.move(tmp_path / "unplugged", frames)
        back = sub.wait_for(
            lambda s: [p for p in s.on("camera") if p["state"] == "ok" and p["reconnects"] >= 1], what="camera back"
        )
        assert back[0]["errors"] >= 1
        n = d.sup.pipeline.frames_processed
        wait_until(lambda: d.sup.pipeline.frames_processed > n + 5, what="frames after the reconnect")
        # a late subscriber sees the camera state retained
        late = subscriber_factory(mosquitto.port, topic="crackd/cam1/camera")
        late.wait_for(lambda s: s.on("camera") and s.messages[0][2], what="retained camera state")
    finally:
        d.stop()


def test_tls_and_password_from_a_file(tmp_path, darkness_bundle, tls_broker, test_ca, subscriber_factory):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK)
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    sub = subscriber_factory(tls_broker.port, topic="crackd/cam1/#", tls=test_ca, auth=("crackd", "s3cret"))
    cfg = config_from_dict(
        daemon_dict(
            tmp_path,
            darkness_bundle,
            frames,
            tls_broker.port,
            source__folder__fps=30,
            mqtt__username="crackd",
            mqtt__password_file=str(secret),
            mqtt__tls={
                "enabled": True,
                "ca": str(test_ca.ca),
                "cert": str(test_ca.client_cert),
                "key": str(test_ca.client_key),
            },
        )
    )
    d = InProcess(cfg)
    d.wait_finished()
    sub.wait_for(lambda s: [p for p in s.on("event") if p["type"] == "end"], what="event over TLS")
    assert sub.on("status")[0]["state"] == "online"


def test_stopping_ends_the_open_event_and_flushes_within_the_timeout(tmp_path, darkness_bundle):
    frames = tmp_path / "frames"
    write_frames(frames, "C" * 10)
    cfg = config_from_dict(
        daemon_dict(tmp_path, darkness_bundle, frames, None, source__folder__fps=20, source__folder__loop=True)
    )
    d = InProcess(cfg)
    wait_until(lambda: d.sup.pipeline.decision.active, what="an open event")
    t0 = time.monotonic()
    d.stop()
    assert time.monotonic() - t0 < 5
    (event,) = journal_events(tmp_path / "state")
    assert event.state == "ended" and event.end_reason == "shutdown"


def test_events_cli_lists_shows_exports_labels_and_deletes(tmp_path, darkness_bundle, capsys):
    from edge.cli import main

    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 3)
    cfg = config_from_dict(daemon_dict(tmp_path, darkness_bundle, frames, None))
    InProcess(cfg).wait_finished()
    state = str(tmp_path / "state")
    capsys.readouterr()
    assert main(["events", "list", "--state-dir", state, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 3 and Path(listed[0]["snapshot"]).is_file()
    uuid = listed[-1]["uuid"]
    assert main(["events", "label", "--state-dir", state, uuid[:8], "no-crack", "--note", "a joint"]) == 0
    assert main(["events", "show", "--state-dir", state, uuid, "--frames"]) == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert shown["label"] == "no-crack" and len(shown["frame_results"]) >= 3
    # times in ISO 8601 UTC, as `events list` prints them (not the journal's epoch seconds)
    assert shown["started_at"].startswith(listed[-1]["started_at"][:19]) and shown["started_at"].endswith("Z")
    assert all(shown[k].endswith("Z") for k in ("updated_at", "ended_at", "labelled_at"))
    assert all(f["t"].endswith("Z") for f in shown["frame_results"])
    out = tmp_path / "export.csv"
    assert main(["events", "export", "--state-dir", state, "--label", "no-crack", "--out", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert len(rows) == 2 and "no-crack" in rows[1] and uuid in rows[1]
    assert main(["events", "export", "--state-dir", state, "--format", "json", "--min-score", "0.5"]) == 0
    assert len(json.loads(capsys.readouterr().out)["events"]) == 3
    assert main(["events", "list", "--state-dir", state, "--since", "1h", "--state", "ended"]) == 0
    assert "3 event(s)" in capsys.readouterr().out
    snapshot = Path(listed[-1]["snapshot"])
    assert main(["events", "delete", "--state-dir", state, uuid]) == 0
    assert not snapshot.exists()
    assert main(["events", "show", "--state-dir", state, uuid]) == 2
    assert main(["status", "--state-dir", state]) == 3  # the folder ended: stopped cleanly, not running
    assert "stopped cleanly at" in capsys.readouterr().out


def test_status_counts_a_daemon_of_another_user_as_running(tmp_path, capsys):
    """The service runs as its own user: kill(pid, 0) from an operator's shell gets EPERM, which means alive."""
    from datetime import datetime

    from edge.cli import main
    from edge.releases.daemon_watch import pid_alive

    (tmp_path / "status.json").write_text(
        json.dumps(
            {
                "state": "running",
                "pid": 1,
                "healthy": True,
                "version": "0.1.0",
                "device_id": "cam1",
                "updated_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            }
        )
    )
    assert pid_alive(1) and not pid_alive(2**22 + 1)  # above the kernel's pid_max: never a process
    assert main(["status", "--state-dir", str(tmp_path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["running"] and status["pid_alive"] and status["status_age_s"] < 10
    (tmp_path / "status.json").write_text("{truncated")
    assert main(["status", "--state-dir", str(tmp_path)]) == 1
    assert "status.json: unreadable" in capsys.readouterr().err


def test_status_says_healthy_but_not_publishing_while_the_broker_is_away(tmp_path, capsys):
    from datetime import datetime

    from edge.cli import main
    from edge.daemon_status import DaemonStatus, OutputStatus

    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    away = DaemonStatus(pid=os.getpid(), state="running", healthy=True, updated_at=now, mqtt_enabled=True)
    away = dataclasses.replace(
        away,
        broker_error="cannot reach broker 127.0.0.1:1883",
        outputs=[OutputStatus("mqtt", 4, 0, "cannot reach broker"), OutputStatus("webhook", 2, 5, "HTTP 500")],
    )
    away.write(tmp_path / "status.json")
    assert main(["status", "--state-dir", str(tmp_path)]) == 0  # frames flow and the journal keeps everything
    out = capsys.readouterr().out
    assert "healthy, not publishing" in out.splitlines()[0] and "cannot reach broker" in out
    assert "  webhook      2 waiting, 5 delivered; NOT DELIVERING: HTTP 500" in out.splitlines()
    dataclasses.replace(away, broker_connected=True).write(tmp_path / "status.json")
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(", healthy")


# --------------------------------------------------------------------------- child processes


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda d: d["mqtt"].update(hots="x"), "mqtt.hots: unknown key (did you mean 'host'?)"),
        (
            lambda d: d["decision"].update(end_m="three"),
            "decision.end_m: expected an integer from 1 to 100000, got 'three'",
        ),
        (
            lambda d: d["model"].update(bundle="/nonexistent/bundle"),
            "model.bundle: /nonexistent/bundle: no such bundle directory",
        ),
    ],
    ids=["unknown-key", "wrong-type", "missing-bundle"],
)
def test_bad_config_exits_2_with_one_line(tmp_path, darkness_bundle, edit, expected):
    config = daemon_dict(tmp_path, darkness_bundle, tmp_path, None)
    edit(config)
    result = crackd("run", "--config", str(write_config(tmp_path, config)))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_sigkill_mid_run_then_restart_loses_no_event(tmp_path, darkness_bundle, mosquitto, subscriber_factory):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 4)
    config = daemon_dict(
        tmp_path, darkness_bundle, frames, mosquitto.port, source__folder__fps=60, source__folder__loop=True
    )
    state = tmp_path / "state"
    mosquitto.stop()  # the first run never reaches a broker: everything it detects waits in the outbox
    first = start_daemon(config, tmp_path)
    try:
        wait_until(lambda: read_status(state).events_started >= 4, timeout=30, what="events in the first run")
        time.sleep(0.15)
    finally:
        first.kill()  # SIGKILL in the middle of the run
        first.wait(10)
    assert integrity_check(state / "crackd.db") is None
    recorded = journal_events(state)
    with Journal(state / "crackd.db") as j:
        pending = j.outbox_depth()
    assert len(recorded) >= 4 and pending >= len(recorded)

    mosquitto.start()
    sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/#")
    second = start_daemon(config, tmp_path)
    try:
        sub.wait_for(
            lambda s: {p["uuid"] for p in s.on("event")} >= {e.uuid for e in recorded},
            timeout=30,
            what="every event recorded before the kill",
        )
        assert {e.uuid for e in journal_events(state)} >= {e.uuid for e in recorded}
        open_at_kill = [e.uuid for e in recorded if e.state == "open"]
        for uuid in open_at_kill:  # found open after the crash: ended and announced
            sub.wait_for(
                lambda s, uuid=uuid: [
                    p for p in s.on("event") if p["uuid"] == uuid and p["end_reason"] == "interrupted"
                ]
            )
        replayed = [p for p in sub.on("event") if p["uuid"] in {e.uuid for e in recorded}]
        assert all(p["replayed"] for p in replayed)
        sub.wait_for(lambda s: [p for p in s.on("status") if p["state"] == "online"], what="online")
        # killed while connected: the broker publishes the last will
        second.kill()
        second.wait(10)
        will = sub.wait_for(lambda s: [p for p in s.on("status") if p["state"] == "offline"], what="last will")
        assert will[-1]["reason"] == "connection lost"
    finally:
        if second.poll() is None:
            second.kill()


def _notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    received = []

    def pump():
        while True:
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            received.append(data.decode())

    threading.Thread(target=pump, daemon=True).start()
    return sock, str(path), received


def test_sighup_switches_to_a_valid_bundle_and_keeps_serving_after_a_corrupt_one(
    tmp_path, darkness_bundle, mosquitto, subscriber_factory
):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK)
    models = tmp_path / "models"
    models.mkdir()
    new = models / "new"
    shutil.copytree(darkness_bundle, new)
    manifest = json.loads((new / "manifest.json").read_text())
    manifest["bundle_version"] = "2.0.0-test"
    (new / "manifest.json").write_text(json.dumps(manifest))
    corrupt = models / "corrupt"
    shutil.copytree(new, corrupt)
    data = bytearray((corrupt / "classifier.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt / "classifier.tflite").write_bytes(bytes(data))
    current = models / "current"
    current.symlink_to(darkness_bundle)

    sock, sock_path, notes = _notify_socket(tmp_path)
    sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/status")
    config = daemon_dict(tmp_path, current, frames, mosquitto.port, source__folder__fps=40, source__folder__loop=True)
    state = tmp_path / "state"
    proc = start_daemon(config, tmp_path, env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "400000"})
    try:
        wait_until(lambda: read_status(state).healthy, timeout=30, what="healthy daemon")
        assert read_status(state).bundle_version == "1.0.0-test"
        assert int((state / "crackd.pid").read_text()) == proc.pid

        def swap_to(target):
            tmp = models / "current.tmp"
            tmp.symlink_to(target)
            os.replace(tmp, current)

        swap_to(new)
        before = read_status(state).frames_processed
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: (lambda r: r and r.ok)(read_status(state).last_reload), what="reload ok")
        status = read_status(state)
        assert status.bundle_version == "2.0.0-test" and status.frames_failed == 0
        wait_until(lambda: read_status(state).frames_processed > before + 20, what="frames after the switch")
        sub.wait_for(
            lambda s: [p for p in s.on("status") if p["bundle_version"] == "2.0.0-test"],
            what="birth with the new bundle",
        )

        swap_to(corrupt)
        proc.send_signal(signal.SIGHUP)
        failed = wait_until(
            lambda: (lambda r: r if r and r.ok is False else None)(read_status(state).last_reload),
            what="reload failure",
        )
        assert "sha256" in failed.error
        n = read_status(state).frames_processed
        wait_until(lambda: read_status(state).frames_processed > n + 20, what="frames after the failed reload")
        status = read_status(state)
        assert status.bundle_version == "2.0.0-test" and status.healthy
        published = sub.wait_for(
            lambda s: [p for p in s.on("status") if (p.get("last_reload") or {}).get("ok") is False],
            what="failed reload published",
        )
        assert published[-1]["bundle_version"] == "2.0.0-test"
        assert stop_process(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    wait_until(lambda: any("STOPPING=1" in n for n in notes), timeout=5, what="STOPPING=1")
    assert notes[0].startswith("READY=1")
    reload_notes = [n for n in notes if n.startswith("RELOADING=1")]
    assert len(reload_notes) == 2 and all("MONOTONIC_USEC=" in n for n in reload_notes)
    after_reload = notes[notes.index(reload_notes[0]) + 1 :]
    assert any(n.startswith("READY=1") for n in after_reload)
    assert sum(n == "WATCHDOG=1" for n in notes) >= 3
    assert sqlite3.connect(state / "crackd.db").execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_sighup_reloads_the_config_file_and_refuses_a_broken_one(tmp_path, darkness_bundle):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK)
    config = daemon_dict(tmp_path, darkness_bundle, frames, None, source__folder__fps=50, source__folder__loop=True)
    path = write_config(tmp_path, config)
    sup = Supervisor(config_from_dict(config), config_path=path, notifier=Notifier(environ={}))
    sup.start()
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        config["decision"]["end_m"] = 7
        config["mqtt"]["port"] = 1999  # needs a restart: kept as it is, with a warning
        path.write_text(yaml.safe_dump(config))
        sup.request_reload()
        wait_until(lambda: sup.last_reload and sup.last_reload.ok, what="reload")
        assert sup.pipeline.decision.params.end_m == 7 and sup.cfg.mqtt.port == 1883
        path.write_text(path.read_text().replace("end_m: 7", "end_m: seven"))
        sup.request_reload()
        wait_until(lambda: sup.last_reload.ok is False, what="failed reload")
        assert "decision.end_m: expected an integer" in sup.last_reload.error
        assert sup.pipeline.decision.params.end_m == 7
        n = sup.pipeline.frames_processed
        wait_until(lambda: sup.pipeline.frames_processed > n + 5, what="frames after the failed reload")
    finally:
        sup.request_stop()
        runner.join(10)


def test_snapshots_stay_within_their_disk_budget_oldest_first_and_only_crack_frames_are_recorded(
    tmp_path, darkness_bundle
):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 6, size=(160, 120))
    config = daemon_dict(
        tmp_path, darkness_bundle, frames, None, storage__snapshot_budget_mb=0.02, storage__record_frames="cracks"
    )
    InProcess(config_from_dict(config)).wait_finished()
    state = tmp_path / "state"
    files = [p for p in (state / "snapshots").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 0.02 * 1024 * 1024
    events = journal_events(state)
    assert len(events) == 6
    kept = [e for e in events if e.snapshot]
    assert kept and kept[-1].uuid == events[-1].uuid  # the newest survive, the oldest went first
    assert all((state / e.snapshot).is_file() for e in kept)
    # Each predicted mask goes with its frame: kept while the frame is, deleted with it.
    masks = {str(p.relative_to(state)) for p in files if p.name.endswith(".mask.png")}
    assert masks == {StateLayout.snapshot_mask(e.snapshot) for e in kept}
    assert events[0].snapshot is None
    with Journal(state / "crackd.db") as j:
        recorded = j._conn.execute("SELECT crack, event_uuid FROM frames").fetchall()
    assert recorded and all(crack or uuid for crack, uuid in recorded)
    assert len(recorded) < 6 * len(BLOCK)


def journal_page_limit(sup, pages: int | None) -> None:
    """SQLite's max_page_count: `pages` (None: the journal's current size) makes the journal really fail with
    SQLITE_FULL, as on a full SD card; a large value gives the space back."""
    with sup.journal_writer.journal._lock:
        conn = sup.journal_writer.journal._conn
        limit = conn.execute("PRAGMA page_count").fetchone()[0] if pages is None else pages
        conn.execute(f"PRAGMA max_page_count={limit}")


NO_PAGE_LIMIT = 1073741823


def test_a_full_disk_holds_event_writes_in_memory_and_saves_them_when_space_returns(tmp_path, darkness_bundle):
    """SQLite's max_page_count makes the journal really fail with SQLITE_FULL, as on a full SD card (no root needed).

    Deterministic: it waits only for conditions (a write held, frames still processed, held writes saved),
    never for a number of held writes, which rises and falls as rows still fit into half-empty pages."""
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK)
    config = daemon_dict(tmp_path, darkness_bundle, frames, None, source__folder__fps=100, source__folder__loop=True)
    d = InProcess(config_from_dict(config))
    try:
        wait_until(lambda: d.sup.pipeline.events_started >= 1, what="a first event")
        journal_page_limit(d.sup, None)
        wait_until(lambda: d.sup.journal_writer.held, timeout=60, what="an event write held while the disk is full")
        assert "full" in (d.sup.status().journal_error or "") and not d.sup.status().healthy
        processed = d.sup.pipeline.frames_processed
        wait_until(lambda: d.sup.pipeline.frames_processed > processed + 10, what="frames still processed")
        journal_page_limit(d.sup, NO_PAGE_LIMIT)
        wait_until(lambda: not d.sup.journal_writer.held, timeout=60, what="held writes saved")
    finally:
        d.stop()
    events = journal_events(tmp_path / "state")
    assert len(events) >= 2 and all(e.state == "ended" for e in events)
    assert len(events) == d.sup.pipeline.events_started and d.sup.journal_writer.writes_dropped == 0


def test_held_writes_near_their_budget_pause_the_pipeline_instead_of_dropping_and_it_resumes_by_itself(
    tmp_path, darkness_bundle, caplog
):
    """Once the held writes would outgrow what the reserve keeps across a stop, no frame is taken (none is
    dropped); when the journal takes writes again the held ones are saved and frames flow again."""
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK)
    config = daemon_dict(tmp_path, darkness_bundle, frames, None, source__folder__fps=100, source__folder__loop=True)
    d = InProcess(config_from_dict(config))
    try:
        wait_until(lambda: d.sup.pipeline.events_started >= 1, what="a first event")
        d.sup.journal_writer.reserve.size = 64 + 3000  # room for a couple of held writes only
        journal_page_limit(d.sup, None)
        reason = wait_until(lambda: d.sup.status().detections_paused, timeout=60, what="detections paused")
        assert "not keeping detections" in reason and "journal cannot be written" in reason
        assert not d.sup.status().healthy
        processed, skipped = d.sup.pipeline.frames_processed, d.sup.slot.skipped
        # the source (fps 100, like a live camera) goes on; its frames are replaced in the slot, none is taken
        wait_until(lambda: d.sup.slot.skipped > skipped + 10, what="frames passing by untaken")
        assert d.sup.pipeline.frames_processed == processed
        journal_page_limit(d.sup, NO_PAGE_LIMIT)
        wait_until(lambda: d.sup.pipeline.frames_processed > processed + 10, what="frames taken again")
        assert d.sup.status().detections_paused is None and not d.sup.journal_writer.held
    finally:
        journal_page_limit(d.sup, NO_PAGE_LIMIT)
        d.stop()
    assert d.sup.journal_writer.writes_dropped == 0
    assert not [r for r in caplog.records if "NOT recorded" in r.getMessage()]
    assert len(journal_events(tmp_path / "state")) == d.sup.pipeline.events_started


def _started_uuids(records) -> list[str]:
    return [r.args[0] for r in records if r.getMessage().startswith("crack event") and "started" in r.getMessage()]


def test_on_a_full_disk_pictures_go_first_events_survive_a_stop_and_a_start_on_the_full_disk_drains_them(
    tmp_path, darkness_bundle, mosquitto, subscriber_factory, small_fs, caplog
):
    """8 MB tmpfs filled to the last byte while the daemon runs with the broker away; then a stop, and a start
    on the still-full disk with the broker back: every event that started is delivered."""
    import logging

    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 2, size=(160, 120))
    state = small_fs / "state"
    mosquitto.stop()
    config = config_from_dict(
        daemon_dict(
            tmp_path,
            darkness_bundle,
            frames,
            mosquitto.port,
            source__folder__fps=40,
            source__folder__loop=True,
            storage__state_dir=str(state),
        )
    )
    caplog.set_level(logging.INFO)
    d = InProcess(config)
    try:
        wait_until(lambda: d.sup.pipeline.events_started >= 2, what="events before the disk fills")
        filler = fill_disk(small_fs)
        wait_until(lambda: d.sup.journal_writer.held >= 3, timeout=60, what="event writes held on the full disk")
        status = d.sup.status()
        assert not status.healthy and "full" in status.journal_error
        wait_until(
            lambda: any("skipped" in r.getMessage() and "snapshot" in r.getMessage() for r in caplog.records),
            what="snapshots shed",
        )
    finally:
        d.stop()
    first_run = _started_uuids(caplog.records)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("database or disk is full" in m for m in errors), errors[:5]
    assert not any("no transaction is active" in m for m in errors)
    assert not list(state.rglob("*.tmp")), "a half-written file was left behind"
    assert any("saved to" in r.getMessage() and "held-writes.reserve" in r.getMessage() for r in caplog.records)
    assert d.sup.journal_writer.writes_dropped == 0

    caplog.clear()
    mosquitto.start()
    sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/event")
    d2 = InProcess(config)  # the disk is still full
    try:
        sub.wait_for(
            lambda s: {p["uuid"] for p in s.on("event")} >= set(first_run),
            timeout=60,
            what="every event of the first run, from the still-full disk",
        )
        filler.unlink()
        wait_until(
            lambda: not d2.sup.journal_writer.held and d2.sup.journal_writer.journal.write_error is None,
            timeout=30,
            what="writable again",
        )
    finally:
        d2.stop()
    assert integrity_check(state / "crackd.db") is None
    journalled = {e.uuid for e in journal_events(state)}
    assert set(first_run) <= journalled


@pytest.mark.parametrize("existing_journal", [False, True], ids=["empty-state-dir", "existing-journal"])
def test_a_read_only_state_dir_stops_the_start_with_one_line_naming_it(
    tmp_path, darkness_bundle, small_fs, existing_journal
):
    state = small_fs / "state"
    state.mkdir()
    if existing_journal:
        Journal(state / "crackd.db").close()
    remount(small_fs, "ro")
    config = daemon_dict(tmp_path, darkness_bundle, tmp_path, None, storage__state_dir=str(state))
    result = crackd("run", "--config", str(write_config(tmp_path, config)))
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if "Traceback" in line or str(state) in line]
    assert len(lines) == 1 and "not writable" in lines[0] and "Read-only file system" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_full_disk_at_the_first_start_stops_it_with_one_line(tmp_path, darkness_bundle, small_fs):
    state = small_fs / "state"
    state.mkdir()
    fill_disk(small_fs)
    config = daemon_dict(tmp_path, darkness_bundle, tmp_path, None, storage__state_dir=str(state))
    result = crackd("run", "--config", str(write_config(tmp_path, config)))
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert str(state / "crackd.db") in last and "full" in last, result.stderr


def test_a_capture_that_hangs_without_a_timeout_is_reported_stalled(tmp_path, darkness_bundle):
    """A driver call that never returns cannot be interrupted: crackd says so, and the watchdog pings stop."""
    frames = tmp_path / "frames"
    write_frames(frames, ".")
    hanging = wedging_source()
    sup = Supervisor(
        config_from_dict(daemon_dict(tmp_path, darkness_bundle, frames, None, source__read_timeout_s=0.2)),
        notifier=Notifier(environ={}),
        source=hanging,
    )
    sup.HEALTH_WINDOW_MIN_S = 0.5
    sup.start()
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        wait_until(lambda: sup.capture.state == "stalled", timeout=10, what="stalled camera")
        assert not sup.healthy() and sup.capture.health.stalls == 1
        hanging.release.set()
        wait_until(lambda: sup.capture.state == "ok", timeout=10, what="camera back")
    finally:
        sup.request_stop()
        runner.join(10)


def test_a_snapshot_is_taken_from_the_full_size_main_stream_in_its_own_colours(tmp_path, darkness_bundle):
    """picamera2 hands over the main stream as B, G, R; the snapshot must show it unconverted and uncropped."""
    import cv2
    import numpy as np

    from edge.sources import FrameSource, SourceExhausted

    class MainAndLores(FrameSource):  # the shape of what Picamera2Source returns, without libcamera
        name = "main-and-lores"
        lossless = True  # every frame reaches the pipeline, so the event surely starts

        def open(self):
            pass

        def read(self, timeout):
            if self.health.frames >= 4:
                raise SourceExhausted("done")
            main_bgr = np.zeros((96, 128, 3), np.uint8)
            main_bgr[..., 0] = 255  # blue
            return self._frame(np.full((48, 64, 3), 40, np.uint8), main_bgr=main_bgr)  # dark lores: a crack

    frames = tmp_path / "frames"
    write_frames(frames, ".")
    sup = Supervisor(
        config_from_dict(daemon_dict(tmp_path, darkness_bundle, frames, None)),
        notifier=Notifier(environ={}),
        source=MainAndLores(),
    )
    sup.start()
    sup.run()
    (event,) = journal_events(tmp_path / "state")
    snapshot = cv2.imread(str(tmp_path / "state" / event.snapshot))
    assert snapshot.shape == (96, 128, 3)
    b, g, r = snapshot[48, 64].astype(int)
    assert b > 230 and g < 25 and r < 25


def test_a_corrupt_video_file_ends_the_daemon_with_a_failure_exit_code(tmp_path, darkness_bundle, caplog):
    """Restart=on-failure must see it: a truncated video is not a normal end (exit 0) but exit code 1."""
    from tests.helpers.frames import damaged_video

    video = damaged_video(tmp_path, "truncated")
    config = daemon_dict(tmp_path, darkness_bundle, tmp_path, None)
    config["source"] = {"type": "opencv", "opencv": {"url": str(video)}, "retry_initial_s": 0.05, "retry_max_s": 0.2}
    sup = Supervisor(config_from_dict(config), notifier=Notifier(environ={}))
    sup.start()
    assert sup.run() == 1
    assert sup.pipeline.frames_processed > 0 and sup.capture.state == "failed"
    assert any("corrupt or truncated" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
