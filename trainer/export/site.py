"""A site bundle (`crack-train adapt` + `export --keep-from BASE`): its provenance, and the check that it is no worse.

The manifest goes to devices, so it names the site, counts and hashes its images and names the base bundle
(version + manifest hash), but never a path of the training host. The base and the site bundle are both scored
in INT8, each at its own threshold, on the site's held-out images (the ones adapt did not train on).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from edge.engine.bundle import MANIFEST, sha256_file
from edge.engine.runtime import TFLiteModel
from trainer.data.site import ADAPT_REPORT, load_pairs, site_split
from trainer.export.metrics import tolerant_metrics
from trainer.export.predict import predict

# The directories of an absolute path ("/home/me/data/site/x.png" -> "x.png"; "C:\\a\\b" -> "b").
_HOST_DIRS = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[^/\\\s:,;'\"()]+[/\\])+")


class WorseThanBase(ValueError):
    """The site bundle scores below its base on the site's held-out images; the message gives both scores."""


def without_host_paths(value):
    """`value` (JSON-like) with every absolute path cut to its last component."""
    if isinstance(value, dict):
        return {k: without_host_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_host_paths(v) for v in value]
    if isinstance(value, str):
        return _HOST_DIRS.sub("", value)
    return value


def adapt_report(run_dir: Path) -> dict | None:
    """What `crack-train adapt` recorded in its run directory, or None for an ordinary training run."""
    path = Path(run_dir) / ADAPT_REPORT
    return json.loads(path.read_text()) if path.is_file() else None


def adapted_gate(run_dir: Path) -> tuple[float, str] | None:
    """The gate threshold `crack-train adapt` chose for a classifier run and why (the manifest's
    gate_threshold_source); None for another run, or when no cracked sample was held out to choose it on."""
    report = adapt_report(run_dir)
    c = (report or {}).get("classifier")
    if report is None or c is None or c["gate_threshold"] is None:
        return None
    return float(c["gate_threshold"]), (
        f"chosen by crack-train adapt on the site's held-out labels ({report['images']['held_out']} images, "
        f"{c['cracked']} of {c['samples']} samples cracked; recall >= {c['recall_target']:.2f})"
    )


def base_provenance(bundle_dir: Path) -> dict:
    manifest = json.loads((Path(bundle_dir) / MANIFEST).read_text())
    return {
        "bundle_version": manifest.get("bundle_version"),
        "manifest_sha256": sha256_file(Path(bundle_dir) / MANIFEST),
    }


def site_provenance(report: dict) -> dict:
    site = report["site"]
    return {
        "name": site["name"],
        "images": site["images"],
        "sha256": site["sha256"],
        "files": site.get("files", {}),
        "trained_on": report["images"]["trained_on"],
        "held_out": report["images"]["held_out"],
        "threshold": report["threshold"],
    }


def compare_on_site(
    run_dir: Path, base_int8: bytes, base_threshold: float, site_int8: bytes, site_threshold: float
) -> dict:
    """Tolerant precision / recall / F1 of both INT8 segmenters on the run's held-out site images."""
    base_model, site_model = TFLiteModel(content=base_int8), TFLiteModel(content=site_int8)
    size = site_model.input_hw[0]
    images, masks = load_pairs(site_split(run_dir).heldout, size)
    scores = {}
    for name, model, threshold in (("base", base_model, base_threshold), ("site", site_model, site_threshold)):
        probs = predict(model, images)[..., 0]
        if probs.shape[1:] != masks.shape[1:]:  # a base of another input size: compare at the masks' size
            import cv2

            probs = np.stack([cv2.resize(p, masks.shape[2:0:-1]) for p in probs])
        scores[name] = {**tolerant_metrics(masks, probs >= threshold), "threshold": threshold}
    return {"images": int(len(images)), "scored_in": "INT8", **scores}


def refuse_if_worse(comparison: dict, force: bool) -> None:
    base, site = comparison["base"]["tolerant_f1"], comparison["site"]["tolerant_f1"]
    if site < base and not force:
        raise WorseThanBase(
            f"the site bundle is worse than its base on the {comparison['images']} held-out site images "
            f"(INT8 tolerant F1 {site:.3f} < {base:.3f}); not written. Label more images or adapt longer, "
            "or export it anyway with --force"
        )
