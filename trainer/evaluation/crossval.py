"""Leave-one-dataset-out validation: how the models do on a surface they were not trained on.

In-domain validation rewards learning "this dataset"; an inspection line points the
camera at *its* surface. Each run given here was trained with `--holdout SOURCE`;
this module converts it to INT8 exactly as export does (calibrated on the run's own
training files) and scores it on every image of the held-out source:

- segmenter: tolerant F1 (2 px) and Dice at pixel thresholds 0.10-0.97, at the
  model's scale and at half scale (the frame shown as a 2x2 mosaic, as a camera
  further away would see it), and the max of both (two-scale inference, twice the cost);
- classifier: F1 and balanced accuracy at thresholds 0.05-0.95, and the high-recall gate: the
  highest threshold that passes at least GATE_RECALL of each held-out source's cracked samples.

The thresholds of a bundle are chosen here, on surfaces the models never saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.engine.runtime import TFLiteModel
from trainer.export.metrics import binary_metrics, pixel_metrics, tolerant_counts, tolerant_from_counts
from trainer.export.predict import predict

SEG_THRESHOLDS = np.round(np.append(np.arange(0.10, 0.96, 0.05), 0.97), 2)
CLS_THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)
GATE_RECALL = 0.98  # the device segments what the gate passes: a crack it drops is never seen again
SCALES = ("model scale", "half scale", "two scales (max)")


@dataclass
class HeldOut:
    run: Path
    role: str
    source: str  # the held-out folder's name
    sets: dict  # set name -> (images, targets)


def heldout_of(run_dir: Path) -> HeldOut:
    """The held-out sets of a leave-one-out run (every test set named after a held-out folder)."""
    from trainer.data.assemble import load_arrays

    meta = json.loads((run_dir / "run.json").read_text())
    holdout = [Path(h).name for h in meta.get("holdout", [])]
    if not holdout:
        raise ValueError(f"{run_dir}: not a leave-one-dataset-out run (train it with --holdout SOURCE)")
    tests, _ = load_arrays(run_dir / "heldout.npz")
    sets = {k: v for k, v in tests.items() if k.split("_whole")[0] in holdout}
    return HeldOut(run_dir, meta["kind"], "+".join(holdout), sets)


def int8_of(run_dir: Path, calibration_images: int = 120, seed: int = 0) -> bytes:
    """The run's best checkpoint converted exactly as `crack-train export` converts it."""
    from trainer.export.convert import calibration_set, convert_int8, load_checkpoint

    model = load_checkpoint(run_dir)
    size = int(model.input_shape[1])
    return convert_int8(model, calibration_set(run_dir, size, calibration_images, seed))


def half_scale(model: TFLiteModel, images: np.ndarray) -> np.ndarray:
    """P(crack) with each image shown at half scale (a 2x2 mosaic of itself), brought back to full size."""
    h, w = model.input_hw
    out = []
    for img in images:
        small = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        mosaic = np.tile(small, (2, 2, 1))
        p = predict(model, [mosaic])[0, : h // 2, : w // 2, 0]
        out.append(cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR))
    return np.stack(out)


def segmenter_scores(probs: np.ndarray, masks: np.ndarray) -> dict:
    """Tolerant F1 / precision / recall and Dice at every threshold of SEG_THRESHOLDS (pixels pooled)."""
    rows = []
    for t in SEG_THRESHOLDS:
        preds = probs >= t
        counts = np.array([tolerant_counts(m, p) for m, p in zip(masks, preds)], np.int64)
        rows.append(
            {"threshold": float(t), **tolerant_from_counts(counts), "dice": pixel_metrics(masks, preds)["dice"]}
        )
    return {"curve": rows}


def per_image_tolerant_f1(probs: np.ndarray, masks: np.ndarray, threshold: float) -> np.ndarray:
    return np.array(
        [
            tolerant_from_counts(np.array(tolerant_counts(m, p >= threshold)))["tolerant_f1"]
            for m, p in zip(masks, probs)
        ]
    )


