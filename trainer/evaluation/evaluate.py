"""Evaluate a model bundle: INT8 (what the device runs) against the FP32 reference, on real images.

The INT8 models are loaded through the device's own bundle loader (`edge.engine.bundle.load_bundle`,
which verifies checksums and the full-integer graph) and fed through the device's own
preprocessing (`edge.engine.preprocess.model_input`). The FP32 references (`reference/*.fp32.tflite`)
go through the same path. Results go to `report.json` and PNG plots; `trainer.reports.markdown.write` turns the
returned report into `REPORT.md`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge import __version__
from edge.engine.bundle import ChecksumMismatch, Manifest, ModelFileMissing, load_bundle, read_manifest, sha256_file
from edge.engine.preprocess import model_input, resize_mask
from edge.engine.runtime import TFLiteModel
from trainer.data.datasets import DatasetError
from trainer.evaluation import plots as report_plots
from trainer.evaluation.json_safe import dumps, json_safe
from trainer.evaluation.latency import machine_description, measure_models
from trainer.evaluation.sets import EvalSet, folder_sets, heldout_sets, training_data
from trainer.evaluation.targets import HEADLINE, check_targets
from trainer.export.metrics import binary_metrics, pixel_metrics, precision_recall_curve, tolerant_metrics
from trainer.export.predict import model_outputs
from trainer.export.provenance import bundle_runs, bundle_sources, data_folders, source_entry

log = logging.getLogger("crack-train.evaluate")

ROLES = ("classifier", "segmenter")
CURVE_THRESHOLDS = np.linspace(0.0, 1.0, 101)
PLOTS_DIR = "plots"


@dataclass(frozen=True)
class EvalConfig:
    limit: int | None = None  # at most N images per class (classification folders) / per set (others)
    latency_runs: int = 100
    latency_warmup: int = 10
    latency_rounds: int = (
        3  # interleaved timing rounds; the lowest-median round counts (robust to bursts of other load)
    )
    timing_priority: str = (
        "normal"  # "realtime": time under SCHED_FIFO so other jobs do not inflate the numbers (needs root)
    )
    seed: int = 0
    in_domain: str = "metu_cls"  # data set of the "F1 >= 0.99 on METU-style patches" target
    cross_surface: str = "sut_seg"  # data set of the cross-surface target
    overlay_samples: int = 4
    runtime: str = "auto"
    suite_frames: int = 0  # frames per procedural test suite (trainer.evaluation.suites); 0: no suites
    compare_with: str | None = None  # a previous bundle scored on the same suite frames, for a table of deltas
    suite_negatives: tuple[str, ...] = ()  # folders of real crack-free photographs scored beside the suites


@dataclass
class RoleModels:
    """One role's models: 'int8' (the bundle's) and, when the bundle carries it, 'fp32' (the reference)."""

    role: str
    threshold: float
    models: dict[str, TFLiteModel]
    files: dict[str, str] = field(default_factory=dict)


def load_models(bundle_dir: Path, runtime: str = "auto") -> tuple[Manifest, dict[str, RoleModels], list[str]]:
    """Verify and load the bundle (INT8, one thread) and its FP32 references; returns (manifest, models, notes)."""
    bundle = load_bundle(bundle_dir, runtime=runtime, threads=1)
    manifest = bundle.manifest
    notes, roles = [], {}
    for role in ROLES:
        entry = manifest.models[role]
        models = {"int8": getattr(bundle, role)}
        files = {"int8": entry.file}
        ref = entry.raw.get("reference") or {}
        ref_path = Path(bundle_dir) / ref["file"] if ref.get("file") else None
        if ref_path is None:
            notes.append(f"The bundle has no FP32 reference for the {role}; only INT8 is reported.")
        elif not ref_path.is_file():
            raise ModelFileMissing(f"{ref_path}: the {role}'s FP32 reference named in the manifest is missing")
        else:
            if ref.get("sha256") and sha256_file(ref_path) != ref["sha256"]:
                raise ChecksumMismatch(f"{ref_path}: sha256 does not match the manifest's reference.sha256")
            models["fp32"] = TFLiteModel(ref_path, runtime=runtime, threads=1)
            files["fp32"] = ref["file"]
        roles[role] = RoleModels(role, entry.threshold, models, files)
    return manifest, roles, notes


def evaluate_classifier(s: EvalSet, rm: RoleModels, progress=None) -> dict:
    """Per variant: binary metrics at the bundle threshold, the P/R/F1-vs-threshold curve and the scores."""
    labels = np.asarray(s.targets).astype(np.int32).reshape(-1)
    result = {}
    for variant, model in rm.models.items():
        scores = np.array([o.reshape(-1)[0] for o in model_outputs(model, s.images, progress, f"{s.key} {variant}")])
        result[variant] = {
            "metrics": binary_metrics(labels, scores, rm.threshold),
            "curve": precision_recall_curve(labels, scores, CURVE_THRESHOLDS),
            "scores": scores,
        }
    return result


@dataclass
class SegOutcome:
    """A segmenter variant's result on one set: masks at the model resolution and pixel-probability histograms."""

    masks: np.ndarray  # N x h x w bool, ground truth at the model input size
    preds: np.ndarray  # N x h x w bool, P(crack) >= threshold
    pos_hist: np.ndarray  # crack pixels per probability percentile bin (floor(p*100), 0..100)
    neg_hist: np.ndarray

    def metrics(self) -> dict:
        """Pixel precision/recall/Dice/IoU, plus false alarms: the share of crack-free pixels marked crack, and how many
        crack-free images got any crack pixel (the numbers that matter on a set without cracks)."""
        negatives = ~self.masks
        clean = ~self.masks.reshape(len(self.masks), -1).any(axis=1)
        flagged = self.preds.reshape(len(self.preds), -1).any(axis=1)
        return {
            **pixel_metrics(self.masks, self.preds),
            **tolerant_metrics(self.masks, self.preds),
            "false_alarm_pixel_rate": float((self.preds & negatives).sum() / max(1, negatives.sum())),
            "clean_images": int(clean.sum()),
            "clean_images_flagged": int((clean & flagged).sum()),
        }

    def curve(self) -> dict:
        return curve_from_histograms(self.pos_hist, self.neg_hist)


