"""Overlay labels stay inside the picture and never cover each other (checked on the layout's geometry)."""

import itertools

import numpy as np

from edge.engine.cascade import FrameResult
from edge.engine.measure import measure_mask
from edge.engine.overlay import Rect, draw_overlay, place_labels

HEADER = Rect(0, 0, 215, 16)


def assert_laid_out(rects, width, height):
    for r in rects:
        assert r.inside(width, height), r
        assert not r.overlaps(HEADER), r
    for a, b in itertools.combinations(rects, 2):
        assert not a.overlaps(b), (a, b)


def test_labels_of_crowded_boxes_at_the_right_edge_stay_inside_and_apart():
    boxes = [Rect(300, 10 + 12 * i, 18, 10) for i in range(12)] + [Rect(5, 200, 40, 30), Rect(0, 0, 320, 240)]
    sizes = [[(130, 16), (24, 16)]] * len(boxes)
    placed = place_labels(boxes, sizes, 320, 240, [HEADER])
    rects = [p.rect for p in placed if p is not None]
    assert_laid_out(rects, 320, 240)
    assert placed[0] is not None and placed[0].choice == 0  # the largest crack keeps its full label
    assert sum(p is not None for p in placed) >= 10


def test_a_label_that_fits_nowhere_is_left_out_not_drawn_over_another():
    placed = place_labels([Rect(0, 20, 10, 10)] * 3, [[(100, 20)]] * 3, 100, 40, [Rect(0, 0, 100, 20)])
    assert placed[0] == placed[0] and placed[0].rect == Rect(0, 20, 100, 20)
    assert placed[1:] == [None, None]


def test_overlay_of_many_cracks_at_320x240_draws():
    mask = np.zeros((240, 320), np.uint8)
    for i in range(10):
        mask[20 + 20 * i : 24 + 20 * i, 250:318] = 255
    m = measure_mask(mask)
    result = FrameResult(crack=True, score=0.9, segmented=True, measurements=m, _mask=mask)
    img = draw_overlay(np.full((240, 320, 3), 128, np.uint8), result)
    assert img.shape == (240, 320, 3) and (img != 128).any()


def test_the_header_shortens_to_fit_a_small_frame():
    mask = np.zeros((120, 160), np.uint8)
    mask[60:63, 20:140] = 1
    result = FrameResult(crack=True, score=0.9, segmented=True, measurements=measure_mask(mask), _mask=mask)
    img = draw_overlay(np.full((120, 160, 3), 128, np.uint8), result)
    # The header's black box ends inside the frame: the right-most column of the top rows stays untouched.
    assert (img[2:8, -1] == 128).all()