def evaluate_segmenter_run(run_dir: Path, progress=print) -> tuple[dict, dict]:
    """(scores, arrays for plots) of one leave-one-out segmenter run on its held-out source."""
    ho = heldout_of(run_dir)
    progress(f"segmenter {run_dir.name}: converting to INT8 and scoring on held-out {ho.source}")
    model = TFLiteModel(content=int8_of(run_dir))
    images = np.concatenate([x for x, _ in ho.sets.values()])
    masks = np.concatenate([y for _, y in ho.sets.values()]).astype(bool)
    full = predict(model, images)[..., 0]
    half = half_scale(model, images)
    result: dict[str, Any] = {"run": run_dir.name, "heldout": ho.source, "images": int(len(images)), "scales": {}}
    for name, probs in zip(SCALES, (full, half, np.maximum(full, half))):
        result["scales"][name] = segmenter_scores(probs, masks)
    return result, {"images": images, "masks": masks, "probs": full}


def evaluate_classifier_run(run_dir: Path, progress=print, tflite: Path | None = None) -> dict:
    """Score the run's classifier (or `tflite`: an INT8 model
    trained with the same held-out source) on its held-out sets."""
    ho = heldout_of(run_dir)
    if tflite is None:
        progress(f"classifier {run_dir.name}: converting to INT8 and scoring on held-out {ho.source}")
        model = TFLiteModel(content=int8_of(run_dir))
    else:
        progress(f"classifier {tflite}: scoring on the held-out {ho.source} sets of {run_dir.name}")
        model = TFLiteModel(tflite)
    result: dict[str, Any] = {
        "run": run_dir.name,
        "model": str(tflite) if tflite else "the run's best checkpoint",
        "heldout": ho.source,
        "sets": {},
    }
    all_scores, all_labels = [], []
    for name, (x, y) in ho.sets.items():
        scores = predict(model, x).reshape(len(x), -1)[:, 0]
        rows = []
        for t in CLS_THRESHOLDS:
            rows.append(binary_metrics(y, scores, float(t)))
        result["sets"][name] = {"images": int(len(x)), "cracks": int(np.sum(y)), "curve": rows}
        all_scores.append(scores)
        all_labels.append(np.asarray(y).reshape(-1))
    # The gate is chosen per source (all its sets pooled): each source counts once, however many sets it has.
    result["gate_curve"] = gate_curve(np.concatenate(all_scores), np.concatenate(all_labels))
    return result


def gate_curve(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray = CLS_THRESHOLDS) -> list[dict]:
    """At each threshold: the share of cracked samples the gate passes (recall) and of crack-free ones
    (what the segmenter will run on without need)."""
    s = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    rows = []
    for t in thresholds:
        passed = s >= t
        rows.append(
            {
                "threshold": float(t),
                "recall": float(np.mean(passed[y])) if y.any() else None,
                "crack_free_passing": float(np.mean(passed[~y])) if (~y).any() else None,
            }
        )
    return rows


def choose_gate(curves: dict[str, list[dict]], recall: float = GATE_RECALL) -> dict:
    """The classifier gate threshold: the highest one whose recall is at least `recall` on EVERY source
    (the minimum over sources of each one's highest qualifying threshold). A source where no threshold
    qualifies gets the lowest threshold of its curve and is reported as a miss (`met` false)."""
    sources: dict[str, dict] = {}
    for source, curve in curves.items():
        scored = [r for r in curve if r["recall"] is not None]
        if not scored:
            continue  # a source without cracked samples says nothing about recall
        qualifying = [r for r in scored if r["recall"] >= recall]
        met = bool(qualifying)
        best = max(qualifying, key=lambda r: r["threshold"]) if met else min(scored, key=lambda r: r["threshold"])
        sources[source] = {**best, "met": met}
    if not sources:
        return {"recall_target": recall, "threshold": None, "met": False, "sources": {}}
    threshold = min(s["threshold"] for s in sources.values())
    for source, s in sources.items():
        s["at_gate"] = {k: v for k, v in at(curves[source], threshold).items() if k != "threshold"}
    return {
        "recall_target": recall,
        "threshold": threshold,
        "met": all(s["met"] for s in sources.values()),
        "sources": sources,
    }


