"""A site's labelled images as `crack-train adapt` used them: the held-out share and the data's provenance.

Adapt trains on the `train` part of each site folder's split (assemble.segmenter_splits) and holds out the rest
(`val` + `test`): the held-out images choose the kept epoch (`val`), the pixel threshold and give the before/after
scores; export scores the INT8 bundles on the same images. Provenance is what a device may be told: a site name,
the number of images and a digest of their bytes, never the training host's paths.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.engine.preprocess import model_input, resize_mask
from trainer.data.assemble import dataset_kind, source_image
from trainer.data.datasets import mask_path_for, read_training_image, read_training_mask, segmentation_pairs

ADAPT_REPORT = "adapt.json"  # written by `crack-train adapt` into its run directory; read by `crack-train export`


@dataclass(frozen=True)
class SiteSplit:
    """Which of a site's images an adapt run trained on and which it held out (file paths on this host)."""

    train: list[str]
    val: list[str]  # held out; also chose the kept epoch
    test: list[str]  # held out, untouched by training

    @property
    def heldout(self) -> list[str]:
        return self.val + self.test


def site_split(run_dir: Path) -> SiteSplit:
    """The split of the run's real data folders, by image (synthetic and domain-randomised samples are not site
    images; a classifier run's patches are in the part of their image, which its whole-image set names)."""
    files = json.loads((Path(run_dir) / "splits.json").read_text())["files"]
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for folder in files.values():
        for part, paths in parts.items():
            paths.extend(p for p in folder.get(part, []) if not p.startswith("synth:") and source_image(p) == p)
    return SiteSplit(**parts)


def load_pairs(paths: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x size x size x 3, the device's preprocessing) and 0/1 masks of images by path (the mask in
    ROOT/masks/ beside ROOT/images/, or none: a crack-free image)."""
    images, masks = [], []
    for path in paths:
        rgb = read_training_image(Path(path))
        mask_path = mask_path_for(path)
        images.append(model_input(rgb, size, size))
        if mask_path is None:  # a crack-free image of a classification folder (segmenter_splits' negatives)
            masks.append(np.zeros((size, size), np.uint8))
        else:
            masks.append(resize_mask(read_training_mask(mask_path, rgb.shape[:2]), size, size))
    return np.stack(images), np.stack(masks).astype(bool)


def site_digest(folders: list[str]) -> dict:
    """Image count and SHA-256 digests of a site's labelled pairs: one per image (image + mask bytes) and one over all.

    Identifies the data a bundle was adapted on without naming where it lay on the training host.
    """
    per_image = {}
    for folder in folders:
        if dataset_kind(folder) != "segmentation":  # a classification folder gives a segmenter no masks to learn
            continue
        for image, mask in segmentation_pairs(folder):
            h = hashlib.sha256(image.read_bytes())
            h.update(mask.read_bytes())
            per_image[f"{Path(folder).name}/{image.name}"] = h.hexdigest()
    combined = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(per_image.items())).encode()).hexdigest()
    return {"images": len(per_image), "sha256": combined, "files": per_image}
