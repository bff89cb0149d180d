"""`crack-train` on inputs it cannot use: one line naming what is wrong and a non-zero exit, never a traceback.

Each case runs crack-train as a user does (a child process) in a Python that cannot import TensorFlow or Keras
(tests/helpers/without_tensorflow.py). That proves the inputs are checked before any model is built or trained, keeps
each case cheap, and runs the same on a device-only install.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import REPO
from tests.helpers.without_tensorflow import env


def crack_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer.cli", *args],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(run: subprocess.CompletedProcess, *expected: str) -> str:
    """The run failed with exit 2 and exactly one stderr line holding every `expected` text."""
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    for text in expected:
        assert text in run.stderr, run.stderr
    return run.stderr


def test_a_device_only_install_is_told_which_extra_to_install(tmp_path):
    run = crack_train("reference-model", "--out", str(tmp_path / "ref.tflite"))
    one_line(run, "crack-train reference-model: tensorflow is not installed", "pip install 'crackd[train]'")


# ------------------------------------------------------------------------------- files the cases are made of

FINETUNE = REPO / "models" / "finetune" / "segmenter.keras"


def write_image(path: Path, size=(64, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(0).integers(0, 255, (*size, 3), np.uint8)
    cv2.imencode(path.suffix, rgb)[1].tofile(str(path))
    return path


def write_mask(path: Path, size=(64, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros(size, np.uint8)
    mask[size[0] // 2 : size[0] // 2 + 3, :] = 255
    cv2.imencode(path.suffix, mask)[1].tofile(str(path))
    return path


def huge_header_png(path: Path) -> Path:
    """A PNG whose header announces 30000x30000 pixels (2.7 GB as RGB) and holds almost nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
    return path


def segmentation_set(root: Path, image=write_image, mask=write_mask, name: str = "a") -> Path:
    """root/images/NAME.jpg + root/masks/NAME.png, made by the given writers."""
    image(root / "images" / f"{name}.jpg")
    mask(root / "masks" / f"{name}.png")
    return root


def cut_short(path: Path) -> None:
    """Keep the first 70 % of a JPEG: OpenCV still decodes it, the rest grey."""
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 7 // 10])


# ------------------------------------------------------------------------------------------- adapt --base


def _base(tmp_path: Path, how: str) -> Path:
    base = tmp_path / "base" / "segmenter.keras"
    base.parent.mkdir()
    if how == "missing":
        return base
    if how == "a directory":
        base.mkdir()
        return base
    meta = json.loads(FINETUNE.with_suffix(".json").read_text())
    base.write_bytes(FINETUNE.read_bytes()[:500] if how == "truncated" else FINETUNE.read_bytes())
    texts = {"not JSON": "{not json", "without spec": json.dumps({"kind": "segmenter"})}
    if how != "without its json":
        base.with_suffix(".json").write_text(texts.get(how, json.dumps(meta)))
    return base


@pytest.mark.parametrize(
    "how,names",
    [
        ("missing", "segmenter.keras"),
        ("a directory", "segmenter.keras"),
        ("without its json", "segmenter.keras"),
        ("not JSON", "segmenter.json: not valid JSON"),
        ("without spec", "segmenter.json: expected {'kind'"),
        ("truncated", "segmenter.keras: not a Keras checkpoint"),
    ],
)
def test_adapt_refuses_a_base_checkpoint_that_is(tmp_path, how, names):
    data = segmentation_set(tmp_path / "site")
    run = crack_train("adapt", "--base", str(_base(tmp_path, how)), "--data", str(data), "--out", str(tmp_path / "r"))
    one_line(run, names)


# ------------------------------------------------------------------------------------------- adapt --data


def _data(tmp_path: Path, how: str) -> tuple[Path, str]:
    """A site folder made `how`, and the file (or folder) the refusal must name."""
    root = tmp_path / "site"
    if how == "missing":
        return tmp_path / "no such site", "no such site: no such dataset folder"
    if how == "of non-images":
        (root / "notes").mkdir(parents=True)
        (root / "readme.txt").write_text("labels to follow\n")
        return root, "site: no class folders found"
    if how == "text named .jpg":
        segmentation_set(root, image=lambda p: p.parent.mkdir(parents=True) or p.write_text("not an image\n"))
        return root, "images/a.jpg: not an image, or corrupt"
    if how == "a JPEG cut short":
        segmentation_set(root)
        cut_short(root / "images" / "a.jpg")
        return root, "images/a.jpg: truncated JPEG"
    if how == "a 1x1 image":
        segmentation_set(root, image=lambda p: write_image(p.with_suffix(".png"), (1, 1)), mask=write_mask)
        return root, "images/a.png: 1x1 pixels, smaller than 32x32"
    if how == "a huge-header PNG":
        segmentation_set(root, image=lambda p: huge_header_png(p.with_suffix(".png")))
        return root, "images/a.png: 30000x30000 pixels (900.0 MP) is over the limit"
    if how == "a huge-header mask":
        segmentation_set(root, mask=huge_header_png)
        return root, "masks/a.png: 30000x30000 pixels"
    if how == "a mask of another shape":
        segmentation_set(root, mask=lambda p: write_mask(p, (32, 48)))
        return root, "masks/a.png: mask is 48x32 but its image is 64x64"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "missing",
        "of non-images",
        "text named .jpg",
        "a JPEG cut short",
        "a 1x1 image",
        "a huge-header PNG",
        "a huge-header mask",
        "a mask of another shape",
    ],
)
def test_adapt_names_the_file_of_a_site_folder(tmp_path, how):
    data, names = _data(tmp_path, how)
    if how not in ("missing", "of non-images"):
        for k in range(3):  # enough good pairs to train on: the bad one must stop the run all the same
            segmentation_set(data, name=f"good{k}")
    run = crack_train("adapt", "--base", str(FINETUNE), "--data", str(data), "--out", str(tmp_path / "run"))
    one_line(run, names)
    assert not (tmp_path / "run").exists()


