"""The debounce state machine: a crack passing the camera is one event (start, updates, end), not fifty alerts."""

from __future__ import annotations

import pytest

from edge.events.decision import END, START, UPDATE, Decision, DecisionParams, FrameObservation


def feed(decision: Decision, scores, t0: float = 1000.0, dt: float = 0.1, measurements=None, confirmed=None):
    """Observe one frame per score; returns all records with the index of the frame that produced them.

    `confirmed`: per frame, whether the segmenter measured a crack (None: it did not run)."""
    out = []
    for i, score in enumerate(scores):
        m = measurements(i) if measurements else None
        c = confirmed[i] if confirmed else None
        for r in decision.observe(FrameObservation(seq=i + 1, t=t0 + i * dt, score=score, measurements=m, confirmed=c)):
            out.append((i, r))
    return out


def params(**kw):
    base = dict(threshold=0.5, hysteresis=0.1, start_k=2, start_n=3, end_m=3, update_interval_s=0.0)
    base.update(kw)
    return DecisionParams(**base)


def test_an_event_starts_when_k_of_the_last_n_frames_are_cracks():
    records = feed(Decision(params()), [0.9, 0.1, 0.9, 0.1, 0.1, 0.1])
    assert [(i, r.kind) for i, r in records] == [(2, START), (5, END)]
    start = records[0][1]
    assert start.first_frame_seq == 1 and start.frames == 2
    assert start.started_at == pytest.approx(1000.0)


def test_a_single_blip_starts_nothing():
    assert feed(Decision(params()), [0.1, 0.95, 0.1, 0.1, 0.1, 0.95, 0.1, 0.1]) == []


def test_hysteresis_keeps_a_wobbling_score_in_one_event():
    # 0.45 is below the 0.5 threshold but above threshold - hysteresis: the event continues.
    records = feed(Decision(params()), [0.9, 0.9, 0.45, 0.42, 0.45, 0.9, 0.45, 0.2, 0.2, 0.2])
    assert [r.kind for _, r in records if r.kind != UPDATE] == [START, END]
    end = records[-1][1]
    assert end.frames == 7 and end.end_reason == "clear"


def test_frames_the_segmenter_found_no_crack_in_start_no_event():
    assert feed(Decision(params()), [0.9] * 6, confirmed=[False] * 6) == []


def test_an_event_starts_on_the_frames_the_segmenter_confirmed():
    records = feed(Decision(params()), [0.9] * 5, confirmed=[False, False, True, False, True])
    (start,) = [r for _, r in records]
    assert start.kind == START and start.first_frame_seq == 3 and start.frames == 2


def test_while_open_a_frame_the_segmenter_finds_empty_counts_as_clear():
    # frames in the hysteresis band the segmenter did not look at (None) keep the event open; refuted ones do not
    confirmed = [True, True, None, False, False, False]
    records = feed(Decision(params()), [0.9, 0.9, 0.45, 0.9, 0.9, 0.9], confirmed=confirmed)
    assert [(i, r.kind) for i, r in records] == [(1, START), (5, END)]
    assert records[-1][1].frames == 3


def test_an_event_ends_after_m_consecutive_clear_frames():
    records = feed(Decision(params(end_m=4)), [0.9, 0.9, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1])
    kinds = [(i, r.kind) for i, r in records if r.kind != UPDATE]
    assert kinds == [(1, START), (9, END)]
    assert records[-1][1].ended_at == pytest.approx(1000.5)  # time of the last crack frame


def test_every_event_gets_its_own_uuid_and_records_share_it():
    d = Decision(params())
    records = feed(d, [0.9, 0.9, 0.1, 0.1, 0.1] * 3)
    starts = [r for _, r in records if r.kind == START]
    ends = [r for _, r in records if r.kind == END]
    assert len(starts) == len(ends) == 3
    assert len({r.uuid for r in starts}) == 3
    assert [r.uuid for r in starts] == [r.uuid for r in ends]


def test_the_largest_measurements_are_kept_and_announced_as_updates():
    areas = [10, 50, 30, 80, 20, 0, 0, 0]
    d = Decision(params())
    records = feed(
        d,
        [0.9, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1],
        measurements=lambda i: {"total_area_px": areas[i], "length_px": areas[i] / 2},
    )
    kinds = [r.kind for _, r in records]
    assert kinds == [START, UPDATE, END]  # the peak improved once after the start (area 80 at frame 4)
    start, update, end = (r for _, r in records)
    assert start.peak_measurements["total_area_px"] == 50 and start.peak_frame_seq == 2
    assert update.peak_measurements["total_area_px"] == 80 and update.peak_frame_seq == 4
    assert end.peak_measurements["total_area_px"] == 80
    assert [r.revision for r in (start, update, end)] == [0, 1, 2]


def test_updates_are_rate_limited():
    d = Decision(params(update_interval_s=1.0))
    scores = [0.6 + 0.01 * i for i in range(30)] + [0.0] * 3  # the peak improves on every frame, 0.1 s apart
    updates = [r for _, r in feed(d, scores) if r.kind == UPDATE]
    assert 2 <= len(updates) <= 3


def test_flush_ends_the_open_event_for_a_shutdown():
    d = Decision(params())
    feed(d, [0.9, 0.9, 0.9])
    assert d.active is not None
    (record,) = d.flush(2000.0)
    assert record.kind == END and record.end_reason == "shutdown"
    assert d.active is None and d.flush(2001.0) == []


def test_new_thresholds_apply_without_losing_the_open_event():
    d = Decision(params())
    feed(d, [0.9, 0.9])
    uuid = d.active
    d.set_params(params(threshold=0.95, hysteresis=0.0, end_m=1))
    (record,) = d.observe(FrameObservation(seq=10, t=1010.0, score=0.9))
    assert record.kind == END and record.uuid == uuid


def test_params_are_checked():
    with pytest.raises(ValueError, match="k <= n"):
        DecisionParams(threshold=0.5, start_k=4, start_n=3)
