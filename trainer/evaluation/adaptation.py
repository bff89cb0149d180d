"""What `crack-train adapt` did and whether it helped: ADAPT.md + adapt.json + overlays in the run directory.

The base checkpoint and the adapted one are scored on the site's held-out images (trainer.data.site) in float
(Keras, the checkpoints as trained; export repeats the comparison in INT8 against the base bundle). The pixel
threshold of the site is the one with the best tolerant F1 of the adapted model on those images; the base is
scored at its own best threshold there, so neither side is handicapped by a threshold chosen for the other.

Forgetting: on optional labelled sets the site never saw (e.g. the leave-one-out sources) both models are scored
the same way, each at the threshold above, so a gain on the site bought with a loss elsewhere shows.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trainer.data.site import ADAPT_REPORT, site_digest, site_split
from trainer.evaluation.crossval import at, per_image_tolerant_f1, segmenter_scores

REPORT_MD = "ADAPT.md"
OVERLAYS = "adapt_overlays.png"
MONITOR = "val_dice_coefficient"  # what train_segmenter keeps the best epoch by
FORGETTING_LIMIT = 0.02  # the largest tolerant-F1 drop on other data that adapting may cost (issue 19)


def run_epochs(run_dir: Path, monitor: str = MONITOR) -> list[float]:
    """The validation score of every finished epoch (log.csv spans a resumed run; history.json does not)."""
    with open(run_dir / "log.csv", newline="") as f:
        return [float(row[monitor]) for row in csv.DictReader(f) if row.get(monitor) not in (None, "")]


def base_provenance(base_checkpoint: Path) -> dict:
    """The checkpoint adapt started from, as its published ROLE.json beside it names it (no host paths)."""
    meta_path = Path(base_checkpoint).with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return {"checkpoint": Path(base_checkpoint).name, "sha256": meta.get("sha256"), "run": meta.get("run")}


def site_file_names(paths: list[str]) -> list[str]:
    """FOLDER/IMAGE for each site image path (ROOT/FOLDER/images/IMAGE): the report names files, not host paths."""
    return [f"{Path(p).parent.parent.name}/{Path(p).name}" for p in paths]


def epochs_run(values: list[float], planned: int, kept: int | None) -> dict:
    """How the run went: epochs run of those planned, whether it stopped early, which (0-based `kept`) it kept."""
    return {
        "epochs_run": len(values),
        "epochs_planned": planned,
        "stopped_early": len(values) < planned,
        "kept_epoch": kept + 1 if kept is not None else None,
    }


def _probs(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(images.astype(np.float32), verbose=0))[..., 0]


def _best(curve: list[dict]) -> dict:
    return max(curve, key=lambda r: r["tolerant_f1"])


def forgetting_sample(folder: Path, n: int) -> list[str]:
    """N images of an images/ + masks/ folder, evenly spaced over its sorted files: the same ones on every run."""
    from trainer.data.datasets import segmentation_pairs

    pairs = segmentation_pairs(folder)
    picked = sorted({int(i) for i in np.linspace(0, len(pairs) - 1, min(n, len(pairs))).round()})
    return [str(pairs[i][0]) for i in picked]


def forgetting_row(name: str, images: int, before: dict, after: dict) -> dict:
    delta = after["tolerant_f1"] - before["tolerant_f1"]
    return {
        "name": name,
        "images": images,
        "before": before,
        "after": after,
        "delta": delta,
        "forgot": delta < -FORGETTING_LIMIT,
    }


def adaptation_report(
    run_dir: Path,
    base_checkpoint: Path,
    site_name: str,
    forgetting_sets: Sequence[Path] = (),
    forgetting_images: int = 40,
) -> dict:
    """Score base and adapted segmenter on the held-out site images, choose the threshold, score both on the
    forgetting sets at their thresholds, write the report files."""
    import keras

    from trainer.data.site import load_pairs
    from trainer.evaluation import plots
    from trainer.export.convert import load_checkpoint

    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "run.json").read_text())
    split = site_split(run_dir)
    size = int(meta["spec"]["size"])
    images, masks = load_pairs(split.heldout, size)
    base_model, site_model = keras.models.load_model(base_checkpoint, compile=False), load_checkpoint(run_dir)
    base_probs = _probs(base_model, images)
    site_probs = _probs(site_model, images)
    before, after = (
        _best(segmenter_scores(base_probs, masks)["curve"]),
        _best(segmenter_scores(site_probs, masks)["curve"]),
    )
    forgetting = []
    for folder in forgetting_sets:
        other, other_masks = load_pairs(forgetting_sample(Path(folder), forgetting_images), size)
        forgetting.append(
            forgetting_row(
                Path(folder).resolve().name,  # the folder's name only: no host paths in the report
                len(other),
                at(segmenter_scores(_probs(base_model, other), other_masks)["curve"], before["threshold"]),
                at(segmenter_scores(_probs(site_model, other), other_masks)["curve"], after["threshold"]),
            )
        )
    scores = run_epochs(run_dir)
    report = {
        "site": {"name": site_name, **site_digest(meta["data"])},
        "base": base_provenance(base_checkpoint),
        "images": {
            "trained_on": len(split.train),
            "held_out": len(split.heldout),
            "held_out_val": len(split.val),
            "held_out_test": len(split.test),
            "generated": int(meta["counts"]["train"]) - len(split.train),
            "held_out_files": site_file_names(split.heldout),
        },
        "schedule": {k: meta["train"][k] for k in ("epochs", "steps_per_epoch", "patience", "learning_rate", "crop")},
        **epochs_run(scores, int(meta["train"]["epochs"]), kept=int(np.argmax(scores)) if scores else None),
        "kept_val_dice": max(scores) if scores else None,
        "threshold": after["threshold"],
        "scored_in": "float (Keras checkpoints)",
        "before": before,
        "after": after,
        "forgetting": {"limit": FORGETTING_LIMIT, "sets": forgetting},
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
    lines = [
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
    sets = r.get("forgetting", {}).get("sets", [])  # absent in reports of older runs
    if sets:
        parts = [
            f"{s['name']} {s['before']['tolerant_f1']:.3f} -> {s['after']['tolerant_f1']:.3f} ({s['delta']:+.3f}"
            + (f", drop over {r['forgetting']['limit']:.2f})" if s["forgot"] else ")")
            for s in sets
        ]
        lines.append("forgetting (tolerant F1 on other data, each model at its threshold): " + "; ".join(parts))
    return lines


def render(r: dict) -> str:
    rows = "\n".join(
        f"| {name} | {r[key]['tolerant_f1']:.3f} | {r[key]['tolerant_precision']:.3f} | "
        f"{r[key]['tolerant_recall']:.3f} | {r[key]['threshold']:.2f} |"
        for name, key in (("base", "before"), ("adapted", "after"))
    )
    lines = "\n".join(f"- {line}" for line in summary_lines(r))
    forgetting = render_forgetting(r)
    return f"""# Adaptation to site {r["site"]["name"]}