def test_paths_with_spaces_and_accents_are_named_as_they_are(tmp_path):
    data = segmentation_set(tmp_path / "sité data", name="a b")
    cut_short(data / "images" / "a b.jpg")
    run = crack_train("adapt", "--base", str(FINETUNE), "--data", str(data), "--out", str(tmp_path / "rün"))
    one_line(run, str(data / "images" / "a b.jpg") + ": truncated JPEG")


def test_a_site_folder_too_small_to_split_is_refused_before_training(tmp_path):
    data = segmentation_set(tmp_path / "sité data", name="only one")
    run = crack_train("adapt", "--base", str(FINETUNE), "--data", str(data), "--out", str(tmp_path / "run"))
    one_line(run, "too few images to train on: 0 for training", "sité data: 1")


def test_adapt_refuses_an_out_that_is_a_file(tmp_path):
    (tmp_path / "run").write_text("")
    data = segmentation_set(tmp_path / "site")
    run = crack_train("adapt", "--base", str(FINETUNE), "--data", str(data), "--out", str(tmp_path / "run"))
    one_line(run, f"--out {tmp_path / 'run'}: exists and is not a directory")


# ------------------------------------------------------------------------------------------------ export


def fake_run(run_dir: Path) -> Path:
    """A directory with the files of a finished training run (the checkpoint a zip holding config.json)."""
    run_dir.mkdir(parents=True)
    with zipfile.ZipFile(run_dir / "best.keras", "w") as z:
        z.writestr("config.json", "{}")
    for name in ("run.json", "splits.json"):
        (run_dir / name).write_text("{}")
    (run_dir / "heldout.npz").write_bytes(b"")
    return run_dir


@pytest.mark.parametrize(
    "how,names",
    [
        ("a run that is missing", "--segmenter {t}/nothing: no such run directory"),
        ("a folder that is not a run", "--segmenter {t}/folder: not a finished training run (missing best.keras"),
        ("--keep-from missing", "--keep-from: {t}/nothing: no such bundle directory"),
        ("--keep-from not a bundle", "--keep-from: {t}/folder: no manifest.json"),
        ("--crossval missing", "{t}/nothing.json: no such file"),
        ("--crossval not JSON", "{t}/cv.json: not valid JSON"),
        ("--segmenter-threshold 7", "--segmenter-threshold 7.0: expected a probability between 0 and 1"),
        ("--classifier-gate-threshold 0", "--classifier-gate-threshold 0.0: expected a probability between 0 and 1"),
        ("--sign key missing", "--sign {t}/nothing: no such key file"),
        ("--out a file", "--out {t}/cv.json: exists and is not a directory"),
    ],
)
def test_export_names_what_it_cannot_use_before_converting_anything(tmp_path, how, names):
    t = tmp_path
    (t / "folder").mkdir()
    (t / "cv.json").write_text("{not json")
    args = ["--segmenter", str(fake_run(t / "run")), "--keep-from", str(REPO / "models" / "default")]
    args += ["--out", str(t / "bundle")]
    extra = {
        "a run that is missing": ["--segmenter", str(t / "nothing")],
        "a folder that is not a run": ["--segmenter", str(t / "folder")],
        "--keep-from missing": ["--keep-from", str(t / "nothing")],
        "--keep-from not a bundle": ["--keep-from", str(t / "folder")],
        "--crossval missing": ["--crossval", str(t / "nothing.json")],
        "--crossval not JSON": ["--crossval", str(t / "cv.json")],
        "--segmenter-threshold 7": ["--segmenter-threshold", "7"],
        "--classifier-gate-threshold 0": ["--classifier-gate-threshold", "0"],
        "--sign key missing": ["--sign", str(t / "nothing")],
        "--out a file": ["--out", str(t / "cv.json")],
    }[how]
    run = crack_train("export", *args, *extra)  # a later option replaces an earlier one
    one_line(run, names.format(t=t))
