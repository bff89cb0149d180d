"""The image sets an evaluation runs on, gathered from dataset folders and from training runs' held-out splits.

* A classification folder gives a classifier set.
* A segmentation folder gives a segmenter set (images at the segmenter's input
  size, masks resized with `edge.engine.preprocess.resize_mask`) and a classifier set of
  crack / no-crack patches cut from it (a cross-surface test when the classifier
  never trained on that folder).
* `RUN_DIR/heldout.npz` gives exactly the test split a run set aside and never
  trained on: these are the honest headline numbers.

Every set says where it came from and whether the bundle's models could have
seen its images in training (`unseen`), so the report can say so next to each number.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.data.assemble import dataset_kind, load_arrays
from trainer.data.datasets import DatasetError, load_classification, load_segmentation, patches_from_segmentation

log = logging.getLogger("crack-train.evaluate")

# Patches are cut as in trainer.data.assemble.classifier_splits: 128-px windows of the image at 448 px, 8 per image.
PATCH_SOURCE_SIZE = 448
PATCH_SIZE = 128
PATCHES_PER_IMAGE = 8


@dataclass
class EvalSet:
    key: str  # unique name in the report: "metu_cls", "sut_seg:patches", "heldout:metu_cls", "heldout:all"
    role: str  # "classifier" | "segmenter"
    images: np.ndarray  # N x H x W x 3 uint8 RGB, any size (edge.engine.preprocess.model_input resizes)
    targets: np.ndarray  # N labels (1 = crack) or N x h x w 0/1 masks
    source: str  # where the images came from, in words
    unseen: bool | None  # True: never seen in training; False: overlaps training; None: unknown

    @property
    def heldout(self) -> bool:
        return self.key.startswith("heldout:")


@dataclass(frozen=True)
class TrainingData:
    """The data folders a bundle's model of one role was trained on (from the manifest's provenance)."""

    folders: frozenset[str]  # resolved paths and folder names
    holdout: frozenset[str]  # folder names or paths kept out of training
    runs: frozenset[str]  # run directory names
    known: bool  # False when the manifest records no run of this role

    def saw(self, folder: str | Path) -> bool | None:
        """Did training use `folder`? None when the manifest does not say."""
        if not self.known:
            return None
        path = str(Path(folder).resolve())
        if Path(folder).name in self.holdout or path in self.holdout or str(folder) in self.holdout:
            return False
        # Manifests since site bundles record folders by name only (no training-host paths): match names too.
        return path in self.folders or Path(folder).name in self.folders


def training_data(manifest_raw: dict, role: str) -> TrainingData:
    folders: set[str] = set()
    holdout: set[str] = set()
    runs: set[str] = set()
    for name, run in (manifest_raw.get("data", {}).get("runs") or {}).items():
        if run.get("kind") != role:
            continue
        runs.add(name)
        for d in run.get("data", []):
            folders.update((str(Path(d).resolve()), Path(d).name))
        holdout.update(run.get("holdout", []) or [])
    return TrainingData(frozenset(folders), frozenset(holdout), frozenset(runs), bool(runs))


def _subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    if not limit or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def folder_sets(
    folder: str | Path,
    sizes: dict[str, int],
    trained: dict[str, TrainingData],
    limit: int | None = None,
    seed: int = 0,
    progress=None,
) -> list[EvalSet]:
    """The sets one dataset folder gives (see the module docstring); `sizes` maps role -> model input size."""
    folder = Path(folder)
    name = folder.name
    kind = dataset_kind(folder)
    seen_cls = trained["classifier"].saw(folder)
    unseen_cls = None if seen_cls is None else not seen_cls
    if kind == "classification":
        cs = load_classification(folder, sizes["classifier"], limit_per_class=limit, seed=seed, progress=progress)
        _log_skipped(cs.report)
        skipped = f", {len(cs.report.skipped)} unreadable skipped" if cs.report.skipped else ""
        return [
            EvalSet(
                name,
                "classifier",
                cs.images,
                cs.labels,
                f"folder {folder} ({cs.report.loaded} images{skipped})",
                unseen_cls,
            )
        ]
    seen_seg = trained["segmenter"].saw(folder)
    seg = load_segmentation(folder, sizes["segmenter"], progress=progress)
    _log_skipped(seg.report)
    keep = _subsample(len(seg.images), limit, seed)
    sets = [
        EvalSet(
            name,
            "segmenter",
            seg.images[keep],
            seg.masks[keep],
            f"folder {folder} ({len(keep)} image/mask pairs)",
            None if seen_seg is None else not seen_seg,
        )
    ]
    big = load_segmentation(folder, PATCH_SOURCE_SIZE, progress=progress)
    big.images, big.masks, big.paths = big.images[keep], big.masks[keep], [big.paths[i] for i in keep]
    patches = patches_from_segmentation(
        big, patch=PATCH_SIZE, out_size=sizes["classifier"], seed=seed, per_image=PATCHES_PER_IMAGE
    )
    sets.append(
        EvalSet(
            f"{name}:patches",
            "classifier",
            patches.images,
            patches.labels,
            f"{len(patches.labels)} crack / no-crack patches ({PATCH_SIZE} px of the image at {PATCH_SOURCE_SIZE} px) "
            f"cut from {len(keep)} images of {folder}",
            unseen_cls,
        )
    )
    return sets


def _log_skipped(report) -> None:
    if report.skipped:
        log.warning("%s", report.summary())


def heldout_sets(
    run_dir: str | Path, bundle_runs: dict[str, frozenset[str]], limit: int | None = None, seed: int = 0
) -> list[EvalSet]:
    """The test split a training run saved in heldout.npz (never used for training or early stopping)."""
    run_dir = Path(run_dir)
    arrays, meta_path = run_dir / "heldout.npz", run_dir / "run.json"
    if not arrays.is_file() or not meta_path.is_file():
        raise DatasetError(
            f"{run_dir}: expected heldout.npz and run.json (a run directory written by `crack-train classifier` "
            "or `crack-train segmenter`)"
        )
    meta = json.loads(meta_path.read_text())
    role = meta.get("kind")
    if role not in ("classifier", "segmenter"):
        raise DatasetError(f"{meta_path}: kind {role!r} is not classifier or segmenter")
    in_bundle = run_dir.name in bundle_runs.get(role, frozenset())
    if not in_bundle:
        log.warning(
            "%s is not one of the bundle's %s training runs (%s): its "
            "held-out split may overlap what the bundle was trained on",
            run_dir,
            role,
            ", ".join(sorted(bundle_runs.get(role, ()))) or "none recorded",
        )
    tests, _ = load_arrays(arrays)
    if not tests:
        raise DatasetError(f"{arrays}: holds no test__<name>__x arrays (no held-out split was saved)")
    holdout = set(meta.get("holdout", []) or [])
    sets = []
    for name, (x, y) in sorted(tests.items()):
        keep = _subsample(len(x), limit, seed)
        how = "whole folder kept out of training" if name in holdout else "test split, never trained on"
        source = f"held-out {role} set of run {run_dir.name}: {name} ({how}; {len(keep)} images)"
        if not in_bundle:
            source += " - this run is not one the bundle was built from"
        sets.append(EvalSet(f"heldout:{name}", role, x[keep], y[keep], source, True if in_bundle else None))
    return sets