def curve_from_histograms(pos_hist: np.ndarray, neg_hist: np.ndarray) -> dict:
    """Pixel precision / recall / Dice at thresholds 0.00..1.00 from per-percentile pixel counts."""
    tp = np.cumsum(pos_hist[::-1])[::-1].astype(np.float64)  # pixels with p >= t, t = j / 100
    fp = np.cumsum(neg_hist[::-1])[::-1].astype(np.float64)
    fn = pos_hist.sum() - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        dice = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 1.0)
    return {
        "threshold": CURVE_THRESHOLDS.tolist(),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": dice.tolist(),
    }


def evaluate_segmenter(s: EvalSet, rm: RoleModels, progress=None) -> dict[str, SegOutcome]:
    """Per variant: predicted masks at the model's input size against the true masks resized with `resize_mask`."""
    h, w = rm.models["int8"].input_hw
    masks = np.stack([resize_mask(np.asarray(m, np.uint8), h, w) for m in s.targets]).astype(bool)
    result = {}
    for variant, model in rm.models.items():
        preds = np.zeros(masks.shape, bool)
        pos, neg = np.zeros(101, np.int64), np.zeros(101, np.int64)
        for i, out in enumerate(model_outputs(model, s.images, progress, f"{s.key} {variant}")):
            p = out[..., 0]
            preds[i] = p >= rm.threshold
            bins = np.clip(np.floor(p * 100 + 1e-6), 0, 100).astype(np.int64)
            pos += np.bincount(bins[masks[i]], minlength=101)
            neg += np.bincount(bins[~masks[i]], minlength=101)
        result[variant] = SegOutcome(masks, preds, pos, neg)
    return result


