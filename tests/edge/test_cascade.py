"""The classifier -> segmenter cascade on real INT8 models with known behaviour (dark pixels = crack)."""

import json
import shutil

import cv2
import numpy as np
import pytest

from edge.engine.bundle import load_bundle
from edge.engine.cascade import Cascade, TilingConfig, tile_grid
from edge.engine.grouping import CrackGrouping
from edge.engine.preprocess import model_input


@pytest.fixture(scope="module")
def bundle(darkness_bundle):
    return load_bundle(darkness_bundle)


def crack_frame(h=480, w=640, p0=(100, 240), p1=(500, 240), width=8):
    img = np.full((h, w, 3), 180, np.uint8)
    cv2.line(img, p0, p1, (15, 15, 15), width)
    return img


CLEAN = np.full((480, 640, 3), 180, np.uint8)


def test_device_input_tensor_equals_trainer_preprocessing_byte_for_byte(bundle):
    """The bytes the cascade writes into the interpreter are the trainer's model_input bytes."""
    frame = crack_frame()
    Cascade(bundle, segment="always").process(frame)
    for model in (bundle.classifier, bundle.segmenter):
        device = model.input_view().copy()
        assert device.tobytes() == model_input(frame, *model.input_hw).tobytes()


def test_on_crack_runs_segmenter_only_for_cracks(bundle):
    cascade = Cascade(bundle, segment="on-crack")
    hit, miss = cascade.process(crack_frame()), cascade.process(CLEAN)
    assert hit.crack and hit.segmented and hit.measurements.count == 1
    assert not miss.crack and not miss.segmented and miss.mask is None and "segment" not in miss.timings_ms


def test_never_mode_skips_segmenter(bundle):
    r = Cascade(bundle, segment="never").process(crack_frame())
    assert r.crack and not r.segmented and r.measurements is None


def test_always_mode_segments_clean_frames_too(bundle):
    r = Cascade(bundle, segment="always").process(CLEAN)
    assert r.segmented and not r.crack and r.measurements.count == 0 and not r.mask.any()


GREY = np.full((480, 640, 3), 130, np.uint8)  # dark enough for the classifier, too light for the segmenter


def test_a_frame_the_classifier_flags_but_the_segmenter_finds_empty_is_no_crack(bundle):
    r = Cascade(bundle, segment="on-crack").process(GREY)
    assert r.score >= 0.5 and r.segmented and r.measurements.count == 0
    assert not r.crack and r.confirmed is False


def test_a_frame_whose_only_crack_is_shorter_than_the_minimum_is_no_crack(bundle):
    frame = crack_frame(p0=(300, 240), p1=(350, 240), width=10)  # measures about 40 px long
    assert Cascade(bundle).process(frame).crack
    short = Cascade(bundle, cracks=CrackGrouping(min_length=0.1)).process(frame)  # 80 px at 640x480
    assert short.score >= 0.5 and short.segmented and not short.crack and short.measurements.count == 0


def test_the_minimum_length_may_be_set_in_pixels_or_in_millimetres(bundle):
    frame = crack_frame(p0=(300, 240), p1=(350, 240), width=10)  # measures about 40 px long
    assert not Cascade(bundle, cracks=CrackGrouping(min_length_px=60)).process(frame).crack
    assert Cascade(bundle, cracks=CrackGrouping(min_length_px=20)).process(frame).crack
    at_tenth_mm = dict(mm_per_pixel=0.1)  # 6 mm = 60 px, 2 mm = 20 px
    assert not Cascade(bundle, cracks=CrackGrouping(min_length_mm=6), **at_tenth_mm).process(frame).crack
    assert Cascade(bundle, cracks=CrackGrouping(min_length_mm=2), **at_tenth_mm).process(frame).crack
    with pytest.raises(ValueError, match=r"cracks\.min_length_mm: a length in millimetres needs the camera's scale"):
        Cascade(bundle, cracks=CrackGrouping(min_length_mm=2))


def test_with_the_segmenter_off_the_classifier_alone_decides(bundle):
    r = Cascade(bundle, segment="never").process(GREY)
    assert r.crack and r.confirmed is None


def test_always_mode_still_needs_the_classifier_gate(bundle):
    frame = crack_frame()
    score = Cascade(bundle).process(frame).score
    r = Cascade(bundle, segment="always", threshold=min(1.0, score + 0.01)).process(frame)
    assert r.confirmed and not r.crack


