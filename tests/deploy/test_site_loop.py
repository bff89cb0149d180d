"""The site loop end to end: `crack-train site pull | label | adapt | push` against a real device behind a real sshd.

The device is a state directory where a real daemon recorded crack events (the darkness test bundle over drawn
frames) and where a tiny trained bundle, signed, is then installed and served by a running `crackd run`. An
operator's verdicts are set in its journal; masks written into SITE/masks stand in for the person labelling.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from edge.config import config_from_dict
from edge.events.journal import Journal
from edge.layout import StateLayout
from tests.helpers import REPO, TEST_BUNDLE, write_frames
from tests.helpers.daemon import BLOCK, InProcess, daemon_dict
from tests.helpers.device import Device
from tests.helpers.releases import version_of
from tests.helpers.sshd import HOST, SSHD

pytest.importorskip("tensorflow")  # adapt and export: absent on a device-only install (pip install .[edge])
pytestmark = pytest.mark.skipif(
    not SSHD.exists() or os.geteuid() != 0 or not shutil.which("ssh"),
    reason="needs OpenSSH's sshd and root (sshd runs as root on a loopback port)",
)

REMOTE_CRACKD = f"env PYTHONPATH={REPO} {sys.executable} -m edge.cli"
TOY = ["--size", "32", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8"]


def crack_train(*args: str) -> None:
    from trainer.cli import main

    assert main(list(args)) == 0


def site_step(*args: str) -> str:
    """`crack-train site ARGS` as the technician runs it; its output (the step's summary) is returned."""
    out = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "site", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def tiny_base_bundle(root: Path, key: Path) -> Path:
    """A tiny trained, signed bundle with its fine-tuning checkpoints published (root/finetune)."""
    data = root / "synth"
    crack_train("synth", "--out", str(data), "--n", "24", "--size", "64", "--seed", "3")
    crack_train("classifier", "--data", str(data), "--alpha", "0.35", *TOY, "--out", str(root / "cls"))
    crack_train("segmenter", "--data", str(data), *TOY, "--out", str(root / "seg"))
    bundle = root / "base"
    crack_train(
        "export",
        *("--classifier", str(root / "cls"), "--segmenter", str(root / "seg"), "--out", str(bundle)),
        *("--version", "0.0.1-base", "--tolerance", "1.0", "--calibration-images", "8"),
        *("--finetune-dir", str(root / "finetune"), "--sign", str(key)),
    )
    return bundle


def test_a_site_is_pulled_labelled_adapted_and_pushed_and_the_device_serves_it(sshd, signer_keys, tmp_path):
    device_root = tmp_path / "device"
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 6)  # six crack events
    InProcess(config_from_dict(daemon_dict(device_root, TEST_BUNDLE, frames, None))).wait_finished()
    with Journal(StateLayout(device_root / "state").default_db) as journal:
        events = journal.list_events(newest_first=False)
        assert len(events) == 6
        for event in events[:5]:
            journal.set_label(event.uuid, "crack")
        journal.set_label(events[5].uuid, "no-crack")  # a false alarm: a crack-free example
    base = tiny_base_bundle(tmp_path / "train", signer_keys.trusted)
    device = Device(device_root, base, signer_keys)  # now serving the tiny base bundle
    try:
        site, name = tmp_path / "sites" / "line-7", "line-7"
        where = ["--site-dir", str(site)]

        out = site_step("pull", name, HOST, *where, "-F", str(sshd.config), "--remote-crackd", REMOTE_CRACKD,
                        "--remote-config", str(device.config))  # fmt: skip
        assert f"new events: 6 ({HOST}: 6)" in out and "crack: 5, no-crack: 1" in out
        assert "6 frames: 1 labelled (0 with cracks, 1 crack-free), 5 waiting for a mask" in out

        out = site_step("label", name, *where)
        assert (site / "labelling" / "task.zip").is_file() and "5 waiting for a mask" in out
        for predicted in sorted((site / "predicted").glob("*.png")):  # the person confirms the device's masks
            if not (site / "masks" / predicted.name).exists():
                shutil.copy(predicted, site / "masks" / predicted.name)
        assert "6 labelled (5 with cracks, 1 crack-free), 0 waiting" in site_step("status", name, *where)

        out = site_step(
            "adapt", name, *where, "--base-bundle", str(base), "--finetune", str(tmp_path / "train" / "finetune" /
            "segmenter.keras"), "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--domain", "8",
            "--crop", "32", "--calibration-images", "8", "--tolerance", "1.0", "--sign", str(signer_keys.trusted),
            "--force",
        )  # fmt: skip
        state = json.loads((site / "site.json").read_text())
        bundle = Path(state["bundle"])
        version = version_of(bundle)
        assert version.startswith(f"0.0.1-base-{name}-") and f"site bundle: {bundle}" in out
        assert "trained on 6 labelled frames" in out
        # The base published classifier.keras beside segmenter.keras: adapted too, its gate chosen and exported.
        (cls_run,) = (site / "runs").glob("adapt-*/classifier")
        cls_report = json.loads((cls_run / "adapt.json").read_text())
        gate = cls_report["classifier"]["gate_threshold"]
        assert f"classifier on {cls_report['images']['held_out']} held-out site images" in out
        assert f"classifier gate {gate}," in out
        site_classifier = json.loads((bundle / "manifest.json").read_text())["models"]["classifier"]
        base_classifier = json.loads((base / "manifest.json").read_text())["models"]["classifier"]
        assert site_classifier["gate_threshold"] == gate and site_classifier["sha256"] != base_classifier["sha256"]

        out = site_step("push", name, *where, "--timeout", "30", "--settle", "1", "--who", "tester@bench")
        assert f"bundle {version} ({bundle}) to {HOST}: every device serves it" in out
        device.wait_serving(version)
        status = subprocess.run(
            [sys.executable, "-m", "edge.cli", "models", "status", "--config", str(device.config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert "base:     0.0.1-base" in status.stdout and f"site:     {name}," in status.stdout
        assert json.loads((site / "site.json").read_text())["pushed"][-1]["ok"]
        assert cv2.imread(str(site / "adapt" / name / "masks" / f"{HOST}-{events[0].uuid}.png")) is not None
    finally:
        device.stop()