{lines}

Held-out site images ({r["images"]["held_out"]}; {r["scored_in"]}, each model at its best threshold on them):

| model | tolerant F1 (2 px) | precision | recall | threshold |
|---|---|---|---|---|
{rows}

With so few held-out images the numbers move by several points from one image to the next; the threshold and the
kept epoch were chosen on the same images, so the adapted score is an optimistic estimate. `crack-train export
--keep-from BASE_BUNDLE` repeats the comparison in INT8 and refuses a bundle worse than its base (`--force`).
{forgetting}
Schedule: {r["schedule"]}. Data: {r["site"]["images"]} images, SHA-256 {r["site"]["sha256"][:16]}...

![held-out images: base vs adapted]({OVERLAYS})
"""


def render_forgetting(r: dict) -> str:
    """The Forgetting table of ADAPT.md ('' when adapt was given no --forgetting-set)."""
    f = r.get("forgetting", {})
    if not f.get("sets"):
        return ""
    rows = "\n".join(
        f"| {s['name']} | {s['images']} | {s['before']['tolerant_f1']:.3f} | {s['after']['tolerant_f1']:.3f} | "
        f"{s['delta']:+.3f} | {'**drop over ' + format(f['limit'], '.2f') + '**' if s['forgot'] else 'ok'} |"
        for s in f["sets"]
    )
    return f"""
Forgetting: labelled sets the site never saw, scored the same way, each model at its threshold above (base
{r["before"]["threshold"]:.2f}, adapted {r["after"]["threshold"]:.2f}); a tolerant-F1 drop over {f["limit"]:.2f} \
is more than adapting may cost.

| set | images | base tolerant F1 | adapted | delta | |
|---|---|---|---|---|---|
{rows}
"""
