"""`crackd infer` and `crackd bench` as a user runs them (a real subprocess, the real default bundle)."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.synth import generate

REPO = Path(__file__).resolve().parent.parent


def crackd(*args, check=False):
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=check)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(3)
    for i in range(3):
        s = generate(rng, 240, 320, crack_probability=1.0 if i != 1 else 0.0)
        cv2.imwrite(str(folder / f"frame{i}.jpg"), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return folder


def test_json_contract_fields_and_types(image_folder, darkness_bundle):
    out = crackd("infer", "--bundle", str(darkness_bundle), "--segment", "always", "--json", str(image_folder))
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    good = [r for r in rows if "error" not in r]
    assert len(good) == 3
    for r in good:
        assert isinstance(r["path"], str) and isinstance(r["crack"], bool) and isinstance(r["segmented"], bool)
        assert isinstance(r["score"], float) and 0.0 <= r["score"] <= 1.0
        m = r["measurements"]
        for key in ("total_area_px", "area_fraction", "length_px", "max_width_px", "mean_width_px", "count", "components", "bbox"):
            assert key in m
        assert r["timings_ms"]["total"] > 0


def test_unreadable_image_is_reported_and_the_run_continues(image_folder, darkness_bundle):
    out = crackd("infer", "--bundle", str(darkness_bundle), "--json", str(image_folder))
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["path"].endswith("broken.jpg") for r in rows if "error" in r] == [True]
    assert len(rows) == 4
    assert out.returncode == 1


def test_all_good_inputs_exit_zero_with_a_table(image_folder, darkness_bundle):
    out = crackd("infer", "--bundle", str(darkness_bundle), str(image_folder / "frame0.jpg"))
    assert out.returncode == 0
    assert "frame0.jpg" in out.stdout and "score" in out.stdout


def test_mask_dir_and_overlay_outputs(image_folder, darkness_bundle, tmp_path):
    masks, overlays = tmp_path / "masks", tmp_path / "overlays"
    crackd("infer", "--bundle", str(darkness_bundle), "--segment", "always", "--mask-dir", str(masks), "--overlay", str(overlays), str(image_folder))
    for i in range(3):
        mask = cv2.imread(str(masks / f"frame{i}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (240, 320) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        overlay = cv2.imread(str(overlays / f"frame{i}.jpg"))
        assert overlay.shape == (240, 320, 3)
    assert not (masks / "broken.png").exists()


def test_bad_bundle_is_one_line_and_exit_2(tmp_path, image_folder):
    out = crackd("infer", "--bundle", str(tmp_path / "missing"), str(image_folder))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no such bundle directory" in out.stderr


def test_bench_prints_stages_and_efficiency():
    out = crackd("bench", "--frames", "10", "--warmup", "2", "--size", "320x240", "--json", check=True)
    report = json.loads(out.stdout)
    for stage in ("preprocess", "classify", "segment", "measure", "total"):
        assert report["stages_ms"][stage]["median"] >= 0
    assert 0 < report["pipeline_efficiency"] <= 1 and report["peak_rss_mb"] > 10 and report["fps"] > 0


def test_an_image_over_the_pixel_limit_is_reported_from_its_header_and_the_limit_is_an_option(tmp_path, darkness_bundle):
    from test_sources import _huge_header_jpeg

    (tmp_path / "huge.jpg").write_bytes(_huge_header_jpeg(9000, 9000))
    out = crackd("infer", "--bundle", str(darkness_bundle), "--json", str(tmp_path / "huge.jpg"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    (row,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert "9000x9000" in row["error"] and "over the limit of 40 MP" in row["error"]
    out = crackd("infer", "--bundle", str(darkness_bundle), "--json", "--max-image-mpixels", "10", str(tmp_path / "huge.jpg"))
    assert "over the limit of 10 MP" in json.loads(out.stdout.splitlines()[0])["error"]
