"""The golden self-test accepts what other kernels legitimately compute and refuses real defects.

Every bundle here is a copy of the shipped one whose manifest pins the changed files' sha256,
so the checksums pass and the golden comparison is what has to catch the change.
"""

import json

import cv2
import numpy as np
import pytest

from edge.engine.bundle import BundleError, load_bundle, sha256_file
from edge.engine.runtime import TFLiteModel
from edge.engine.selftest import CLASSIFIER_SCORE_TOLERANCE, GoldenMismatch, mask_iou, run_golden
from tests.helpers.bundles import swap_golden_segmenter_outputs


def _pin_model(manifest: dict, bundle_dir, role: str) -> None:
    path = bundle_dir / manifest["models"][role]["file"]
    manifest["models"][role]["sha256"] = sha256_file(path)


def _output_bias_offset(model_file) -> int:
    """File offset of the output layer's bias: the one-element int32 constant of a one-output model."""
    content = model_file.read_bytes()
    interpreter = TFLiteModel(model_file)._interpreter
    for t in interpreter.get_tensor_details():
        if np.dtype(t["dtype"]) == np.int32 and list(t["shape"]) == [1]:
            # A flatbuffer buffer's bytes follow their 4-byte length: with it the bias is found even where its four
            # bytes also occur elsewhere in the file.
            raw = (4).to_bytes(4, "little") + interpreter.get_tensor(t["index"]).tobytes()
            if content.count(raw) == 1:
                return content.index(raw) + 4
    raise AssertionError(f"{model_file}: no output bias found")


def _flip_bias_byte(role: str):
    def edit(m, d):
        path = d / m["models"][role]["file"]
        content = bytearray(path.read_bytes())
        content[_output_bias_offset(path) + 2] ^= 0x10  # one bit of one byte: the bias moves by 2**20
        path.write_bytes(bytes(content))
        _pin_model(m, d, role)

    return edit


def _shift_recorded_classifier(sample_index: int, quanta: int):
    def edit(m, d):
        sample = m["golden"]["samples"][sample_index]
        sample["classifier_output"] = int(np.clip(sample["classifier_output"] + quanta, 0, 255))

    return edit


def _mid_range_sample(manifest: dict) -> int:
    """The golden sample whose recorded classifier output is
    farthest from saturation (moves most under other kernels)."""
    outputs = [s["classifier_output"] for s in manifest["golden"]["samples"]]
    return int(np.argmin([abs(o - 128) for o in outputs]))


def test_the_shipped_bundle_passes_with_this_runtime(bundle_copy):
    report = run_golden(load_bundle(bundle_copy))
    assert report.ok, report.as_dict()
    assert all(s.segmenter_mean_abs is not None for s in report.samples)


def test_a_kernel_sized_classifier_difference_passes(make_bundle):
    """XNNPACK's ARM kernels gave 165 where 172 was recorded (7
    quanta); the quanta tolerance of old bundles refused it."""
    manifest = json.loads((make_bundle("probe") / "manifest.json").read_text())
    index = _mid_range_sample(manifest)
    report = run_golden(load_bundle(make_bundle("arm-like", edit=_shift_recorded_classifier(index, -7))))
    assert report.ok, report.as_dict()
    assert report.samples[index].classifier_max_diff == 7


def test_a_classifier_score_off_by_more_than_the_tolerance_fails(make_bundle):
    manifest = json.loads((make_bundle("probe") / "manifest.json").read_text())
    index = _mid_range_sample(manifest)
    quanta = int(CLASSIFIER_SCORE_TOLERANCE * 256) + 8
    shift = quanta if manifest["golden"]["samples"][index]["classifier_output"] < 128 else -quanta
    report = run_golden(load_bundle(make_bundle("off", edit=_shift_recorded_classifier(index, shift))))
    assert not report.ok and not report.samples[index].ok
    with pytest.raises(GoldenMismatch, match="classifier score"):
        report.raise_for_failures()


@pytest.mark.parametrize("role", ["classifier", "segmenter"])
def test_a_flipped_bit_in_a_weight_byte_fails(make_bundle, role):
    report = run_golden(load_bundle(make_bundle(f"flip-{role}", edit=_flip_bias_byte(role))))
    assert not report.ok
    with pytest.raises(GoldenMismatch, match=role):
        report.raise_for_failures()


def test_images_fed_as_bgr_instead_of_rgb_fail(make_bundle):
    """Wrong preprocessing: the golden images reach the models with red and blue swapped."""

    def swap_channels(m, d):
        for s in m["golden"]["samples"]:
            path = d / s["image"]
            cv2.imwrite(str(path), cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])
            s["sha256"], s["bytes"] = sha256_file(path), path.stat().st_size

    report = run_golden(load_bundle(make_bundle("bgr", edit=swap_channels)))
    assert not report.ok, report.as_dict()


def test_a_truncated_model_is_refused(make_bundle):
    def truncate(m, d):
        path = d / m["models"]["segmenter"]["file"]
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        _pin_model(m, d, "segmenter")

    with pytest.raises(BundleError, match="segmenter"):
        run_golden(load_bundle(make_bundle("truncated", edit=truncate)))


def test_recorded_segmenter_maps_of_other_images_fail_on_mask_overlap(make_bundle):
    report = run_golden(load_bundle(make_bundle("swapped", edit=lambda m, d: swap_golden_segmenter_outputs(m))))
    assert not report.ok
    assert any("IoU" in p or "segmenter" in p for s in report.samples for p in s.problems)


def test_mask_iou_ignores_near_empty_masks_and_measures_overlap():
    a = np.zeros((100, 100), bool)
    b = a.copy()
    a[0, :10] = True
    assert mask_iou(a, b) is None
    a[:, :50] = True
    b[:, 25:75] = True
    assert mask_iou(a, b) == pytest.approx(2500 / 7500)
