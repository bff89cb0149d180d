"""`crack-deploy pull` against real sshd "devices", each with the state directory of a real daemon run.

Two sshd servers on loopback stand in for two Pis: each sets CRACKD_STATE_DIR for its sessions (SetEnv), so the
same `crackd` command line reaches a different device's journal and pictures, as two Pis' own configs would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import config_from_dict
from edge.events.journal import Journal
from edge.layout import StateLayout
from tests.helpers import REPO, TEST_BUNDLE, free_port, write_frames
from tests.helpers.daemon import BLOCK, InProcess, daemon_dict, flag_missed_after_a_run
from tests.helpers.sshd import HOST, SSHD, start_sshd

REMOTE_CRACKD = f"env PYTHONPATH={REPO} {sys.executable} -m edge.cli"

pytestmark = pytest.mark.skipif(
    not SSHD.exists() or os.geteuid() != 0 or not shutil.which("ssh"),
    reason="needs OpenSSH's sshd and root (sshd runs as root on a loopback port)",
)


def recorded_device(root: Path, bundle: Path, blocks: int) -> Path:
    """A device state directory after a real daemon run over `blocks` crack blocks (one event each)."""
    frames = root / "frames"
    write_frames(frames, BLOCK * blocks)
    InProcess(config_from_dict(daemon_dict(root, bundle, frames, None))).wait_finished()
    return root / "state"


def events_of(state: Path) -> list:
    with Journal(StateLayout(state).default_db) as journal:
        return journal.list_events(newest_first=False)


def label(state: Path, uuid: str, verdict: str) -> None:
    with Journal(StateLayout(state).default_db) as journal:
        journal.set_label(uuid, verdict)


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    """cam-a and cam-b: two sshd servers, each over its own recorded state directory; cam-down: a closed port."""
    root = tmp_path_factory.mktemp("devices")
    bundle = root / "bundle"
    shutil.copytree(TEST_BUNDLE, bundle)
    states = {"cam-a": recorded_device(root / "a", bundle, 2), "cam-b": recorded_device(root / "b", bundle, 2)}
    servers = {
        name: start_sshd(tmp_path_factory.mktemp(f"sshd-{name}"), f"SetEnv CRACKD_STATE_DIR={state}\n")
        for name, state in states.items()
    }
    config = root / "ssh_config"
    config.write_text(
        "".join(
            f"Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {key}\n"
            f"  IdentitiesOnly yes\n  UserKnownHostsFile {root / 'known_hosts'}\n"
            "  StrictHostKeyChecking accept-new\n  LogLevel ERROR\n"
            for name, port, key in [
                *((n, s.port, s.dir / "user_key") for n, s in servers.items()),
                ("cam-down", free_port(), servers["cam-a"].dir / "user_key"),
            ]
        )
    )
    yield states, config
    for server in servers.values():
        server.stop()


def crack_deploy_pull(config: Path, site: Path, *hosts: str, remote_crackd: str = REMOTE_CRACKD):
    cmd = [sys.executable, "-m", "deploy.cli", "pull", str(site), *hosts, "-F", str(config)]
    cmd += ["--remote-crackd", remote_crackd]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


def manifest(site: Path) -> list[dict]:
    return [json.loads(line) for line in (site / "pulled.jsonl").read_text().splitlines()]


def site_files(site: Path) -> dict[str, bytes]:
    return {str(p.relative_to(site)): p.read_bytes() for p in sorted(site.rglob("*")) if p.is_file()}


def test_pull_brings_labelled_events_from_two_devices_then_only_what_is_new(devices, tmp_path):
    states, config = devices
    a1, a2 = (e.uuid for e in events_of(states["cam-a"]))
    b1, b2 = (e.uuid for e in events_of(states["cam-b"]))
    label(states["cam-a"], a1, "crack")
    label(states["cam-a"], a2, "no-crack")  # a false alarm: a crack-free example
    label(states["cam-b"], b1, "crack")  # b2 stays unlabelled: not pulled
    site = tmp_path / "site"

    first = crack_deploy_pull(config, site, "cam-a", "cam-b")
    assert first.returncode == 0, first.stdout + first.stderr
    images = sorted(p.name for p in (site / "images").iterdir())
    assert images == sorted(f"{stem}.jpg" for stem in (f"cam-a-{a1}", f"cam-a-{a2}", f"cam-b-{b1}"))
    for host, uuid in (("cam-a", a1), ("cam-a", a2), ("cam-b", b1)):
        (event,) = (e for e in events_of(states[host]) if e.uuid == uuid)
        stem = f"{host}-{uuid}"
        assert (site / "images" / f"{stem}.jpg").read_bytes() == (states[host] / event.snapshot).read_bytes()
        predicted = cv2.imread(str(site / "predicted" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(predicted)) <= {0, 255} and predicted.any()  # the device's own prediction
    # Only the no-crack verdict becomes a label (all zero, at the frame's size); a crack waits for a person.
    assert sorted(p.name for p in (site / "masks").iterdir()) == [f"cam-a-{a2}.png"]
    empty = cv2.imread(str(site / "masks" / f"cam-a-{a2}.png"), cv2.IMREAD_UNCHANGED)
    frame = cv2.imread(str(site / "images" / f"cam-a-{a2}.jpg"))
    assert empty.shape == frame.shape[:2] and not empty.any()
    entries = manifest(site)
    assert [(e["host"], e["uuid"], e["label"]) for e in entries if e["host"] == "cam-a"] == [
        ("cam-a", a1, "crack"),
        ("cam-a", a2, "no-crack"),
    ]
    assert len(entries) == 3
    for entry in entries:
        assert entry["device_id"] == "cam1" and entry["started_at"].endswith("Z")
        for rel, digest in entry["files"].items():
            assert hashlib.sha256((site / rel).read_bytes()).hexdigest() == digest

    before = site_files(site)
    again = crack_deploy_pull(config, site, "cam-a", "cam-b")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "up to date" in again.stdout
    assert site_files(site) == before  # nothing duplicated, nothing rewritten

    label(states["cam-b"], b2, "crack")
    third = crack_deploy_pull(config, site, "cam-a", "cam-b")
    assert third.returncode == 0, third.stdout + third.stderr
    added = set(site_files(site)) - set(before)
    assert added == {f"images/cam-b-{b2}.jpg", f"predicted/cam-b-{b2}.png"}
    assert [e["uuid"] for e in manifest(site)][3:] == [b2]


def test_an_unreachable_device_is_named_in_one_line_and_the_others_are_still_pulled(devices, tmp_path):
    states, config = devices
    (first, *_) = events_of(states["cam-a"])
    label(states["cam-a"], first.uuid, "crack")
    site = tmp_path / "site"
    result = crack_deploy_pull(config, site, "cam-down", "cam-a")
    assert result.returncode == 1
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("crack-deploy pull:")]
    assert line.startswith("crack-deploy pull: cam-down: ssh failed")
    assert (site / "images" / f"cam-a-{first.uuid}.jpg").is_file()
    assert "1/2 host(s) succeeded" in result.stdout


HOSTILE = """
import io, json, sys, tarfile
import cv2, numpy as np
UUID = "0f0e0d0c-0b0a-4908-8706-050403020100"
EVENT = {"uuid": UUID, "label": "crack", "label_note": None, "labelled_at": None,
         "started_at": "2026-01-01T00:00:00Z", "ended_at": None, "peak_score": 0.9, "bundle_version": "1",
         "device_id": "evil", "frame": "snapshots/20260101/" + UUID + ".jpg", "mask": None}