def at(curve: list[dict], threshold: float) -> dict:
    """The curve's row nearest `threshold` (e.g. one chosen on another image set; curves share their thresholds)."""
    return min(curve, key=lambda r: abs(r["threshold"] - threshold))


def choose_threshold(curves: list[list[dict]], metric: str) -> float:
    """The threshold with the best mean `metric` over several held-out sources (each counts once)."""
    thresholds = [r["threshold"] for r in curves[0]]
    means = [np.mean([at(c, t)[metric] for c in curves]) for t in thresholds]
    return float(thresholds[int(np.argmax(means))])


def overlays(arrays: dict, threshold: float, title: str, path: Path, n_best: int = 3, n_worst: int = 5) -> Path:
    """Best, median and worst held-out images: image | truth |
    prediction (green = found, red = missed, blue = false)."""
    from trainer.evaluation import plots as report_plots

    f1 = per_image_tolerant_f1(arrays["probs"], arrays["masks"], threshold)
    order = np.argsort(f1)
    mid = len(order) // 2
    picks = list(order[::-1][:n_best]) + list(order[mid - 1 : mid + 1]) + list(order[:n_worst])
    fig, axes = report_plots.plt.subplots(len(picks), 3, figsize=(6.6, 2.2 * len(picks)), squeeze=False)
    for row, i in zip(axes, picks):
        img, truth, pred = arrays["images"][i], arrays["masks"][i], arrays["probs"][i] >= threshold
        h, w = truth.shape
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        colour = img.copy()
        colour[pred & truth] = (0, 200, 0)
        colour[truth & ~pred] = (230, 0, 0)
        colour[pred & ~truth] = (0, 90, 255)
        for ax, pic, label in zip(row, (img, truth, colour), ("image", "true mask", f"tolerant F1 {f1[i]:.2f}")):
            ax.imshow(pic, cmap="gray" if pic.ndim == 2 else None)
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    fig.subplots_adjust(top=1 - 0.7 / fig.get_figheight(), hspace=0.18, wspace=0.05)
    fig.suptitle(title, fontsize=9)
    return report_plots._save(fig, path, palette=True)