def test_a_tiled_frame_is_a_crack_only_when_its_stitched_mask_holds_one(bundle):
    grey = np.full((1200, 1600, 3), 130, np.uint8)
    r = Cascade(bundle, tiling=TilingConfig(tile=320, overlap=0.2)).process(grey)
    assert r.crack_tiles == r.tiles and r.segmented and not r.crack


def test_the_gate_is_the_bundles_gate_threshold_when_it_sets_one(darkness_bundle, tmp_path):
    gated = tmp_path / "gated"
    shutil.copytree(darkness_bundle, gated)
    manifest = json.loads((gated / "manifest.json").read_text())
    manifest["models"]["classifier"]["gate_threshold"] = 0.99
    (gated / "manifest.json").write_text(json.dumps(manifest))
    cascade = Cascade(load_bundle(gated))
    assert cascade.threshold == 0.99 and not cascade.process(GREY).segmented
    assert Cascade(load_bundle(gated), threshold=0.5).process(GREY).segmented  # decision.threshold still wins


def test_threshold_override(bundle):
    score = Cascade(bundle).process(crack_frame()).score
    assert not Cascade(bundle, threshold=min(1.0, score + 0.01)).process(crack_frame()).crack


def test_mask_is_frame_sized_and_on_the_crack(bundle):
    r = Cascade(bundle, segment="always").process(crack_frame())
    assert r.mask.shape == (480, 640) and set(np.unique(r.mask)) <= {0, 255}
    ys, xs = np.nonzero(r.mask)
    assert abs(np.median(ys) - 240) <= 6 and xs.min() >= 80 and xs.max() <= 520
    c = r.measurements.components[0]
    assert abs(c.length_px - 400) / 400 < 0.15  # measured on the 64x64 model mask, reported in frame pixels


def test_invalid_segment_mode(bundle):
    with pytest.raises(ValueError, match="segment mode 'sometimes'"):
        Cascade(bundle, segment="sometimes")


def test_tile_grid_covers_the_frame_with_full_size_tiles():
    tiles = tile_grid(1080, 1920, TilingConfig(tile=512, overlap=0.25))
    cover = np.zeros((1080, 1920), bool)
    for x, y, w, h in tiles:
        assert (w, h) == (512, 512) and x + w <= 1920 and y + h <= 1080
        cover[y : y + h, x : x + w] = True
    assert cover.all()


def test_tiling_stitches_masks_back_to_frame_coordinates(bundle):
    """A crack in one corner of a large frame comes back in that corner of the stitched mask."""
    frame = np.full((1200, 1600, 3), 180, np.uint8)
    cv2.line(frame, (1250, 900), (1500, 1100), (15, 15, 15), 6)
    r = Cascade(bundle, tiling=TilingConfig(tile=320, overlap=0.2)).process(frame)
    assert r.tiles == len(tile_grid(1200, 1600, TilingConfig(tile=320, overlap=0.2))) and r.crack_tiles >= 1
    assert r.mask.shape == (1200, 1600)
    ys, xs = np.nonzero(r.mask)
    assert xs.min() >= 1230 and xs.max() <= 1520 and ys.min() >= 880 and ys.max() <= 1120
    x, y, w, h = r.measurements.bbox
    assert abs(x - 1250) < 20 and abs(y - 900) < 20 and abs(x + w - 1500) < 20 and abs(y + h - 1100) < 20


def test_result_dict_is_json_ready(bundle):
    import json

    d = Cascade(bundle, mm_per_pixel=0.1).process(crack_frame()).to_dict()
    json.dumps(d)
    assert d["measurements"]["length_mm"] == pytest.approx(d["measurements"]["length_px"] * 0.1, rel=1e-2)


def test_a_crack_seen_in_fragments_and_specks_counts_as_one_crack(bundle):
    """Default `model.cracks`: fragments a few pixels apart merge, specks a few pixels long are not counted."""
    frame = np.full((240, 320, 3), 180, np.uint8)
    for x in range(40, 280, 36):
        cv2.line(frame, (x, 120), (x + 30, 124), (15, 15, 15), 4)  # a crack broken every 30 px
    for x, y in ((40, 40), (150, 200), (290, 60)):
        cv2.circle(frame, (x, y), 2, (15, 15, 15), -1)  # specks
    split = Cascade(bundle, segment="always", cracks=CrackGrouping(merge_gap=0, min_length=0)).process(frame)
    assert split.measurements.count >= 5  # what the segmenter sees, counted piece by piece
    assert Cascade(bundle, segment="always").process(frame).measurements.count == 1
