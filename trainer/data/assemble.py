"""Assemble training / validation / held-out sets from dataset folders and synthetic data.

Every real folder is split deterministically by seed into train / val / test
(`test` is never seen in training and is what the report's "held out" numbers
use). Which files went where is written to `splits.json` so evaluation and the
bundle's provenance can name them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.engine.preprocess import model_input
from edge.sources import synth
from trainer.data.datasets import (
    ClassificationSet,
    DatasetError,
    LoadReport,
    SegmentationSet,
    load_classification,
    load_segmentation,
    patches_from_segmentation,
    split_indices,
)


def dataset_kind(root: str | Path) -> str:
    """'segmentation' when the folder has images/ and masks/, else 'classification'."""
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        return "classification"
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    return "segmentation" if (root / "images").is_dir() and (root / "masks").is_dir() else "classification"


@dataclass
class Splits:
    train: list = field(default_factory=list)  # list of (images, labels-or-masks) chunks
    val: list = field(default_factory=list)
    test: dict = field(default_factory=dict)  # name -> (images, labels-or-masks)
    files: dict = field(default_factory=dict)  # name -> {"train": [...], "val": [...], "test": [...]}
    reports: list[LoadReport] = field(default_factory=list)
    crack_free: list = field(default_factory=list)  # training files known to hold no crack (domain backgrounds)

    def stacked(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        chunks = getattr(self, part)
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({"files": self.files, "loaded": [r.summary() for r in self.reports]}, indent=1))


def _three_way(n: int, val_fraction: float, test_fraction: float, seed: int):
    rest, test = split_indices(n, test_fraction, seed)
    tr, va = split_indices(len(rest), val_fraction / (1 - test_fraction), seed + 1)
    return rest[tr], rest[va], test


def _synth_set(n: int, size: int, seed: int, crack_probability: float) -> SegmentationSet:
    rng = np.random.default_rng(seed)
    imgs, masks = [], []
    for _ in range(n):
        s = synth.generate(rng, size, size, crack_probability)
        imgs.append(s.image)
        masks.append((s.mask > 0).astype(np.uint8))
    return SegmentationSet(
        np.stack(imgs), np.stack(masks), [f"synth:{seed}:{i}" for i in range(n)], LoadReport("synthetic", loaded=n)
    )


def whole_images(seg: SegmentationSet, size: int, min_crack_fraction: float = 0.001) -> ClassificationSet:
    """Each segmentation image as one classification sample at `size` (crack if >= 0.1 % of it is crack)."""
    labels = (seg.masks.reshape(len(seg.masks), -1).mean(axis=1) >= min_crack_fraction).astype(np.int32)
    images = np.stack([model_input(img, size, size) for img in seg.images])
    return ClassificationSet(
        images, labels, list(seg.paths), LoadReport(f"whole images of {seg.report.source}", loaded=len(labels))
    )


# A segmentation folder is read at this size for the classifier and patches of PATCH_PX are cut from it.
SEGMENTATION_READ_PX = 448
PATCH_PX = 128


def classification_samples(seg: SegmentationSet, size: int, seed: int, patches_per_image: int) -> dict:
    """What a segmentation folder gives the classifier: crack / no-crack patches (key "") and each whole image
    (key "_whole"), keyed by the suffix of their set's name.

    Patches teach the close-up scale; whole images teach the scale of a camera frame, where the classifier gates
    the segmenter (a model trained on patches alone misses thin cracks in full frames).
    """
    return {
        "": patches_from_segmentation(seg, patch=PATCH_PX, out_size=size, seed=seed, per_image=patches_per_image),
        "_whole": whole_images(seg, size),
    }


def source_image(path: str) -> str:
    """The image a sample was taken from (a patch's path is IMAGE@X,Y, patches_from_segmentation)."""
    return re.sub(r"@\d+,\d+$", "", path)


def classifier_splits(
    data: list[str],
    size: int,
    n_synth: int,
    seed: int,
    val_fraction=0.1,
    test_fraction=0.1,
    limit_per_class: int | None = None,
    holdout: Collection[str] = (),
    patches_per_image: int = 8,
    progress=None,
    n_domain: int = 0,
    strict: bool = False,
    site_split: bool = False,
    domain_preset: str = "default",
) -> Splits:
    """Classification sets; segmentation folders contribute crack/no-crack patches.

    Folders named in `holdout` are kept entirely out of training (cross-surface test). With `site_split` a
    segmentation folder's images are split as segmenter_splits splits them (same seed, same fractions) and every
    patch goes with its image: a classifier and a segmenter adapted on one site hold out the same images.
    """
    sp = Splits()
    for root in data:
        name = Path(root).name
        parts = {}
        if dataset_kind(root) == "segmentation":
            seg = load_segmentation(root, SEGMENTATION_READ_PX, progress=progress, strict=strict)
            sp.reports.append(seg.report)
            for suffix, cs in classification_samples(seg, size, seed, patches_per_image).items():
                parts[f"{name}{suffix}"] = cs
            image_part = image_parts(seg.paths, seed) if site_split else None
        else:
            image_part = None
            parts[name] = load_classification(
                root, size, limit_per_class=limit_per_class, seed=seed, progress=progress, strict=strict
            )
            sp.reports.append(parts[name].report)
        for part_name, cs in parts.items():
            if root in holdout or name in holdout:
                sp.test[part_name] = (cs.images, cs.labels)
                sp.files[part_name] = {"test": cs.paths}
                continue
            if image_part is not None:  # every sample in the part of the image it was taken from
                tr, va, te = (
                    np.array([i for i, p in enumerate(cs.paths) if image_part[source_image(p)] == part], np.int64)
                    for part in ("train", "val", "test")
                )
            else:
                tr, va, te = _three_way(len(cs.labels), val_fraction, test_fraction, seed)
            sp.train.append((cs.images[tr], cs.labels[tr]))
            sp.val.append((cs.images[va], cs.labels[va]))
            sp.test[part_name] = (cs.images[te], cs.labels[te])
            sp.files[part_name] = {
                part: [cs.paths[i] for i in idx] for part, idx in (("train", tr), ("val", va), ("test", te))
            }
            sp.crack_free += [cs.paths[i] for i in tr if cs.labels[i] == 0 and "@" not in cs.paths[i]]
    if n_synth:
        s = _synth_set(n_synth, size, seed + 1000, crack_probability=0.5)
        labels = (s.masks.reshape(len(s.masks), -1).max(axis=1) > 0).astype(np.int32)
        tr, va = split_indices(n_synth, val_fraction, seed)
        sp.train.append((s.images[tr], labels[tr]))
        sp.val.append((s.images[va], labels[va]))
        sp.reports.append(s.report)
    if not sp.train:
        raise DatasetError("no training data: give at least one --data folder that is not held out, or --synth N")
    _require_training_images(sp)
    if n_domain:
        # A crack of >= 0.25 % of the frame is "crack" (the whole-image rule of segmentation folders is 0.1 %).
        _add_domain_samples(sp, n_domain, size, seed, progress, max(4, int(0.0025 * size * size)), domain_preset)
    return sp


# The segmenter's split of a folder; `classifier --site-split` splits a folder's images the same way.
SEGMENTER_VAL_FRACTION = 0.1
SEGMENTER_TEST_FRACTION = 0.15


def image_parts(paths: list[str], seed: int) -> dict[str, str]:
    """Image path -> "train" / "val" / "test", as segmenter_splits splits a folder of these images."""
    parts = _three_way(len(paths), SEGMENTER_VAL_FRACTION, SEGMENTER_TEST_FRACTION, seed)
    return {paths[i]: part for part, idx in zip(("train", "val", "test"), parts) for i in idx}


def segmenter_splits(
    data: list[str],
    size: int,
    n_synth: int,
    seed: int,
    val_fraction=SEGMENTER_VAL_FRACTION,
    test_fraction=SEGMENTER_TEST_FRACTION,
    negatives_per_set: int = 200,
    progress=None,
    holdout: Collection[str] = (),
    n_domain: int = 0,
    strict: bool = False,
    domain_preset: str = "default",
) -> Splits:
    """Segmentation sets; a classification folder contributes its crack-free images as empty masks.

    Folders named in `holdout` are kept entirely out of training (all their images are the
    cross-surface test). `n_domain` randomised samples (trainer.data.domain) are made from the
    training files only.
    """
    sp = Splits()
    for root in data:
        name = Path(root).name
        if root in holdout or name in holdout:
            if dataset_kind(root) != "segmentation":
                raise DatasetError(
                    f"--holdout {name}: only a segmentation folder can be held out of segmenter training"
                )
            seg = load_segmentation(root, size, progress=progress, strict=strict)
            sp.reports.append(seg.report)
            sp.test[name] = (seg.images, seg.masks)
            sp.files[name] = {"test": list(seg.paths)}
            continue
        if dataset_kind(root) == "segmentation":
            seg = load_segmentation(root, size, progress=progress, strict=strict)
            images, masks, paths = seg.images, seg.masks, seg.paths
            sp.reports.append(seg.report)
        else:
            cs = load_classification(
                root, size, limit_per_class=negatives_per_set, seed=seed, progress=progress, strict=strict
            )
            keep = cs.labels == 0
            images = cs.images[keep]
            masks = np.zeros(images.shape[:3], np.uint8)
            paths = [p for p, k in zip(cs.paths, keep) if k]
            sp.reports.append(cs.report)
        tr, va, te = _three_way(len(images), val_fraction, test_fraction, seed)
        sp.train.append((images[tr], masks[tr]))
        sp.val.append((images[va], masks[va]))
        sp.test[name] = (images[te], masks[te])
        sp.files[name] = {part: [paths[i] for i in idx] for part, idx in (("train", tr), ("val", va), ("test", te))}
        if not masks.any():  # a classification folder's crack-free images
            sp.crack_free += [paths[i] for i in tr]
    if n_synth:
        s = _synth_set(n_synth, size, seed + 2000, crack_probability=0.8)
        tr, va = split_indices(n_synth, val_fraction, seed)
        sp.train.append((s.images[tr], s.masks[tr]))
        sp.val.append((s.images[va], s.masks[va]))
        sp.reports.append(s.report)
    if not sp.train:
        raise DatasetError("no training data: give at least one --data folder or --synth N")
    _require_training_images(sp)
    if n_domain:
        _add_domain_samples(sp, n_domain, size, seed, progress, None, domain_preset)
    return sp


def _require_training_images(sp: Splits) -> None:
    """Training and validation both need images before anything is trained (the split of a folder keeps one image
    for testing and one for validation before training gets any, so a folder of one or two images gives none)."""
    n_train, n_val = (sum(len(chunk[1]) for chunk in getattr(sp, part)) for part in ("train", "val"))
    if n_train == 0 or n_val == 0:
        loaded = ", ".join(f"{r.source}: {r.loaded}" for r in sp.reports) or "none"
        raise DatasetError(
            f"too few images to train on: {n_train} for training and {n_val} for validation after the split "
            f"(usable images per folder: {loaded}); a folder needs at least 3, or add --synth N"
        )


def training_pool(sp: Splits):
    """The training photographs with masks, and the training files known to be crack-free, as a domain pool.

    Never validation, test or held-out files; a classification image labelled "crack" is never a background.
    """
    from trainer.data import domain
    from trainer.data.datasets import mask_path_for

    pairs = set()
    for parts in sp.files.values():
        for p in parts.get("train", []):
            if not p.startswith("synth:") and (mask := mask_path_for(p.split("@")[0])) is not None:
                pairs.add((p.split("@")[0], mask))
    return domain.load_pool(sorted(pairs), sorted(set(sp.crack_free)))


def _add_domain_samples(
    sp: Splits, n: int, size: int, seed: int, progress, label_min_pixels: int | None, preset: str = "default"
) -> None:
    """Append `n` domain-randomised samples (90 % train, 10 % val): masks, or labels when `label_min_pixels` is set."""
    from trainer.data import domain

    pool = training_pool(sp)
    images, masks = domain.generate(pool, n, size, seed + 3000, domain.DOMAIN_PRESETS[preset], progress=progress)
    targets = (
        masks if label_min_pixels is None else (masks.reshape(n, -1).sum(axis=1) >= label_min_pixels).astype(np.int32)
    )
    tr, va = split_indices(n, 0.1, seed)
    sp.train.append((images[tr], targets[tr]))
    sp.val.append((images[va], targets[va]))
    sp.reports.append(
        LoadReport(
            f"domain randomisation{'' if preset == 'default' else f' ({preset} preset)'} "
            f"({len(pool.images)} photographs, {len(pool.backgrounds)} backgrounds)",
            loaded=n,
        )
    )


def save_arrays(path: Path, splits: Splits) -> None:
    """Keep the held-out arrays beside a run so export/evaluate reuse exactly those images."""
    arrays = {}
    for name, (x, y) in splits.test.items():
        arrays[f"test__{name}__x"] = x
        arrays[f"test__{name}__y"] = y
    x, y = splits.stacked("val")
    arrays["val__x"], arrays["val__y"] = x, y
    np.savez_compressed(path, **arrays)


def write_run_files(
    run_dir: Path, kind: str, spec, train_cfg, splits: Splits, data, synthetic: int, holdout=(), **extra
) -> None:
    """run.json (what was trained, how, on what), splits.json and
    heldout.npz: what export, evaluate and the sweep read back."""
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "kind": kind,
        "spec": spec.as_dict(),
        "train": train_cfg.as_dict(),
        "data": [str(Path(d).resolve()) for d in data],
        "synthetic": synthetic,
        "holdout": list(holdout or []),
        "loaded": [r.summary() for r in splits.reports],
        "counts": {
            "train": int(sum(len(c[0]) for c in splits.train)),
            "val": int(sum(len(c[0]) for c in splits.val)),
            "test": {k: int(len(v[0])) for k, v in splits.test.items()},
        },
        **extra,
    }
    (run_dir / "run.json").write_text(json.dumps(meta, indent=1))
    splits.write(run_dir / "splits.json")
    save_arrays(run_dir / "heldout.npz", splits)


def load_arrays(path: Path) -> tuple[dict, tuple]:
    z = np.load(path)
    tests = {}
    for key in z.files:
        if key.startswith("test__") and key.endswith("__x"):
            name = key[len("test__") : -3]
            tests[name] = (z[key], z[f"test__{name}__y"])
    return tests, (z["val__x"], z["val__y"])