def pooled(outcomes: list[dict[str, SegOutcome]]) -> dict[str, SegOutcome]:
    """One outcome per variant over several sets (pixels pooled, as for a single set)."""
    return {
        v: SegOutcome(
            np.concatenate([o[v].masks for o in outcomes]),
            np.concatenate([o[v].preds for o in outcomes]),
            np.sum([o[v].pos_hist for o in outcomes], axis=0),
            np.sum([o[v].neg_hist for o in outcomes], axis=0),
        )
        for v in outcomes[0]
    }


def overlay_indices(masks: np.ndarray, n: int) -> list[int]:
    """Samples for the overlay grid: cracks of varied size, plus one crack-free image when the set has any."""
    crack = np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1))
    clean = np.flatnonzero(~masks.reshape(len(masks), -1).any(axis=1))
    if not len(crack):
        return [
            int(clean[i]) for i in np.unique(np.linspace(0, len(clean) - 1, min(n, len(clean))).round().astype(int))
        ]
    k = min(len(crack), n - (1 if len(clean) else 0))
    chosen = [int(crack[i]) for i in np.unique(np.linspace(0, len(crack) - 1, k).round().astype(int))] if k > 0 else []
    if len(clean) and len(chosen) < n:
        chosen.append(int(clean[0]))
    return chosen


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _diff_points(metrics: dict, keys: tuple[str, ...]) -> dict:
    if "fp32" not in metrics:
        return {}
    return {
        k: (metrics["int8"][k] - metrics["fp32"][k]) * 100.0
        for k in keys
        if np.isfinite(metrics["int8"][k]) and np.isfinite(metrics["fp32"][k])
    }


def _set_entry(s: EvalSet, **extra) -> dict:
    return {"source": s.source, "unseen": s.unseen, "heldout": s.heldout, "n": int(len(s.targets)), **extra}


def _classifier_report(s: EvalSet, rm: RoleModels, plots: Path, progress) -> dict:
    res = evaluate_classifier(s, rm, progress)
    metrics = {v: r["metrics"] for v, r in res.items()}
    curves = {v: r["curve"] for v, r in res.items()}
    title = f"classifier on {s.key}"
    stem = f"classifier_{_slug(s.key)}"
    files = {
        "confusion": report_plots.confusion_matrices(metrics, title, plots / f"{stem}_confusion.png"),
        "precision_recall": report_plots.precision_recall(curves, title, plots / f"{stem}_pr.png"),
        "threshold_sweep": report_plots.threshold_sweep(curves, rm.threshold, title, plots / f"{stem}_threshold.png"),
    }
    best = {v: _best_threshold(c) for v, c in curves.items()}
    return _set_entry(
        s,
        positives=int(np.sum(s.targets)),
        **metrics,
        diff_points=_diff_points(metrics, HEADLINE["classifier"]),
        best_f1_threshold=best,
        plots={k: str(p.relative_to(plots.parent)) for k, p in files.items()},
    )


def _best_threshold(curve: dict) -> dict:
    i = int(np.argmax(curve["f1"]))
    return {"threshold": curve["threshold"][i], "f1": curve["f1"][i]}


