"""`crack-train evaluate` and `crack-train sweep`: reports from real TFLite models on small synthetic data sets.

The bundle is the shipped one in models/default (placeholder or trained: nothing here
depends on its scores). The images come from edge.sources.synth, written in the classification
(positive/ negative/) and segmentation (images/ + masks/) layouts people have.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.sources import synth
from tests.helpers import DEFAULT_BUNDLE
from trainer.data.assemble import Splits, save_arrays
from trainer.data.datasets import DatasetError
from trainer.evaluation.evaluate import EvalConfig, curve_from_histograms, evaluate_bundle
from trainer.evaluation.targets import HEADLINE
from trainer.export.metrics import binary_metrics, pixel_metrics, precision_recall_curve, roc_auc
from trainer.export.provenance import read_source_txt
from trainer.reports import markdown as report_md
from trainer.reports import sweep as sweep_report
from trainer.reports.sweep import choose, pareto_front

BUNDLE = DEFAULT_BUNDLE
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SOURCE_TXT = """DATASET: tiny_synth  (test data)
CONTENT: procedurally generated cracks.
LICENCE:
  CC0 for the test,
  continued on a second line.
CITATION: crackd tests (2026).
--- verbatim below ---
LICENCE: not this one
"""


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(3)
    cls = root / "tiny_cls"
    for i in range(4):
        _write(cls / "Positive" / f"p{i}.jpg", synth.generate(rng, 120, 120, crack_probability=1.0).image)
        _write(cls / "Negative" / f"n{i}.jpg", synth.generate(rng, 120, 120, crack_probability=0.0).image)
    (cls / "SOURCE.txt").write_text(SOURCE_TXT)
    seg = root / "tiny_seg"
    for i in range(3):
        s = synth.generate(rng, 256, 256, crack_probability=1.0)
        _write(seg / "images" / f"s{i}.jpg", s.image)
        (seg / "masks").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(seg / "masks" / f"s{i}.png"), s.mask)
    run = root / "runs" / "cls_tiny"
    run.mkdir(parents=True)
    x = np.stack([synth.generate(rng, 96, 96, crack_probability=p).image for p in (1.0, 0.0, 1.0, 0.0, 1.0)])
    save_arrays(
        run / "heldout.npz", Splits(val=[(x[:2], np.array([1, 0]))], test={"tiny_cls": (x, np.array([1, 0, 1, 0, 1]))})
    )
    (run / "run.json").write_text(json.dumps({"kind": "classifier", "holdout": [], "data": [str(cls)]}))
    return {"cls": cls, "seg": seg, "run": run}


@pytest.fixture(scope="module")
def report(folders, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("report")
    cfg = EvalConfig(
        latency_runs=5, latency_warmup=1, in_domain="tiny_cls", cross_surface="tiny_seg", overlay_samples=2
    )
    result = evaluate_bundle(BUNDLE, [folders["cls"], folders["seg"]], [folders["run"]], out, cfg)
    report_md.write(out, result)
    return result, out


def test_report_json_has_every_metric_for_int8_and_fp32_on_every_data_set(report):
    _, out = report
    saved = json.loads((out / "report.json").read_text())
    assert set(saved["classifier"]["datasets"]) == {"tiny_cls", "tiny_seg:patches", "heldout:tiny_cls"}
    assert set(saved["segmenter"]["datasets"]) == {"tiny_seg"}
    for role in ("classifier", "segmenter"):
        for key, entry in saved[role]["datasets"].items():
            for variant in ("int8", "fp32"):
                assert set(HEADLINE[role]) <= set(entry[variant]), (role, key, variant)
            assert set(entry["diff_points"]) <= set(HEADLINE[role])


def test_heldout_run_arrays_are_evaluated_exactly(report):
    result, _ = report
    entry = result["classifier"]["datasets"]["heldout:tiny_cls"]
    assert entry["n"] == 5 and entry["positives"] == 3
    assert entry["int8"]["tp"] + entry["int8"]["fn"] == 3
    assert "cls_tiny" in entry["source"]


def test_crack_patches_are_cut_from_segmentation_folders_for_the_classifier(report):
    result, _ = report
    entry = result["classifier"]["datasets"]["tiny_seg:patches"]
    assert entry["n"] > 0 and 0 < entry["positives"] <= entry["n"]


def test_latency_is_measured_with_the_edge_runtime_on_one_thread(report):
    result, _ = report
    for role in ("classifier", "segmenter"):
        lat = result["latency"][role]["int8"]
        assert lat["threads"] == 1 and lat["runs"] == 5
        assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p95_ms"]


def test_every_target_is_marked_met_not_met_or_not_measured(report):
    result, out = report
    ids = [t["id"] for t in result["targets"]]
    crossval = json.loads(
        (BUNDLE / "crossval.json").read_text()
    )  # the shipped bundle carries its leave-one-out figures
    per_source = [f"segmenter_cross_surface_{r['heldout']}" for r in crossval["segmenter"]]
    assert per_source and ids == [
        "classifier_in_domain",
        "classifier_cross_surface",
        "classifier_cross_surface_balanced",
        *per_source,
        "int8_gap",
        "classifier_latency",
        "segmenter_latency",
    ]
    for t in result["targets"]:
        assert t["met"] in (True, False, None)
        assert t["measured"]
    assert result["targets"][0]["dataset"] == "heldout:tiny_cls"  # held-out numbers come first
    md = (out / "REPORT.md").read_text()
    assert md.count("✅ met") + md.count("❌ not met") + md.count("— not measured") >= len(ids)
    assert "Cross-surface validation (leave one dataset out)" in md


def test_cross_surface_targets_are_read_at_the_bundles_pixel_threshold():
    from trainer.evaluation.targets import _crossval_checks

    curve = [{"threshold": t, "tolerant_f1": f} for t, f in ((0.3, 0.70), (0.4, 0.80), (0.5, 0.74))]
    report = {
        "models": {"segmenter": {"threshold": 0.5}},
        "crossval": {
            "segmenter": [{"run": "loo_a", "heldout": "a", "images": 9, "scales": {"model scale": {"curve": curve}}}]
        },
    }
    (check,) = _crossval_checks(report)
    assert check["id"] == "segmenter_cross_surface_a" and check["value"] == 0.74 and check["met"] is False
    report["models"]["segmenter"]["threshold"] = 0.4
    assert _crossval_checks(report)[0]["met"] is True
    del report["crossval"]  # no leave-one-out runs scored: not measured, never met
    (missing,) = _crossval_checks(report)
    assert missing["met"] is None and missing["measured"] == "not measured" and "crossval.json" in missing["note"]


def test_report_md_embeds_existing_png_plots(report):
    result, out = report
    md = (out / "REPORT.md").read_text()
    plots = [
        p
        for role in ("classifier", "segmenter")
        for e in result[role]["datasets"].values()
        for p in e["plots"].values()
    ]
    kinds = {k for role in ("classifier", "segmenter") for e in result[role]["datasets"].values() for k in e["plots"]}
    assert kinds == {"confusion", "precision_recall", "threshold_sweep", "overlays"}
    for rel in plots:
        data = (out / rel).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, rel
        assert f"]({rel})" in md
    assert "| Data set | Images | Metric | INT8 | FP32 | Difference (points) |" in md


def test_report_md_cites_the_licence_from_source_txt(report):
    _, out = report
    md = (out / "REPORT.md").read_text()
    assert "CC0 for the test, continued on a second line." in md
    assert "crackd tests (2026)." in md
    assert "not this one" not in md


def test_an_empty_dataset_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "positive").mkdir(parents=True)
    with pytest.raises(DatasetError, match="empty"):
        evaluate_bundle(BUNDLE, [tmp_path / "empty"], [], tmp_path / "out", EvalConfig(latency_runs=1))


def test_cli_says_one_line_and_exits_2_without_data(tmp_path, capsys):
    from trainer.cli import main

    assert main(["evaluate", str(BUNDLE), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to evaluate" in err[0]


def test_cli_names_a_missing_bundle(tmp_path, capsys):
    from trainer.cli import main

    assert main(["evaluate", str(tmp_path / "nope"), "--data", str(tmp_path)]) == 2
    assert "no such bundle directory" in capsys.readouterr().err


# ------------------------------------------------------------------ metrics on hand-made cases


def test_binary_metrics_on_a_known_confusion():
    m = binary_metrics(np.array([1, 1, 1, 0, 0, 0]), np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.3]), threshold=0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == m["recall"] == m["f1"] == pytest.approx(2 / 3)
    # of the 9 crack/clean pairs, 0.9 and 0.8 outrank all three clean scores and 0.1 none: 6 ranked right
    assert m["roc_auc"] == pytest.approx(6 / 9)


def test_roc_auc_perfect_reversed_and_tied():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.full(4, 0.5)) == 0.5
    assert np.isnan(roc_auc(np.ones(3), np.ones(3)))


def test_pixel_metrics_on_known_masks():
    true = np.zeros((1, 4, 4), bool)
    true[0, 0, :] = True  # 4 crack pixels
    pred = np.zeros((1, 4, 4), bool)
    pred[0, 0, :2] = True  # 2 found
    pred[0, 3, 0] = True  # 1 false alarm
    m = pixel_metrics(true, pred)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(0.5)
    assert m["dice"] == m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert m["iou"] == pytest.approx(2 / 5)


def test_pixel_threshold_curve_from_histograms_matches_direct_counting():
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 256, (3, 16, 16)) / 256.0
    true = rng.random((3, 16, 16)) < 0.2
    bins = np.clip(np.floor(probs * 100 + 1e-6), 0, 100).astype(int)
    curve = curve_from_histograms(np.bincount(bins[true], minlength=101), np.bincount(bins[~true], minlength=101))
    for j in (0, 25, 50, 73, 100):
        direct = pixel_metrics(true, probs >= j / 100)
        assert curve["f1"][j] == pytest.approx(direct["dice"])
        assert curve["recall"][j] == pytest.approx(direct["recall"])


def test_precision_recall_curve_ends_are_all_positive_and_none():
    c = precision_recall_curve(np.array([1, 0, 1, 0]), np.array([0.9, 0.4, 0.6, 0.2]))
    assert c["recall"][0] == 1.0 and c["precision"][0] == 0.5  # threshold 0: everything is a crack
    assert c["recall"][-1] == 0.0  # threshold 1: nothing is


def test_source_txt_blocks_continue_on_indented_lines(tmp_path):
    (tmp_path / "SOURCE.txt").write_text(SOURCE_TXT)
    f = read_source_txt(tmp_path / "SOURCE.txt")
    assert f["licence"] == "CC0 for the test, continued on a second line."
    assert f["dataset"].startswith("tiny_synth")


# ------------------------------------------------------------------ model selection


def _row(name, ms, q):
    return {
        "name": name,
        "role": "classifier",
        "latency": {"median_ms": ms},
        "quality": {"int8": q, "metric": "f1"} if q is not None else None,
    }


def test_pareto_front_keeps_only_undominated_points():
    assert pareto_front([(1.0, 0.9), (2.0, 0.95), (2.5, 0.93), (0.5, 0.5)]) == [True, True, False, True]


def test_choice_is_the_fastest_near_best_inside_the_budget():
    rows = [_row("slow_best", 3.0, 0.99), _row("fast", 0.4, 0.950), _row("mid", 0.8, 0.953), _row("ok", 0.6, 0.90)]
    pick, why = choose(rows, budget_ms=1.0)
    assert pick["name"] == "fast" and why == ""  # mid is only 0.3 points better: within the tie, the faster one wins
    pick, why = choose(rows, budget_ms=0.1)
    assert pick["name"] == "fast" and "no configuration meets" in why
    pick, why = choose([_row("a", 0.5, None)], budget_ms=1.0)
    assert pick is None and "latency-only" in why


def test_sweep_segmenter_names_match_the_model_builders():
    pytest.importorskip("tensorflow")
    from trainer.evaluation.sweep import SEGMENTER_NAMES
    from trainer.models.architectures import SEGMENTER_SIZES

    assert tuple(SEGMENTER_SIZES) == SEGMENTER_NAMES


def _tiny_trained_run(run_dir: Path) -> None:
    """A run directory as `crack-train classifier` leaves it (an unfitted 32-px model stands in for a trained one)."""
    from trainer.models.architectures import ClassifierSpec, build_classifier

    run_dir.mkdir(parents=True)
    build_classifier(ClassifierSpec(alpha=0.35, size=32)).save(run_dir / "best.keras")
    rng = np.random.default_rng(1)
    x = np.stack([synth.generate(rng, 32, 32, crack_probability=p).image for p in (1.0, 0.0) * 4])
    y = np.array([1, 0] * 4)
    save_arrays(run_dir / "heldout.npz", Splits(val=[(x, y)], test={"synth": (x[:2], y[:2])}))
    (run_dir / "splits.json").write_text(json.dumps({"files": {}}))
    (run_dir / "run.json").write_text(
        json.dumps({"kind": "classifier", "train": {"epochs": 3}, "counts": {"train": 40}})
    )
    (run_dir / "log.csv").write_text("epoch,loss\n0,0.7\n1,0.6\n")


def test_sweep_of_one_tiny_config_writes_a_table_with_latency_and_quality(tmp_path):
    pytest.importorskip("tensorflow")  # builds and converts Keras models
    from trainer.evaluation.sweep import SweepConfig, run_sweep

    _tiny_trained_run(tmp_path / "runs" / "cls_a0.35_s32")
    cfg = SweepConfig(
        alphas=(0.35,),
        sizes=(32,),
        segmenters=(),
        latency_only=True,
        from_runs=str(tmp_path / "runs"),
        calibration_images=4,
        latency_runs=5,
    )
    result = sweep_report.write(tmp_path / "sweep", run_sweep(tmp_path / "sweep", cfg))
    (row,) = result["rows"]
    assert row["name"] == "cls_a0.35_s32" and row["latency"]["median_ms"] > 0 and row["int8_bytes"] > 0
    q = row["quality"]
    assert q["metric"] == "f1" and q["val_images"] == 8 and not q["trained_here"] and q["epochs_completed"] == 2
    assert 0 <= q["int8"] <= 1 and 0 <= q["fp32"] <= 1
    assert result["chosen"]["classifier"]["name"] == "cls_a0.35_s32" and row["on_front"]
    md = (tmp_path / "sweep" / "SWEEP.md").read_text()
    table_row = next(line for line in md.splitlines() if line.startswith("| **cls_a0.35_s32**"))
    assert f"| {row['latency']['median_ms']:.3f} |" in table_row and "2 of 3 epochs" in table_row
    assert "SHORTENED" in md and "cls_a0.35_s32" in md.split("## Choice of the shipped defaults")[1]
    assert (
        "still training" in md
    )  # the run has no history.json yet: its best checkpoint so far was scored, and SWEEP.md says so
    for png in ("sweep_latency.png", "sweep_pareto.png"):
        assert (tmp_path / "sweep" / png).read_bytes()[:8] == PNG_MAGIC
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["rows"][0]["name"] == "cls_a0.35_s32"


def test_a_sweep_that_trains_writes_the_run_files_crack_train_writes(tmp_path):
    """The sweep's own short training leaves a run that export, evaluate and a later sweep can read back."""
    pytest.importorskip("tensorflow")  # builds and converts Keras models
    from trainer.data.assemble import load_arrays
    from trainer.evaluation.sweep import SweepConfig, run_sweep

    cfg = SweepConfig(
        alphas=(0.35,),
        sizes=(32,),
        segmenters=(),
        synth=48,
        train_images=32,
        val_images=8,
        epochs=1,
        batch_size=16,
        calibration_images=4,
        latency_runs=5,
        latency_rounds=1,
    )
    (row,) = run_sweep(tmp_path / "sweep", cfg)["rows"]
    q = row["quality"]
    assert q["trained_here"] and q["schedule"] == {"epochs": 1, "train_images": 32, "shortened": True}
    run_dir = Path(q["run_dir"])
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["kind"] == "classifier" and meta["spec"]["size"] == 32 and meta["sweep"]["shortened"]
    assert meta["counts"]["train"] == 32 and meta["synthetic"] == 48
    _, (val_x, _) = load_arrays(run_dir / "heldout.npz")
    assert (
        len(val_x) == meta["counts"]["val"]
        and (run_dir / "splits.json").is_file()
        and (run_dir / "best.keras").is_file()
    )
