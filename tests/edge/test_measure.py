"""Crack measurement on drawn shapes with known answers."""

import math

import cv2
import numpy as np
import pytest

from edge.engine.measure import measure_mask


def band(length=200, width=6, angle_deg=0.0, size=(480, 640)):
    """A straight crack of exact width: a filled rotated rectangle (no round caps)."""
    mask = np.zeros(size, np.uint8)
    box = cv2.boxPoints(((size[1] / 2, size[0] / 2), (length, width), -angle_deg))
    cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 255)
    return mask


def test_straight_line_length_within_3_percent_and_width_within_1px():
    m = measure_mask(band(200, 6))
    assert m.count == 1
    c = m.components[0]
    assert abs(c.length_px - 200) / 200 <= 0.03
    assert abs(c.max_width_px - 6) <= 1.0
    assert abs(c.mean_width_px - 6) <= 1.0


@pytest.mark.parametrize("angle", [30.0, 45.0, 100.0])
def test_diagonal_line_length_and_orientation(angle):
    m = measure_mask(band(200, 5, angle))
    c = m.components[0]
    assert abs(c.length_px - 200) / 200 <= 0.03
    assert abs(c.max_width_px - 5) <= 1.5
    assert min(abs(c.orientation_deg - angle), 180 - abs(c.orientation_deg - angle)) < 2.0


def test_two_separate_cracks_are_two_components():
    mask = np.zeros((480, 640), np.uint8)
    cv2.line(mask, (50, 50), (250, 60), 255, 3)
    cv2.line(mask, (400, 100), (420, 400), 255, 7)
    m = measure_mask(mask)
    assert m.count == 2
    # Sorted by area: the thick one first.
    assert m.components[0].bbox[0] >= 390 and m.components[1].bbox[0] <= 60
    assert m.total_area_px == int(np.count_nonzero(mask))
    assert m.area_fraction == pytest.approx(np.count_nonzero(mask) / mask.size)


def test_small_specks_are_ignored():
    mask = np.zeros((100, 100), np.uint8)
    mask[10, 10] = mask[50:52, 50:52] = 255
    m = measure_mask(mask, min_area_px=12)
    assert m.count == 0 and m.total_area_px == 0 and m.bbox is None


def test_millimetres_from_scale():
    d = measure_mask(band(200, 6), mm_per_pixel=0.5).to_dict()
    assert d["length_mm"] == pytest.approx(d["length_px"] * 0.5, rel=1e-3)
    assert d["max_width_mm"] == pytest.approx(d["max_width_px"] * 0.5, rel=1e-2)
    assert "length_mm" not in measure_mask(band(200, 6)).to_dict()


def test_measuring_a_downscaled_mask_reports_frame_pixels():
    full = band(200, 8)
    small = cv2.resize(full, (320, 240), interpolation=cv2.INTER_NEAREST)
    c = measure_mask(small, frame_size=(640, 480)).components[0]
    assert abs(c.length_px - 200) / 200 <= 0.04
    assert abs(c.max_width_px - 8) <= 2.0
    assert abs(c.centroid[0] - 320) < 2 and abs(c.centroid[1] - 240) < 2


def test_length_of_a_winding_crack_follows_its_drawn_path():
    """A crack that turns (drawn as a thick polyline of known length): within 5 % at frame and model resolution."""
    mask = np.zeros((480, 640), np.uint8)
    path = np.array([(100, 300), (160, 240), (240, 260), (300, 180), (390, 200), (450, 120), (540, 150)], np.int32)
    cv2.polylines(mask, [path], False, 255, 5)
    drawn = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum()) + 5  # plus the round caps
    assert abs(measure_mask(mask).length_px - drawn) / drawn <= 0.05
    small = cv2.resize(mask, (224, 224), interpolation=cv2.INTER_AREA) > 60
    assert abs(measure_mask(small, frame_size=(640, 480)).length_px - drawn) / drawn <= 0.05


def test_a_one_pixel_diagonal_crack_counts_sqrt2_per_step():
    m = measure_mask(np.eye(50, dtype=np.uint8))
    assert m.length_px == pytest.approx(49 * math.sqrt(2), abs=1.5)


def test_mean_width_never_exceeds_max_width_for_the_whole_mask_or_any_crack():
    """A short thick blob: area / length exceeds the deepest width, so the crack's mean is capped at its max.

    The mask-wide mean is the length-weighted mean of the cracks' means (the same definition), so it cannot
    exceed the mask-wide max either (it read 4.97 against 4.33 before)."""
    mask = np.zeros((240, 320), np.uint8)
    cv2.rectangle(mask, (100, 100), (112, 108), 255, -1)  # 13 x 9: area / length > its deepest width
    cv2.line(mask, (10, 200), (300, 210), 255, 2)  # a long thin crack beside it
    m = measure_mask(mask)
    assert m.count == 2
    for c in m.components:
        assert c.mean_width_px <= c.max_width_px + 1e-9
    assert m.mean_width_px <= m.max_width_px + 1e-9
    expected = sum(c.mean_width_px * c.length_px for c in m.components) / m.length_px
    assert m.mean_width_px == pytest.approx(expected)
    single = measure_mask(band(200, 6))
    assert single.mean_width_px == pytest.approx(single.components[0].mean_width_px)


def broken_crack(pieces=6, piece=30, gap=3, width=4):
    """A horizontal crack drawn as `pieces` fragments `piece` px long, `gap` background px apart."""
    mask = np.zeros((240, 320), np.uint8)
    for i in range(pieces):
        x = 20 + i * (piece + gap)
        mask[100 : 100 + width, x : x + piece] = 255
    return mask


def test_fragments_of_one_crack_closer_than_the_merge_gap_are_one_crack():
    mask = broken_crack()
    fragments = measure_mask(mask)
    assert fragments.count == 6
    m = measure_mask(mask, merge_gap_px=4)
    assert m.count == 1
    c = m.components[0]
    assert c.bbox == (20, 100, 6 * 30 + 5 * 3, 4)
    assert c.area_px == 6 * 30 * 4
    assert c.length_px == pytest.approx(fragments.length_px)  # the fragments' length: gaps are not crack
    assert measure_mask(mask, merge_gap_px=2).count == 6  # a gap wider than the tolerance still separates


def test_merge_gap_is_in_frame_pixels_when_measuring_a_downscaled_mask():
    small = cv2.resize(broken_crack(gap=4), (160, 120), interpolation=cv2.INTER_NEAREST)
    assert measure_mask(small, frame_size=(320, 240), merge_gap_px=1).count > 1
    assert measure_mask(small, frame_size=(320, 240), merge_gap_px=5).count == 1


def test_specks_shorter_than_the_minimum_length_are_not_counted():
    mask = band(200, 6, size=(240, 320))
    for x in (20, 60, 280):
        mask[20:24, x : x + 5] = 255  # 20-pixel specks: above min_area_px, a few px long
    assert measure_mask(mask).count == 4
    m = measure_mask(mask, min_length_px=12)
    assert m.count == 1
    assert m.total_area_px == measure_mask(band(200, 6, size=(240, 320))).total_area_px


def test_a_mask_with_more_pieces_than_16_bit_labels_hold_is_measured_right():
    mask = np.zeros((600, 600), np.uint8)
    mask[::2, ::2] = 255  # 90,000 separate specks
    mask[300:306, 100:500] = 255  # and one crack over them
    m = measure_mask(mask, min_area_px=12)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    assert m.count == 1
    assert m.components[0].area_px == stats[labels[302, 300], cv2.CC_STAT_AREA]  # the crack and the specks it touches