def _segmenter_report(
    key: str,
    s: EvalSet | None,
    outcome: dict[str, SegOutcome],
    rm: RoleModels,
    plots: Path,
    cfg: EvalConfig,
    entry: dict,
) -> dict:
    metrics = {v: o.metrics() for v, o in outcome.items()}
    curves = {v: o.curve() for v, o in outcome.items()}
    title = f"segmenter on {key}"
    stem = f"segmenter_{_slug(key)}"
    masks = outcome["int8"].masks
    no_cracks = not masks.any()  # precision/recall/Dice mean nothing here; the false-alarm numbers do
    files = {}
    if not no_cracks:
        files["threshold_sweep"] = report_plots.threshold_sweep(
            curves, rm.threshold, title, plots / f"{stem}_threshold.png", f1_label="Dice"
        )
    if s is not None:
        h, w = rm.models["int8"].input_hw
        idx = overlay_indices(outcome["int8"].masks, cfg.overlay_samples)
        if idx:
            images = np.stack([model_input(s.images[i], h, w) for i in idx])
            preds = {v: o.preds[idx] for v, o in outcome.items()}
            dice = {v: [pixel_metrics(outcome[v].masks[i], outcome[v].preds[i])["dice"] for i in idx] for v in outcome}
            files["overlays"] = report_plots.overlay_grid(
                images,
                outcome["int8"].masks[idx],
                preds,
                dice,
                f"{title}: image | true mask | predicted",
                plots / f"{stem}_overlays.png",
            )
    return {
        **entry,
        "crack_pixel_fraction": float(masks.mean()) if masks.size else 0.0,
        "no_cracks": no_cracks,
        "images_with_cracks": int(masks.reshape(len(masks), -1).any(axis=1).sum()),
        **metrics,
        "diff_points": {} if no_cracks else _diff_points(metrics, HEADLINE["segmenter"]),
        "best_f1_threshold": {} if no_cracks else {v: _best_threshold(c) for v, c in curves.items()},
        "plots": {k: str(p.relative_to(plots.parent)) for k, p in files.items()},
    }


def collect_sets(
    manifest_raw: dict, sizes: dict[str, int], data: list, heldout_runs: list, cfg: EvalConfig, progress=None
) -> list[EvalSet]:
    """Every set to evaluate: held-out splits of the given runs first, then the given folders."""
    trained = {role: training_data(manifest_raw, role) for role in ROLES}
    bundle_run_names = {role: trained[role].runs for role in ROLES}
    sets: list[EvalSet] = []
    for run_dir in heldout_runs:
        for s in heldout_sets(run_dir, bundle_run_names, cfg.limit, cfg.seed):
            if any(o.role == s.role and o.key == s.key for o in sets):
                s.key = f"{s.key}@{Path(run_dir).name}"
            sets.append(s)
    for folder in data:
        for s in folder_sets(folder, sizes, trained, cfg.limit, cfg.seed, progress):
            if any(o.role == s.role and o.key == s.key for o in sets):
                s.key = f"{s.key}@{Path(folder).parent.name}"
            sets.append(s)
    return sets


