"""The procedural test suites: frames with exact masks, never drawn from a training seed, and the report on a bundle.

The generator needs numpy and OpenCV only; the report runs the device's cascade with real TFLite models (the shipped
bundle, and the darkness test bundle as the "previous" one) on a handful of frames.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge.engine.measure import measure_mask
from edge.sources import synth
from tests.helpers import DEFAULT_BUNDLE, TEST_BUNDLE
from trainer.data import domain
from trainer.evaluation.suite_frames import (
    FRAME_SIZES,
    HAIRLINE_CONTRAST,
    HAIRLINE_MAX_DEPTH,
    SUITES,
    frame_seed,
    suite_frames,
    suite_pair,
)
from trainer.evaluation.suites import FrameScore, border_band, check_suite_targets, suite_metrics

PAIRS = 3  # pairs per suite the generator tests look at


@pytest.fixture(scope="module")
def pairs() -> dict[str, list]:
    return {suite: [suite_pair(suite, k) for k in range(PAIRS)] for suite in SUITES}


def test_every_suite_alternates_crack_free_frames_and_cracked_twins(pairs):
    for suite, items in pairs.items():
        for k, (free, cracked) in enumerate(items):
            assert (free.index, cracked.index) == (2 * k, 2 * k + 1)
            assert not free.cracked and cracked.cracked
            assert free.image.shape == (*FRAME_SIZES[suite], 3) and free.image.dtype == np.uint8
            assert free.mask.shape == FRAME_SIZES[suite]
            assert not free.mask.any(), f"{suite} {free.index}: a crack-free frame has crack pixels in its mask"
            assert cracked.mask.sum() >= 20, f"{suite} {cracked.index}: {cracked.mask.sum()} crack pixels"
    assert [f.index for f in suite_frames("markings", 5)] == [0, 1, 2, 3, 4]


def test_a_cracked_twin_differs_from_its_crack_free_frame_exactly_at_the_crack_mask(pairs):
    for suite, items in pairs.items():
        for free, cracked in items:
            changed = (free.image != cracked.image).any(axis=2)
            assert np.array_equal(changed, cracked.mask.astype(bool)), f"{suite} {cracked.index}"
            assert (cracked.image.astype(int) <= free.image.astype(int)).all(), "a crack only darkens"


def test_hairlines_are_1_to_3_px_wide_and_5_to_20_grey_levels_dark(pairs):
    for free, cracked in pairs["hairlines"]:
        m = cracked.mask.astype(bool)
        # 1-3 px across, as the device measures a crack's width (area over length).
        width = measure_mask(m, None, 1, (m.shape[1], m.shape[0])).mean_width_px
        assert abs(width - cracked.crack_width) <= 0.5, (cracked.index, cracked.crack_width, width)
        drop = (free.image.astype(int) - cracked.image.astype(int)).max(axis=2)[m]
        low, high = HAIRLINE_CONTRAST
        assert cracked.crack_width in (1, 2, 3) and low <= cracked.crack_contrast <= high
        assert drop.max() <= cracked.crack_contrast + 1  # +1: rounding to uint8
        assert abs(np.median(drop) - cracked.crack_contrast) <= 1


def test_the_same_frame_is_the_same_bytes_every_time_and_frames_differ():
    for suite in SUITES:
        a, b = suite_pair(suite, 7), suite_pair(suite, 7)
        for x, y in zip(a, b):
            assert x.image.tobytes() == y.image.tobytes() and x.mask.tobytes() == y.mask.tobytes()
        assert a[1].image.tobytes() != suite_pair(suite, 8)[1].image.tobytes()


def test_suite_seeds_are_none_a_training_generator_draws_from():
    # The training generators seed with plain integers (`default_rng(seed)`, seed + small offsets): an empty spawn
    # key. Every suite seed has a spawn key, and none of its states equals an integer seed's.
    training = {tuple(np.random.SeedSequence(s).generate_state(4)) for s in range(20000)}
    assert np.random.default_rng(0).bit_generator.seed_seq.spawn_key == ()  # type: ignore[attr-defined]
    for suite in SUITES:
        for pair in range(50):
            for part in range(3):
                seq = frame_seed(suite, pair, part)
                assert seq.spawn_key, (suite, pair, part)
                assert tuple(seq.generate_state(4)) not in training, (suite, pair, part)


def test_suite_parameters_lie_outside_the_training_generators(pairs):
    # Training samples are square; suite frames never are.
    assert all(h != w for h, w in FRAME_SIZES.values())
    assert (
        synth.generate(np.random.default_rng(0)).image.shape[0]
        == synth.generate(np.random.default_rng(0)).image.shape[1]
    )
    # Training cracks other than its hairlines take away at least 35 % of the surface's brightness; the suite's
    # hairlines take away less. (Training's own hairlines are shallow too, drawn by another generator and seeds.)
    shallowest = min(synth.CRACK_CONTRAST[0], domain.CRACK_DEPTH[0])
    assert shallowest > HAIRLINE_MAX_DEPTH
    for free, cracked in pairs["hairlines"]:
        m = cracked.mask.astype(bool)
        surface = free.image.astype(float).mean(axis=2)[m]
        drop = (free.image.astype(float) - cracked.image.astype(float)).mean(axis=2)[m]
        assert drop.mean() / surface.mean() < shallowest


def test_an_unknown_suite_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown suite 'roads'; expected one of part_edges, hairlines, markings"):
        suite_pair("roads", 0)


# ------------------------------------------------------------------ scoring


def test_the_border_band_is_the_outer_3_percent_of_each_side():
    band = border_band(100, 200, 0.03)
    assert band[0].all() and band[:, 0].all() and band[-1].all() and band[:, -1].all()
    assert not band[3:97, 6:194].any() and band[2, 100] and band[50, 5]


def _score(index: int, cracked: bool, crack: bool, false_px: int, border: int, counts=(0, 0, 0, 0)) -> FrameScore:
    return FrameScore(index, cracked, crack, crack, crack, false_px, border, counts, counts)


def test_suite_metrics_count_false_crack_frames_border_share_and_tolerant_recall():
    scores = [
        _score(0, False, True, 100, 80),
        _score(1, True, True, 0, 0, (8, 10, 6, 12)),
        _score(2, False, False, 0, 0),
        _score(3, True, False, 20, 0, (0, 20, 0, 8)),
    ]
    m = suite_metrics(scores, 0.116)
    assert m["cascade_false_crack_rate"] == 0.5 and m["cascade_false_crack_frames"] == 1
    assert m["gate_false_open_rate"] == 0.5 and m["gate_recall"] == 0.5
    assert m["border_false_share"] == 80 / 120
    assert m["segmenter_tolerant_recall"] == 6 / 20 and m["segmenter_tolerant_precision"] == 8 / 30
    assert m["cascade_crack_frame_recall"] == 0.5
    checks = check_suite_targets({"part_edges": {"metrics": m}})
    assert [c["met"] for c in checks] == [False, False, None, None]


def test_crack_train_suites_reports_every_suite_worst_frames_and_deltas_against_a_previous_bundle(tmp_path, capsys):
    from trainer.cli import main

    out = tmp_path / "suites"
    negatives = _classification_folder(tmp_path / "metu", 3)
    args = ["suites", str(DEFAULT_BUNDLE), "--out", str(out), "--suite-frames", "4"]
    assert main([*args, "--compare-with", str(TEST_BUNDLE), "--negatives", str(negatives)]) == 0
    section = json.loads((out / "suites.json").read_text())
    assert set(section["suites"]) == {*SUITES, "negatives_metu"}
    for suite in SUITES:
        entry = section["suites"][suite]
        assert entry["metrics"]["crack_free_frames"] == 2 and entry["metrics"]["cracked_frames"] == 2
        for path in entry["plots"].values():
            assert (out / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The real crack-free photographs: the negative class only, all of them (fewer than --suite-frames).
    assert section["suites"]["negatives_metu"]["metrics"]["crack_free_frames"] == 3
    assert section["suites"]["negatives_metu"]["metrics"]["cracked_frames"] == 0
    assert section["compare_with"]["version"] == "1.0.0-test"
    assert set(section["compare_with"]["deltas"]) == {*SUITES, "negatives_metu"}
    md = (out / "SUITES.md").read_text()
    shipped = json.loads((DEFAULT_BUNDLE / "manifest.json").read_text())["bundle_version"]
    assert f"Procedural test suites (bundle {shipped})" in md and "Against bundle 1.0.0-test" in md
    hairlines = section["suites"]["hairlines"]["recall_by_crack"]
    assert sum(r["frames"] for r in hairlines if r["cracks"].endswith("px wide")) == 2
    assert sum(r["frames"] for r in hairlines if r["cracks"].endswith("grey levels darker")) == 2
    assert "| hairlines | 5-10 grey levels darker |" in md or "| hairlines | 10-15 grey levels darker |" in md
    assert md.count("✅ met") + md.count("❌ not met") + md.count("— not measured") == 4
    assert "SUITES.md" in capsys.readouterr().out


def test_crack_train_suites_names_a_missing_previous_bundle(tmp_path, capsys):
    from trainer.cli import main

    args = ["suites", str(TEST_BUNDLE), "--out", str(tmp_path), "--suite-frames", "2", "--compare-with", "nope"]
    assert main(args) == 2
    assert "nope" in capsys.readouterr().err


def _classification_folder(root, n: int):
    rng = np.random.default_rng(5)
    for label, p in (("positive", 1.0), ("negative", 0.0)):
        (root / label).mkdir(parents=True)
        for i in range(n):
            image = synth.generate(rng, 64, 64, crack_probability=p).image
            cv2.imwrite(str(root / label / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return root


def test_evaluate_puts_the_suites_into_report_md(tmp_path):
    from trainer.evaluation.evaluate import EvalConfig, evaluate_bundle
    from trainer.reports import markdown as report_md

    cls = _classification_folder(tmp_path / "cls", 2)
    cfg = EvalConfig(latency_runs=2, latency_warmup=1, latency_rounds=1, suite_frames=2)
    report = evaluate_bundle(TEST_BUNDLE, [cls], [], tmp_path / "out", cfg)
    assert set(report["suites"]["suites"]) == set(SUITES)
    md = report_md.write(tmp_path / "out", report).read_text()
    assert "## Procedural test suites (bundle 1.0.0-test)" in md


def test_crossval_gets_the_suites_beside_its_leave_one_out_figures(tmp_path):
    from trainer.evaluation.crossval import render as render_crossval
    from trainer.evaluation.suites import SuiteConfig, run_suites
    from trainer.reports.suites import add_to_crossval

    crossval = {"segmenter": [], "classifier": [], "plots": {}}  # what run_crossval wrote
    (tmp_path / "crossval.json").write_text(json.dumps(crossval))
    (tmp_path / "CROSSVAL.md").write_text(render_crossval(crossval))
    add_to_crossval(tmp_path, run_suites(TEST_BUNDLE, tmp_path, SuiteConfig(frames=2, suites=("hairlines",))))
    saved = json.loads((tmp_path / "crossval.json").read_text())
    assert set(saved["suites"]["suites"]) == {"hairlines"} and saved["segmenter"] == []
    md = (tmp_path / "CROSSVAL.md").read_text()
    assert md.startswith("# Cross-surface validation") and "## Procedural test suites (bundle 1.0.0-test)" in md


def test_a_bad_suite_option_is_refused_before_the_evaluation_runs(tmp_path, capsys):
    from trainer.cli import main

    cls = _classification_folder(tmp_path / "cls", 1)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    assert main(["evaluate", str(TEST_BUNDLE), "--data", str(cls), "--out", str(out), "--suite-frames", "1"]) == 2
    assert "--suite-frames: expected at least 2" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                str(TEST_BUNDLE),
                "--data",
                str(cls),
                "--out",
                str(out),
                "--negatives",
                str(tmp_path / "empty"),
            ]
        )
        == 2
    )
    assert f"{tmp_path / 'empty'}: no crack-free images" in capsys.readouterr().err
    assert not (out / "report.json").exists()
