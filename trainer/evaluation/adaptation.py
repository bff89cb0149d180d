"""What `crack-train adapt` did and whether it helped: ADAPT.md + adapt.json + overlays in the run directory.

The base checkpoint and the adapted one are scored on the site's held-out images (trainer.data.site) in float
(Keras, the checkpoints as trained; export repeats the comparison in INT8 against the base bundle). The pixel
threshold of the site is the one with the best tolerant F1 of the adapted model on those images; the base is
scored at its own best threshold there, so neither side is handicapped by a threshold chosen for the other.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from trainer.data.site import ADAPT_REPORT, site_digest, site_split
from trainer.evaluation.crossval import per_image_tolerant_f1, segmenter_scores

REPORT_MD = "ADAPT.md"
OVERLAYS = "adapt_overlays.png"
MONITOR = "val_dice_coefficient"  # what train_segmenter keeps the best epoch by


def _epochs(run_dir: Path) -> list[float]:
    """The validation score of every finished epoch (log.csv spans a resumed run; history.json does not)."""
    with open(run_dir / "log.csv", newline="") as f:
        return [float(row[MONITOR]) for row in csv.DictReader(f) if row.get(MONITOR) not in (None, "")]


def _probs(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(images.astype(np.float32), verbose=0))[..., 0]


def _best(curve: list[dict]) -> dict:
    return max(curve, key=lambda r: r["tolerant_f1"])


def adaptation_report(run_dir: Path, base_checkpoint: Path, site_name: str) -> dict:
    """Score base and adapted segmenter on the held-out site images, choose the threshold, write the report files."""
    import keras

    from trainer.data.site import load_pairs
    from trainer.evaluation import plots
    from trainer.export.convert import load_checkpoint

    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "run.json").read_text())
    split = site_split(run_dir)
    size = int(meta["spec"]["size"])
    images, masks = load_pairs(split.heldout, size)
    base_probs = _probs(keras.models.load_model(base_checkpoint, compile=False), images)
    site_probs = _probs(load_checkpoint(run_dir), images)
    before, after = (
        _best(segmenter_scores(base_probs, masks)["curve"]),
        _best(segmenter_scores(site_probs, masks)["curve"]),
    )
    scores = _epochs(run_dir)
    planned = int(meta["train"]["epochs"])
    base_meta_path = Path(base_checkpoint).with_suffix(".json")
    base_meta = json.loads(base_meta_path.read_text()) if base_meta_path.is_file() else {}
    report = {
        "site": {"name": site_name, **site_digest(meta["data"])},
        "base": {
            "checkpoint": Path(base_checkpoint).name,
            "sha256": base_meta.get("sha256"),
            "run": base_meta.get("run"),
        },
        "images": {
            "trained_on": len(split.train),
            "held_out": len(split.heldout),
            "held_out_val": len(split.val),
            "held_out_test": len(split.test),
            "generated": int(meta["counts"]["train"]) - len(split.train),
            "held_out_files": [f"{Path(p).parent.parent.name}/{Path(p).name}" for p in split.heldout],
        },
        "schedule": {k: meta["train"][k] for k in ("epochs", "steps_per_epoch", "patience", "learning_rate", "crop")},
        "epochs_run": len(scores),
        "epochs_planned": planned,
        "stopped_early": len(scores) < planned,
        "kept_epoch": int(np.argmax(scores)) + 1 if scores else None,
        "kept_val_dice": max(scores) if scores else None,
        "threshold": after["threshold"],
        "scored_in": "float (Keras checkpoints)",
        "before": before,
        "after": after,
    }
    n = min(6, len(images))
    plots.overlay_grid(
        images[:n],
        masks[:n],
        {"base": base_probs[:n] >= before["threshold"], "adapted": site_probs[:n] >= after["threshold"]},
        {
            "base": list(per_image_tolerant_f1(base_probs[:n], masks[:n], before["threshold"])),
            "adapted": list(per_image_tolerant_f1(site_probs[:n], masks[:n], after["threshold"])),
        },
        f"{site_name}: held-out images, base vs adapted",
        run_dir / OVERLAYS,
        score_label="tol. F1",
    )
    (run_dir / ADAPT_REPORT).write_text(json.dumps(report, indent=1))
    (run_dir / REPORT_MD).write_text(render(report))
    return report


def summary_lines(r: dict) -> list[str]:
    """What a technician reads at the end of `crack-train adapt`."""
    im, b, a = r["images"], r["before"], r["after"]
    stop = (
        f"stopped early after {r['epochs_run']} of {r['epochs_planned']} epochs (no better validation score for "
        f"{r['schedule']['patience']} epochs)"
        if r["stopped_early"]
        else f"ran all {r['epochs_run']} epochs"
    )
    return [
        f"site {r['site']['name']}: {r['site']['images']} labelled images; trained on {im['trained_on']} "
        f"(+ {im['generated']} generated from them), held out {im['held_out']} "
        f"({im['held_out_val']} of them also chose the kept epoch)",
        f"{stop}; kept epoch {r['kept_epoch']} (validation Dice {r['kept_val_dice']:.3f})",
        f"held-out site images, {r['scored_in']}: tolerant F1 {b['tolerant_f1']:.3f} -> {a['tolerant_f1']:.3f} "
        f"({a['tolerant_f1'] - b['tolerant_f1']:+.3f}), precision {b['tolerant_precision']:.3f} -> "
        f"{a['tolerant_precision']:.3f}, recall {b['tolerant_recall']:.3f} -> {a['tolerant_recall']:.3f}",
        f"pixel threshold {a['threshold']:.2f} chosen on them (base at its best, {b['threshold']:.2f}); "
        "`crack-train export` writes it into the bundle",
    ]


def render(r: dict) -> str:
    rows = "\n".join(
        f"| {name} | {r[key]['tolerant_f1']:.3f} | {r[key]['tolerant_precision']:.3f} | "
        f"{r[key]['tolerant_recall']:.3f} | {r[key]['threshold']:.2f} |"
        for name, key in (("base", "before"), ("adapted", "after"))
    )
    lines = "\n".join(f"- {line}" for line in summary_lines(r))
    return f"""# Adaptation to site {r["site"]["name"]}

{lines}

Held-out site images ({r["images"]["held_out"]}; {r["scored_in"]}, each model at its best threshold on them):

| model | tolerant F1 (2 px) | precision | recall | threshold |
|---|---|---|---|---|
{rows}

With so few held-out images the numbers move by several points from one image to the next; the threshold and the
kept epoch were chosen on the same images, so the adapted score is an optimistic estimate. `crack-train export
--keep-from BASE_BUNDLE` repeats the comparison in INT8 and refuses a bundle worse than its base (`--force`).

Schedule: {r["schedule"]}. Data: {r["site"]["images"]} images, SHA-256 {r["site"]["sha256"][:16]}...

![held-out images: base vs adapted]({OVERLAYS})
"""