def curve_plot(results: list[dict], threshold: float, path: Path) -> Path:
    from trainer.evaluation import plots as report_plots

    plt = report_plots.plt
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for r in results:
        for scale, style in zip(SCALES, ("-", "--", ":")):
            c = r["scales"][scale]["curve"]
            ax.plot([p["threshold"] for p in c], [p["tolerant_f1"] for p in c], style, label=f"{r['heldout']}, {scale}")
    ax.axvline(threshold, color="grey", lw=0.8)
    ax.set_xlabel("pixel threshold")
    ax.set_ylabel("tolerant F1 (2 px)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("segmenter on a held-out source (INT8)", fontsize=10)
    return report_plots._save(fig, path)


def loo_deltas(report: dict, previous: dict, previous_name: str) -> dict:
    """This cross-validation against a previous bundle's (its crossval.json), per held-out source present in both:
    the segmenter's tolerant F1, precision and recall at each report's own chosen threshold (model scale), and the
    classifier's F1 and balanced accuracy at each one's threshold, per held-out set."""
    rows: list[dict] = []

    def segmenter_rows(r: dict) -> dict:
        t = r["segmenter_threshold"]
        return {s["heldout"]: at(s["scales"]["model scale"]["curve"], t) for s in r.get("segmenter", [])}

    def classifier_rows(r: dict) -> dict:
        t = r["classifier_threshold"]
        return {name: at(s["curve"], t) for c in r.get("classifier", []) for name, s in c["sets"].items()}

    for model, rows_of, metrics in (
        ("segmenter", segmenter_rows, ("tolerant_f1", "tolerant_precision", "tolerant_recall")),
        ("classifier", classifier_rows, ("f1", "balanced_accuracy", "recall")),
    ):
        if not report.get(model) or not previous.get(model):
            continue
        now, before = rows_of(report), rows_of(previous)
        for source in sorted(set(now) & set(before)):
            for metric in metrics:
                rows.append(
                    {
                        "model": model,
                        "heldout": source,
                        "metric": metric,
                        "this": now[source][metric],
                        "previous": before[source][metric],
                        "delta": now[source][metric] - before[source][metric],
                    }
                )
    return {"previous": previous_name, "rows": rows}


def run_crossval(
    segmenter_runs: list[Path],
    classifier_runs: list[Path],
    out_dir: Path,
    progress=print,
    classifier_tflite: Path | None = None,
    gate_recall: float = GATE_RECALL,
    previous: Path | None = None,
) -> dict:
    """Score every leave-one-out run; write crossval.json, CROSSVAL.md and plots into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(exist_ok=True)
    seg, arrays = [], []
    for run in segmenter_runs:
        r, a = evaluate_segmenter_run(Path(run), progress)
        seg.append(r)
        arrays.append(a)
    cls = [evaluate_classifier_run(Path(run), progress, classifier_tflite) for run in classifier_runs]
    report: dict[str, Any] = {"segmenter": seg, "classifier": cls, "plots": {}}
    if seg:
        t = choose_threshold([r["scales"]["model scale"]["curve"] for r in seg], "tolerant_f1")
        report["segmenter_threshold"] = t
        report["plots"]["segmenter_curve"] = str(
            curve_plot(seg, t, out_dir / "plots" / "crossval_segmenter_threshold.png").relative_to(out_dir)
        )
        for r, a in zip(seg, arrays):
            p = overlays(
                a,
                t,
                f"held-out {r['heldout']}: best, median and worst images (threshold {t:.2f})",
                out_dir / "plots" / f"crossval_segmenter_{r['heldout']}_overlays.png",
            )
            report["plots"][f"overlays_{r['heldout']}"] = str(p.relative_to(out_dir))
    if cls:
        curves = [s["curve"] for r in cls for s in r["sets"].values()]
        report["classifier_threshold"] = choose_threshold(curves, "balanced_accuracy")
        gate = choose_gate({r["heldout"]: r["gate_curve"] for r in cls if "gate_curve" in r}, gate_recall)
        report["classifier_gate"] = gate
        if gate["threshold"] is not None:
            report["classifier_gate_threshold"] = gate["threshold"]  # what `crack-train export --crossval` reads
    if previous is not None and (previous / "crossval.json").is_file():
        earlier = json.loads((previous / "crossval.json").read_text())
        report["compare_with"] = loo_deltas(report, earlier, _bundle_name(previous))
    (out_dir / "crossval.json").write_text(json.dumps(report, indent=1))
    (out_dir / "CROSSVAL.md").write_text(render(report))
    return report


def render(report: dict, heading: str = "#") -> str:
    """CROSSVAL.md (and the same section inside REPORT.md, one heading level down)."""
    sub = heading + "#"
    lines = [
        f"{heading} Cross-surface validation (leave one dataset out)",
        "",
        "Each model below was trained **without** one whole source and scored, in INT8, on every image of it.",
        "Tolerant F1: a predicted crack pixel counts when a true one lies within 2 px, and vice versa (pixels pooled).",
        "",
    ]
    if report.get("segmenter"):
        t = report["segmenter_threshold"]
        lines += [
            f"{sub} Segmenter",
            "",
            f"Pixel threshold chosen on these held-out sources: **{t:.2f}** (best mean tolerant F1).",
            "",
            "| held-out source | images | scale | tolerant F1 | precision | recall | Dice | best threshold (F1) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in report["segmenter"]:
            for scale, s in r["scales"].items():
                row = at(s["curve"], t)
                best = max(s["curve"], key=lambda p: p["tolerant_f1"])
                lines.append(
                    f"| {r['heldout']} | {r['images']} | {scale} | {row['tolerant_f1']:.3f} | "
                    f"{row['tolerant_precision']:.3f} | {row['tolerant_recall']:.3f} | "
                    f"{row['dice']:.3f} | {best['threshold']:.2f} ({best['tolerant_f1']:.3f}) |"
                )
        lines += [
            "",
            "Half scale: the image shown as a 2x2 mosaic of itself (a camera twice as far away); "
            "two scales: the pixel-wise max of both (two segmenter runs per frame).",
            "",
        ]
        for key, p in report["plots"].items():
            lines += [f"![{key}]({p})", ""]
    if report.get("classifier"):
        t = report["classifier_threshold"]
        lines += [
            f"{sub} Classifier",
            "",
            f"Threshold chosen on these held-out sources: **{t:.2f}** (best mean balanced accuracy).",
            "",
        ]
        lines += [
            f"- {r['run']}: {r.get('model', 'the run checkpoint')}, {r['heldout']} held out of its training"
            for r in report["classifier"]
        ]
        lines += [
            "",
            "| held-out set | images | cracks | threshold | F1 | balanced accuracy | recall | precision |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in report["classifier"]:
            for name, s in r["sets"].items():
                for thr in sorted({0.5, t}):
                    row = at(s["curve"], thr)
                    lines.append(
                        f"| {name} | {s['images']} | {s['cracks']} | {thr:.2f} | {row['f1']:.3f} | "
                        f"{row['balanced_accuracy']:.3f} | {row['recall']:.3f} | {row['precision']:.3f} |"
                    )
        lines.append("")
        if report.get("classifier_gate"):
            lines += render_gate(report["classifier_gate"], sub)
    if report.get("compare_with"):
        lines += render_deltas(report["compare_with"], sub)
    return "\n".join(lines)


def _bundle_name(bundle: Path) -> str:
    try:
        return "bundle " + json.loads((bundle / "manifest.json").read_text())["bundle_version"]
    except (OSError, ValueError, KeyError):
        return str(bundle)


def render_deltas(deltas: dict, sub: str) -> list[str]:
    """The table of deltas against a previous bundle's cross-validation (positive = better, for every metric)."""
    lines = [
        f"{sub} Against {deltas['previous']}",
        "",
        "The same held-out sources, each model at its own chosen threshold (model scale).",
        "",
        "| model | held-out | figure | this | previous | delta |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['heldout']} | {r['metric'].replace('_', ' ')} | {r['this']:.3f} | "
        f"{r['previous']:.3f} | {r['delta']:+.3f} |"
        for r in deltas["rows"]
    ]
    return [*lines, ""]


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_gate(gate: dict, sub: str) -> list[str]:
    """The classifier gate: per source its highest threshold with the target recall, and the chosen one."""
    target = gate["recall_target"]
    if gate["threshold"] is None:
        return [f"{sub} Classifier gate", "", "No held-out source has cracked samples: no gate threshold chosen.", ""]
    t = gate["threshold"]
    lines = [
        f"{sub} Classifier gate",
        "",
        f"Gate threshold chosen on these held-out sources: **{t:.2f}**, the highest that passes at least "
        f"{target:.2f} of the cracked samples of every source"
        + ("." if gate["met"] else f" (**missed**: some source reaches {target:.2f} at no threshold).")
        + " The segmenter runs on every frame the gate passes; crack-free passing is its share of the "
        "crack-free samples.",
        "",
        "| held-out source | highest threshold (recall ≥ target) | recall | crack-free passing | "
        f"recall at {t:.2f} | crack-free passing at {t:.2f} |",
        "|---|---|---|---|---|---|",
    ]
    for source, s in gate["sources"].items():
        own = f"{s['threshold']:.2f}" if s["met"] else f"none (miss; lowest {s['threshold']:.2f})"
        lines.append(
            f"| {source} | {own} | {_share(s['recall'])} | {_share(s['crack_free_passing'])} | "
            f"{_share(s['at_gate']['recall'])} | {_share(s['at_gate']['crack_free_passing'])} |"
        )
    lines.append("")
    return lines
