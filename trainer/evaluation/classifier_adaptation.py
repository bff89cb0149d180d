"""What `crack-train adapt` did to a classifier: its gate threshold for the site, and ADAPT.md + adapt.json.

Base and adapted classifier are scored in float (Keras) on the site's held-out images (trainer.data.site; the
classifier run splits them as the segmenter's run does, `classifier --site-split`), as classifier training takes
samples from a segmentation folder (trainer.data.assemble.classification_samples): each whole image, a crack when
>= 0.1 % of its mask is, and crack / no-crack patches. The gate threshold is chosen on them as `crack-train
crossval` chooses it (the highest threshold passing >= GATE_RECALL of the cracked samples); `crack-train export`
records the adapted model's as the bundle's `gate_threshold`. Each model is scored at its own gate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trainer.data.site import ADAPT_REPORT, site_digest, site_split
from trainer.evaluation.adaptation import REPORT_MD, base_provenance, epochs_run, run_epochs, site_file_names
from trainer.evaluation.crossval import GATE_RECALL, at, choose_gate, gate_curve
from trainer.export.metrics import binary_metrics

MONITOR = "val_loss"  # what train_classifier keeps the best epoch by
HELD_OUT = "site held-out"  # the one source the gate is chosen on


def heldout_samples(paths: list[str], size: int, seed: int, patches_per_image: int) -> tuple[np.ndarray, np.ndarray]:
    """The classification samples of held-out site images: whole images and patches, labels 1 = crack."""
    from trainer.data.assemble import SEGMENTATION_READ_PX, classification_samples
    from trainer.data.datasets import LoadReport, SegmentationSet
    from trainer.data.site import load_pairs

    images, masks = load_pairs(paths, SEGMENTATION_READ_PX)
    seg = SegmentationSet(images, masks.astype(np.uint8), list(paths), LoadReport("held-out site images", len(paths)))
    sets = classification_samples(seg, size, seed, patches_per_image).values()
    return np.concatenate([s.images for s in sets]), np.concatenate([s.labels for s in sets])


def _scores(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(images.astype(np.float32), verbose=0)).reshape(len(images), -1)[:, 0]


def scored(scores: np.ndarray, labels: np.ndarray, recall: float = GATE_RECALL) -> dict:
    """One model on the held-out samples: its gate (crossval.choose_gate) and its metrics there."""
    curve = gate_curve(scores, labels)
    gate = choose_gate({HELD_OUT: curve}, recall)
    threshold = gate["threshold"] if gate["threshold"] is not None else 0.5
    m = binary_metrics(labels, scores, threshold)
    return {
        "gate_threshold": gate["threshold"],
        "met": gate["met"],
        "balanced_accuracy": m["balanced_accuracy"],
        "recall": m["recall"],
        "crack_free_passing": at(curve, threshold)["crack_free_passing"],
        "roc_auc": m["roc_auc"],
        "curve": curve,
    }


def classifier_report(run_dir: Path, base_checkpoint: Path, site_name: str, patches_per_image: int) -> dict | None:
    """Score base and adapted classifier on the held-out site images, choose the gate, write the report files
    (None, and nothing written, when the site has no images/ + masks/ folder: nothing to hold out)."""
    import keras

    from trainer.export.convert import load_checkpoint

    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "run.json").read_text())
    split = site_split(run_dir)
    heldout = [p for p in split.heldout if _has_mask(p)]
    if not heldout:
        return None
    images, labels = heldout_samples(heldout, int(meta["spec"]["size"]), int(meta["train"]["seed"]), patches_per_image)
    base_model = keras.models.load_model(base_checkpoint, compile=False)
    before, after = (
        scored(_scores(base_model, images), labels),
        scored(_scores(load_checkpoint(run_dir), images), labels),
    )
    losses = run_epochs(run_dir, MONITOR)
    report = {
        "site": {"name": site_name, **site_digest(meta["data"])},
        "base": base_provenance(base_checkpoint),
        "images": {
            "trained_on": len([p for p in split.train if _has_mask(p)]),
            "held_out": len(heldout),
            "held_out_files": site_file_names(heldout),
        },
        "schedule": {k: meta["train"][k] for k in ("epochs", "steps_per_epoch", "patience", "learning_rate")},
        **epochs_run(losses, int(meta["train"]["epochs"]), kept=int(np.argmin(losses)) if losses else None),
        "scored_in": "float (Keras checkpoints)",
        "classifier": {
            "samples": int(len(labels)),
            "cracked": int(np.sum(labels)),
            "recall_target": GATE_RECALL,
            "gate_threshold": after["gate_threshold"],
            "before": before,
            "after": after,
        },
    }
    (run_dir / ADAPT_REPORT).write_text(json.dumps(report, indent=1))
    (run_dir / REPORT_MD).write_text(render(report))
    return report


def _has_mask(path: str) -> bool:
    from trainer.data.datasets import mask_path_for

    return mask_path_for(path) is not None


def classifier_summary_lines(r: dict) -> list[str]:
    """What a technician reads about the classifier at the end of `crack-train adapt` / `crack-train site adapt`."""
    c, im = r["classifier"], r["images"]
    b, a = c["before"], c["after"]
    if a["gate_threshold"] is None:
        gate = "no cracked sample held out: no gate threshold chosen (export leaves the bundle's gate unset)"
    elif a["met"]:
        gate = (
            f"gate threshold {a['gate_threshold']:.2f} chosen on them (passes {a['recall']:.0%} of the cracked samples)"
        )
    else:
        gate = (
            f"no gate threshold passes {c['recall_target']:.0%} of the cracked samples: the lowest, "
            f"{a['gate_threshold']:.2f}, chosen"
        )
    return [
        f"classifier on {im['held_out']} held-out site images ({c['samples']} samples, {c['cracked']} cracked), "
        f"{r['scored_in']}, each at its gate: balanced accuracy {b['balanced_accuracy']:.3f} -> "
        f"{a['balanced_accuracy']:.3f}, recall {b['recall']:.3f} -> {a['recall']:.3f}, crack-free passing "
        f"{b['crack_free_passing']:.3f} -> {a['crack_free_passing']:.3f}",
        gate + ("" if a["gate_threshold"] is None else "; `crack-train export` writes it into the bundle"),
    ]


def _threshold(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render(r: dict) -> str:
    c = r["classifier"]
    rows = "\n".join(
        f"| {name} | {c[key]['balanced_accuracy']:.3f} | {c[key]['recall']:.3f} | {c[key]['crack_free_passing']:.3f} "
        f"| {_threshold(c[key]['gate_threshold'])} |"
        for name, key in (("base", "before"), ("adapted", "after"))
    )
    lines = "\n".join(f"- {line}" for line in classifier_summary_lines(r))
    return f"""# Adaptation to site {r["site"]["name"]}: classifier

- trained on {r["images"]["trained_on"]} site images, held out {r["images"]["held_out"]}; ran {r["epochs_run"]} of \
{r["epochs_planned"]} epochs, kept epoch {r["kept_epoch"]}
{lines}

## Classifier gate

Held-out site images ({c["samples"]} samples: each whole image, a crack when >= 0.1 % of its mask is, and patches;
{r["scored_in"]}). Each model at its gate threshold: the highest passing >= {c["recall_target"]:.2f} of the cracked
samples, as `crack-train crossval` chooses it.

| model | balanced accuracy | recall | crack-free passing | gate threshold |
|---|---|---|---|---|
{rows}

Schedule: {r["schedule"]}. Data: {r["site"]["images"]} images, SHA-256 {r["site"]["sha256"][:16]}...
"""