def evaluate_bundle(
    bundle_dir: str | Path,
    data: Sequence = (),
    heldout_runs: Sequence = (),
    out_dir: str | Path | None = None,
    cfg: EvalConfig = EvalConfig(),
    progress=None,
) -> dict:
    """Evaluate `bundle_dir` on the given folders / held-out runs; write report.json and plots to `out_dir`
    (default: the bundle directory) and return the report."""
    bundle_dir = Path(bundle_dir)
    read_manifest(bundle_dir)  # a clear BundleError before anything heavy happens
    if not data and not heldout_runs:
        raise DatasetError(
            "nothing to evaluate: give --data DIR (dataset folders) and/or --heldout-from RUN_DIR (training runs); "
            "the procedural test suites alone: crack-train suites BUNDLE"
        )
    suite_cfg = None
    if cfg.suite_frames:  # checked now, scored after the data sets: a bad option costs a second, not an evaluation
        from trainer.evaluation.suites import SuiteConfig, check_config

        suite_cfg = SuiteConfig(frames=cfg.suite_frames, runtime=cfg.runtime, negatives=cfg.suite_negatives)
        check_config(suite_cfg)
        if cfg.compare_with:
            read_manifest(Path(cfg.compare_with))
    manifest, roles, notes = load_models(bundle_dir, cfg.runtime)
    out_dir = Path(out_dir) if out_dir is not None else bundle_dir
    plots = out_dir / PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    sizes = {role: roles[role].models["int8"].input_hw[0] for role in ROLES}
    sets = collect_sets(manifest.raw, sizes, list(data), list(heldout_runs), cfg, progress)

    report: dict[str, Any] = {
        "bundle": {
            "path": str(bundle_dir),
            "version": manifest.bundle_version,
            "created": manifest.created,
            "manifest_sha256": sha256_file(bundle_dir / "manifest.json"),
        },
        "generated": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "generated_by": f"crack-train evaluate {__version__}",
        "config": asdict(cfg),
        "variants": {role: sorted(roles[role].models) for role in ROLES},
        "models": {
            role: {
                "threshold": roles[role].threshold,
                "input_size": list(roles[role].models["int8"].input_hw),
                "files": roles[role].files,
                "architecture": manifest.models[role].raw.get("architecture", {}),
                "bytes": (bundle_dir / manifest.models[role].file).stat().st_size,
            }
            for role in ROLES
        },
        "classifier": {"datasets": {}},
        "segmenter": {"datasets": {}},
        "notes": notes,
    }
    seg_outcomes: dict[str, list] = {"heldout": [], "folders": []}
    for s in sets:
        rm = roles[s.role]
        log.info("evaluating the %s on %s (%d images)", s.role, s.key, len(s.targets))
        if s.role == "classifier":
            report["classifier"]["datasets"][s.key] = _classifier_report(s, rm, plots, progress)
        else:
            outcome = evaluate_segmenter(s, rm, progress)
            seg_outcomes["heldout" if s.heldout else "folders"].append((s, outcome))
            report["segmenter"]["datasets"][s.key] = _segmenter_report(s.key, s, outcome, rm, plots, cfg, _set_entry(s))
    for group, items in seg_outcomes.items():
        if len(items) > 1:
            key = f"{group}:all"
            unseen = [s.unseen for s, _ in items]
            label = {"heldout": "held-out", "folders": "folder"}[group]
            entry = {
                "source": f"all {label} segmentation sets, pixels pooled: " + ", ".join(s.key for s, _ in items),
                "unseen": True
                if all(u is True for u in unseen)
                else False
                if any(u is False for u in unseen)
                else None,
                "heldout": group == "heldout",
                "n": int(sum(len(s.targets) for s, _ in items)),
            }
            report["segmenter"]["datasets"][key] = _segmenter_report(
                key, None, pooled([o for _, o in items]), roles["segmenter"], plots, cfg, entry
            )

    timed = measure_models(
        {f"{role}/{variant}": m for role in ROLES for variant, m in roles[role].models.items()},
        cfg.latency_runs,
        cfg.latency_warmup,
        cfg.timing_priority,
        cfg.latency_rounds,
        progress,
    )
    report["latency"] = {
        role: {variant: timed[f"{role}/{variant}"].as_dict() for variant in roles[role].models} for role in ROLES
    }
    report["machine"] = machine_description()
    if suite_cfg is not None:
        from trainer.evaluation.suites import run_suites

        report["suites"] = run_suites(bundle_dir, out_dir, suite_cfg, cfg.compare_with, progress)
    crossval = bundle_dir / "crossval.json"
    if crossval.is_file():  # written by `crack-train crossval` into the bundle directory
        report["crossval"] = json.loads(crossval.read_text())
    report["targets"] = check_targets(report, cfg.in_domain, cfg.cross_surface)
    training = {str(Path(d).resolve()) for d in data_folders(manifest.raw)}
    report["provenance"] = {
        "training": bundle_sources(manifest.raw),
        "runs": bundle_runs(manifest.raw),
        "evaluation": [source_entry(Path(d).resolve()) for d in data if str(Path(d).resolve()) not in training],
    }
    report = json_safe(report)
    (out_dir / "report.json").write_text(dumps(report))
    log.info("wrote %s", out_dir / "report.json")
    return report
