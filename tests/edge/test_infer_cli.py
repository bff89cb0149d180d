"""`crackd infer` and `crackd bench` as a user runs them (a real subprocess, the real default bundle)."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge.cli.infer import min_length_option
from edge.engine.runtime import XNNPACK_NOTICE, TFLiteModel
from edge.sources.synth import generate
from tests.helpers import REPO
from tests.helpers.cli import run_module

# Any TFLite model can be the bench's reference; tests use the shipped classifier (an INT8 MobileNetV2 as well)
# instead of the 224x224 reference, which takes half a minute to make.
SMALL_REFERENCE = REPO / "models" / "default" / "classifier.tflite"


def crackd(*args, check=False):
    return run_module("edge.cli", *args, timeout=120, check=check)


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
        for key in (
            "total_area_px",
            "area_fraction",
            "length_px",
            "max_width_px",
            "mean_width_px",
            "count",
            "components",
            "bbox",
        ):
            assert key in m
        assert r["timings_ms"]["total"] > 0


def test_crack_is_false_when_the_segmenter_finds_nothing_and_the_classifier_alone_decides_with_it_off(
    tmp_path, darkness_bundle
):
    grey = tmp_path / "grey.png"  # dark enough for the darkness classifier, too light for its segmenter
    cv2.imwrite(str(grey), np.full((48, 64, 3), 130, np.uint8))
    (gated,) = map(
        json.loads, crackd("infer", "--bundle", str(darkness_bundle), "--json", str(grey)).stdout.splitlines()
    )
    assert gated["score"] >= 0.5 and gated["segmented"] and gated["measurements"]["count"] == 0
    assert gated["crack"] is False
    off = crackd("infer", "--bundle", str(darkness_bundle), "--segment", "never", "--json", str(grey))
    assert json.loads(off.stdout)["crack"] is True


@pytest.mark.parametrize(
    ("text", "option"),
    [("0.05", {"min_length": 0.05}), ("20px", {"min_length_px": 20.0}), (" 2.5 MM", {"min_length_mm": 2.5})],
)
def test_min_crack_length_takes_a_diagonal_fraction_pixels_or_millimetres(text, option):
    assert min_length_option(text) == option


@pytest.mark.parametrize("text", ["1.5", "-3px", "twomm", "nan", "5 cm"])
def test_a_min_crack_length_that_is_no_length_is_refused_naming_the_forms(text):
    with pytest.raises(ValueError, match=r"--min-crack-length .*: expected a fraction .* \(20px\) .* \(2mm"):
        min_length_option(text)


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
    crackd(
        "infer",
        "--bundle",
        str(darkness_bundle),
        "--segment",
        "always",
        "--mask-dir",
        str(masks),
        "--overlay",
        str(overlays),
        str(image_folder),
    )
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


def test_bench_reference_ratios_are_stage_medians_over_the_reference_median():
    out = crackd(
        "bench",
        "--frames",
        "6",
        "--warmup",
        "1",
        "--size",
        "320x240",
        "--reference",
        str(SMALL_REFERENCE),
        "--reference-runs",
        "4",
        "--json",
        check=True,
    )
    report = json.loads(out.stdout)
    ref = report["reference"]
    assert (
        ref["input_shape"] == [1, *TFLiteModel(SMALL_REFERENCE).input.shape[1:]]
        and ref["runtime"] == report["runtime"]
        and ref["threads"] == report["threads"]
    )
    assert ref["before"]["runs"] == 4 and ref["after"]["runs"] == 4 and ref["median_ms"] > 0
    ratios = report["relative_to_reference"]
    for stage, figures in report["stages_ms"].items():
        assert ratios[stage] == pytest.approx(figures["median"] / ref["median_ms"], rel=1e-9)
    assert ratios["crack_frame"] == ratios["total"]
    assert ratios["no_crack_frame"] == pytest.approx(report["no_crack_frame_ms"]["median"] / ref["median_ms"], rel=1e-9)


def test_bench_table_shows_the_reference_multiples():
    out = crackd(
        "bench",
        "--frames",
        "3",
        "--warmup",
        "0",
        "--size",
        "320x240",
        "--reference",
        str(SMALL_REFERENCE),
        "--reference-runs",
        "2",
        check=True,
    )
    assert "x reference" in out.stdout and "crack frame" in out.stdout and "no-crack frame" in out.stdout


def test_bench_without_reference_has_no_ratios():
    report = json.loads(
        crackd("bench", "--frames", "3", "--warmup", "0", "--size", "160x120", "--json", check=True).stdout
    )
    assert "relative_to_reference" not in report and report["no_crack_frame_ms"]["median"] > 0


def test_bench_zero_frames_is_one_line_and_exit_2():
    out = crackd("bench", "--frames", "0")
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "--frames 0" in out.stderr


def test_bench_missing_reference_is_one_line_and_exit_2(tmp_path):
    out = crackd("bench", "--frames", "2", "--reference", str(tmp_path / "nope.tflite"))
    assert (
        out.returncode == 2
        and out.stderr.strip().count("\n") == 0
        and "nope.tflite: no such reference model file" in out.stderr
    )


def test_bench_reference_that_is_not_a_model_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 8)
    out = crackd("bench", "--frames", "2", "--reference", str(bad))
    assert (
        out.returncode == 2
        and out.stderr.strip().splitlines()[-1].startswith("crackd: error:")
        and "bad.tflite" in out.stderr
    )


def test_an_image_over_the_pixel_limit_is_reported_from_its_header_and_the_limit_is_an_option(
    tmp_path, darkness_bundle
):
    from tests.helpers.frames import huge_header_jpeg

    (tmp_path / "huge.jpg").write_bytes(huge_header_jpeg(9000, 9000))
    out = crackd("infer", "--bundle", str(darkness_bundle), "--json", str(tmp_path / "huge.jpg"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    (row,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert "9000x9000" in row["error"] and "over the limit of 40 MP" in row["error"]
    out = crackd(
        "infer", "--bundle", str(darkness_bundle), "--json", "--max-image-mpixels", "10", str(tmp_path / "huge.jpg")
    )
    assert "over the limit of 10 MP" in json.loads(out.stdout.splitlines()[0])["error"]


def test_the_runtime_s_xnnpack_notice_is_not_printed(image_folder):
    """LiteRT's C++ "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." used to open every command's output."""
    out = crackd("infer", str(image_folder / "frame0.jpg"))
    assert out.returncode == 0, out.stderr
    assert "XNNPACK" not in out.stderr and out.stderr == ""


def test_native_stderr_written_during_a_model_load_gets_through_without_the_notice():
    """Only the notice is dropped: an error or warning the runtime prints meanwhile reaches stderr, in order."""
    code = (
        "import os\n"
        "from edge.engine.runtime import XNNPACK_NOTICE, _without_notice\n"
        "with _without_notice():\n"
        "    os.write(2, b'ERROR: a real problem\\n' + XNNPACK_NOTICE + b'WARNING: another\\n')\n"
        "os.write(2, XNNPACK_NOTICE)\n"  # once seen, nothing is filtered any more
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stderr == "ERROR: a real problem\nWARNING: another\n" + XNNPACK_NOTICE.decode()


def test_bench_times_a_stream_of_real_frames_through_the_bundles_gate(tmp_path):
    folder = tmp_path / "surfaces"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for i in range(3):  # two crack-free surfaces and one cracked frame, at other sizes than the bench's
        frame = generate(rng, 90 + 10 * i, 120, crack_probability=1.0 if i == 2 else 0.0).image
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")
    out = crackd(
        "bench", "--frames", "6", "--warmup", "0", "--size", "160x120", "--stream", str(folder),
        "--reference", str(SMALL_REFERENCE), "--reference-runs", "2", "--json", check=True,
    )  # fmt: skip
    report = json.loads(out.stdout)
    stream = report["stream"]
    assert stream["distinct_frames"] == 3 and stream["frames"] == 6 and 0.0 <= stream["segmented_share"] <= 1.0
    assert report["relative_to_reference"]["stream_mean"] == pytest.approx(
        stream["mean_ms"] / report["reference"]["median_ms"], rel=1e-9
    )


def test_bench_stream_of_an_empty_folder_is_one_line_and_exit_2(tmp_path):
    out = crackd("bench", "--frames", "2", "--stream", str(tmp_path))
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "no images there" in out.stderr