EVENT.update(json.loads(sys.argv[1]))
if "pull-list" in sys.argv:
    print(json.dumps({"ok": True, "device_id": "evil", "crackd_version": "9", "events": [EVENT]}))
else:
    picture = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name in (EVENT["frame"], "../../escaped.jpg", "/tmp/escaped-absolute.jpg"):
            info = tarfile.TarInfo(name)
            info.size = len(picture)
            tar.addfile(info, io.BytesIO(picture))
    sys.stdout.buffer.write(out.getvalue())
"""


@pytest.mark.parametrize(
    "change, refusal",
    [
        ({"uuid": "../../../escaped"}, "answered an event uuid '../../../escaped', not a uuid"),
        ({"frame": "../../../escaped.jpg"}, "answered a picture path '../../../escaped.jpg'"),
        ({"mask": "/etc/passwd"}, "answered a picture path '/etc/passwd'"),
    ],
)
def test_a_device_answer_naming_a_path_outside_its_place_is_refused(devices, tmp_path, change, refusal):
    _, config = devices
    script = tmp_path / "hostile.py"
    script.write_text(textwrap.dedent(HOSTILE))
    hostile = f"{sys.executable} {script} {json.dumps(json.dumps(change))}"
    site = tmp_path / "lab" / "site"
    result = crack_deploy_pull(config, site, "cam-a", remote_crackd=hostile)
    assert result.returncode == 1
    assert f"crack-deploy pull: cam-a: {refusal}" in result.stderr
    assert [p.name for p in (tmp_path / "lab").rglob("*")] == ["site"]  # nothing taken, nothing written


def test_a_tar_with_unannounced_names_gives_only_the_announced_frame(devices, tmp_path):
    _, config = devices
    script = tmp_path / "hostile.py"
    script.write_text(textwrap.dedent(HOSTILE))
    site = tmp_path / "lab" / "site"
    result = crack_deploy_pull(config, site, "cam-a", remote_crackd=f"{sys.executable} {script} '{{}}'")
    assert result.returncode == 0, result.stdout + result.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [
        "hostile.py",
        "lab/site/images/cam-a-0f0e0d0c-0b0a-4908-8706-050403020100.jpg",
        "lab/site/pulled.jsonl",
    ]
    assert not Path("/tmp/escaped-absolute.jpg").exists()


def test_a_changed_verdict_is_pulled_again_and_a_cut_manifest_line_is_fetched_again(devices, tmp_path):
    states, config = devices
    (event, *_) = events_of(states["cam-b"])
    stem = f"cam-b-{event.uuid}"
    site = tmp_path / "site"
    label(states["cam-b"], event.uuid, "no-crack")
    assert crack_deploy_pull(config, site, "cam-b").returncode == 0
    assert (site / "masks" / f"{stem}.png").is_file()

    label(states["cam-b"], event.uuid, "crack")  # the operator changed their mind: it is a crack after all
    again = crack_deploy_pull(config, site, "cam-b")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 with a changed verdict" in again.stdout
    assert not (site / "masks" / f"{stem}.png").exists()  # the all-zero label this tool wrote is gone
    ours = [e for e in manifest(site) if e["uuid"] == event.uuid]
    assert [e["label"] for e in ours] == ["no-crack", "crack"]

    # A pull killed while appending its last line: that event is fetched again, the cut line dropped.
    text = (site / "pulled.jsonl").read_text()
    (site / "pulled.jsonl").write_text(text[: len(text) - 40])
    third = crack_deploy_pull(config, site, "cam-b")
    assert third.returncode == 0, third.stdout + third.stderr
    lines = (site / "pulled.jsonl").read_text().splitlines()
    assert [json.loads(line)["label"] for line in lines if event.uuid in line] == ["no-crack", "crack"]
    assert len(lines) == len({(e["host"], e["uuid"], e["label"]) for e in map(json.loads, lines)})


def test_a_person_s_mask_is_kept_when_a_false_alarm_becomes_a_crack(devices, tmp_path):
    states, config = devices
    (*_, event) = events_of(states["cam-b"])
    site = tmp_path / "site"
    label(states["cam-b"], event.uuid, "no-crack")
    assert crack_deploy_pull(config, site, "cam-b").returncode == 0
    drawn = site / "masks" / f"cam-b-{event.uuid}.png"
    painted = np.zeros(cv2.imread(str(drawn), cv2.IMREAD_UNCHANGED).shape, np.uint8)
    painted[2:5, 2:9] = 255
    cv2.imwrite(str(drawn), painted)  # a person labelled it in the meantime
    label(states["cam-b"], event.uuid, "crack")
    assert crack_deploy_pull(config, site, "cam-b").returncode == 0
    assert (cv2.imread(str(drawn), cv2.IMREAD_UNCHANGED) == painted).all()


def test_frames_of_a_missed_crack_come_lossless_as_crack_examples_without_a_guess(tmp_path):
    """`crackd events flag-missed` on a daemon keeping PNG frames: pull brings them as images with verdict crack, no
    predicted mask (the model saw nothing) and no all-zero mask (a person paints the crack), their kind recorded."""
    root = tmp_path / "device"
    root.mkdir()
    bundle = root / "bundle"
    shutil.copytree(TEST_BUNDLE, bundle)
    answer = flag_missed_after_a_run(root, bundle, held=2, note="belt 2", storage__frame_format="png")
    state = root / "state"
    (tmp_path / "sshd").mkdir()
    server = start_sshd(tmp_path / "sshd", f"SetEnv CRACKD_STATE_DIR={state}\n")
    try:
        site = tmp_path / "site"
        pulled = crack_deploy_pull(server.config, site, HOST)
    finally:
        server.stop()
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    missed = {e["uuid"]: e for e in manifest(site) if e["kind"] == "missed"}
    assert sorted(missed) == sorted(answer["stored"]) and len(missed) == 2
    for uuid, entry in missed.items():
        (row,) = (e for e in events_of(state) if e.uuid == uuid)
        stem = f"{HOST}-{uuid}"
        assert (entry["label"], entry["label_note"]) == ("crack", "belt 2")
        assert (site / "images" / f"{stem}.png").read_bytes() == (state / row.snapshot).read_bytes()
        assert not (site / "predicted" / f"{stem}.png").exists() and not (site / "masks" / f"{stem}.png").exists()
