"""Loaders for the dataset layouts people actually have, with deterministic splits.

Classification: a folder with one sub-folder per class, named (any letter case)
`positive`/`crack` for cracks and `negative`/`no_crack`/`nocrack` for clean
surfaces, or a `labels.csv` (`file,label`) as written by `crack-train synth`, or
the CSV of `crackd events export` (operators' labels on event snapshots). Segmentation: `images/` and
`masks/` matched by file stem.

Files that cannot be used (unreadable, truncated, too small, a mask that does not fit its image) are
skipped, counted and listed with the reason (`LoadReport`), or with `strict` stop the run naming the file
(`crack-train adapt`: each of a site's few labelled images matters). Structural problems (a mask without its
image, an empty folder) raise `DatasetError`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.engine.preprocess import mask_to_binary, model_input, resize_mask
from edge.sources.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, check_size, image_files, read_rgb

POSITIVE_DIRS = {"positive", "crack", "cracks", "1"}
NEGATIVE_DIRS = {"negative", "no_crack", "nocrack", "no-crack", "non_crack", "0"}
LABEL_WORDS = {"crack": 1, "positive": 1, "1": 1, "no_crack": 0, "no-crack": 0, "negative": 0, "0": 0}
# Smaller images hold nothing to learn from once scaled to the model's input (224 px): a 1x1 file is a mistake.
MIN_IMAGE_SIDE = 32
# A mask may be stored at another resolution than its image, but not another shape: that is the wrong file.
MASK_ASPECT_TOLERANCE = 0.02


class DatasetError(ValueError):
    """A dataset folder that cannot be used as given; the message says what to fix."""


class UnusableFile(DatasetError):
    """One image or mask that cannot be training data; the message names the file and why."""


def _is_truncated_jpeg(path: Path) -> bool:
    """A JPEG without its end-of-image marker (libjpeg decodes what is there and fills the rest with grey)."""
    with path.open("rb") as f:
        if f.read(2) != b"\xff\xd8":
            return False
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 4096))
        return b"\xff\xd9" not in f.read()  # some cameras write a few bytes after the marker


def read_training_image(path: Path) -> np.ndarray:
    """The RGB pixels of one training image; UnusableFile naming it when it cannot be training data."""
    if not path.is_file():
        raise UnusableFile(f"{path}: missing or not a file")
    if path.stat().st_size == 0:
        raise UnusableFile(f"{path}: empty file")
    if _is_truncated_jpeg(path):  # checked first: some OpenCV builds decode the part that is there
        raise UnusableFile(f"{path}: truncated JPEG (no end-of-image marker; the file was cut short)")
    rgb = read_rgb(path)  # ImageTooLarge (a DatasetError's sibling ValueError) names the file and its size
    if rgb is None:
        raise UnusableFile(f"{path}: not an image, or corrupt")
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise UnusableFile(f"{path}: {w}x{h} pixels, smaller than {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}")
    return rgb


def read_training_mask(path: Path, image_hw: tuple[int, int]) -> np.ndarray:
    """A mask (0/255 or 0/1, any size with its image's shape) as 0/1; UnusableFile naming it otherwise."""
    if not path.is_file() or path.stat().st_size == 0:
        raise UnusableFile(f"{path}: missing or empty mask")
    data = np.fromfile(str(path), dtype=np.uint8)
    check_size(data, DEFAULT_MAX_PIXELS, str(path))
    raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise UnusableFile(f"{path}: not an image, or corrupt")
    (mh, mw), (ih, iw) = raw.shape[:2], image_hw
    if abs(mw / mh - iw / ih) > MASK_ASPECT_TOLERANCE * (iw / ih):
        raise UnusableFile(
            f"{path}: mask is {mw}x{mh} but its image is {iw}x{ih} (not the same shape: the wrong mask?)"
        )
    return mask_to_binary(raw)


@dataclass
class LoadReport:
    """What a loader read and what it had to skip (shown in every run's summary)."""

    source: str
    loaded: int = 0
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.source}: {self.loaded} loaded, {len(self.skipped)} skipped"
        if self.skipped:
            shown = ", ".join(self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else "")
            text += f" (skipped: {shown})"
        return text


@dataclass
class ClassificationSet:
    images: np.ndarray  # N x H x W x 3 uint8 RGB, already at the model's input size
    labels: np.ndarray  # N int (1 = crack)
    paths: list[str]
    report: LoadReport


@dataclass
class SegmentationSet:
    images: np.ndarray  # N x H x W x 3 uint8 RGB at the model's input size
    masks: np.ndarray  # N x H x W uint8 0/1
    paths: list[str]
    report: LoadReport


def labelled_csv_files(csv_path: Path, image_dir: Path) -> list[tuple[Path, int]]:
    """(path, label) rows of a labels CSV: `file,label` (crack-train synth) or a `crackd events export`
    (`snapshot,label`, operators' labels). Rows without a label are not training data and are left out."""
    pairs = []
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        column = (
            "file"
            if "file" in (reader.fieldnames or [])
            else "snapshot"
            if "snapshot" in (reader.fieldnames or [])
            else None
        )
        if column is None or "label" not in (reader.fieldnames or []):
            raise DatasetError(
                f"{csv_path}: expected columns file,label (or snapshot,label "
                f"from `crackd events export`), got {reader.fieldnames}"
            )
        for line_no, row in enumerate(reader, start=2):
            word = (row.get("label") or "").strip().lower()
            if not word or not row.get(column):
                continue
            if word not in LABEL_WORDS:
                raise DatasetError(f"{csv_path}:{line_no}: label {word!r} is not one of crack/no_crack")
            path = Path(row[column])
            pairs.append((path if path.is_absolute() else image_dir / path, LABEL_WORDS[word]))
    return pairs


def classification_files(root: str | Path) -> list[tuple[Path, int]]:
    """List (path, label) pairs of a classification dataset (folder or labels CSV), sorted for determinism."""
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        pairs: list[tuple[Path, int]] = labelled_csv_files(root, root.parent)
        if not pairs:
            raise DatasetError(
                f"{root}: the dataset is empty (no labelled rows; label events with `crackd events label`)"
            )
        return pairs
    if not root.is_dir():
        raise DatasetError(
            f"{root}: not a folder; expected a dataset folder with "
            "positive/ and negative/ (or crack/ and no_crack/) inside"
        )
    labels_csv = root / "labels.csv"
    pairs = []
    if labels_csv.is_file():
        pairs = labelled_csv_files(labels_csv, root / "images" if (root / "images").is_dir() else root)
    else:
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            name = sub.name.lower()
            label = 1 if name in POSITIVE_DIRS else 0 if name in NEGATIVE_DIRS else None
            if label is not None:
                pairs.extend((p, label) for p in image_files(sub))
        if not any(p.is_dir() and p.name.lower() in POSITIVE_DIRS | NEGATIVE_DIRS for p in root.iterdir()):
            raise DatasetError(
                f"{root}: no class folders found; expected positive/ and "
                "negative/ (any case) or crack/ and no_crack/, or a labels.csv"
            )
    if not pairs:
        raise DatasetError(
            f"{root}: the dataset is empty (no {', '.join(sorted(IMAGE_SUFFIXES))} files in its class folders)"
        )
    return pairs


def load_classification(
    root: str | Path,
    size: int,
    limit_per_class: int | None = None,
    seed: int = 0,
    progress=None,
    strict: bool = False,
) -> ClassificationSet:
    """Read a classification folder, resized to `size` through the device preprocessing.

    An unusable file is skipped and listed, or with `strict` raised (UnusableFile)."""
    pairs = classification_files(root)
    if limit_per_class:
        rng = np.random.default_rng(seed)
        chosen = []
        for label in (0, 1):
            idx = [i for i, (_, lab) in enumerate(pairs) if lab == label]
            rng.shuffle(idx)
            chosen += sorted(idx[:limit_per_class])
        pairs = [pairs[i] for i in sorted(chosen)]
    report = LoadReport(str(root))
    images, labels, paths = [], [], []
    for path, label in pairs if progress is None else progress(pairs, desc=f"reading {Path(root).name}"):
        try:
            rgb = read_training_image(Path(path))
        except UnusableFile as exc:
            if strict:
                raise
            report.skipped.append(str(exc))
            continue
        images.append(model_input(rgb, size, size))
        labels.append(label)
        paths.append(str(path))
    report.loaded = len(images)
    if not images:
        raise DatasetError(f"{root}: none of the {len(pairs)} images could be used: " + "; ".join(report.skipped[:3]))
    return ClassificationSet(np.stack(images), np.array(labels, np.int32), paths, report)


def segmentation_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """Match `images/` and `masks/` by file stem; any unmatched file is an error naming it."""
    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise DatasetError(
                f"{root}: missing {d.name}/ folder; a segmentation dataset "
                "needs images/ and masks/ with files matched by stem"
            )
    images = {p.stem: p for p in image_files(img_dir)}
    masks = {p.stem: p for p in image_files(mask_dir)}
    no_image = sorted(set(masks) - set(images))
    no_mask = sorted(set(images) - set(masks))
    if no_image or no_mask:
        parts = []
        if no_mask:
            parts.append(f"images without a mask: {', '.join(images[s].name for s in no_mask[:5])}")
        if no_image:
            parts.append(f"masks without an image: {', '.join(masks[s].name for s in no_image[:5])}")
        raise DatasetError(f"{root}: " + "; ".join(parts) + " (image and mask must share a file stem)")
    if not images:
        raise DatasetError(f"{root}: the dataset is empty (no images in {img_dir})")
    return [(images[s], masks[s]) for s in sorted(images)]


def load_segmentation(root: str | Path, size: int, progress=None, strict: bool = False) -> SegmentationSet:
    """Read image/mask pairs resized to `size`; masks may be 0/255 or 0/1 and of any size with the image's shape.

    An unusable pair is skipped and listed, or with `strict` raised (UnusableFile)."""
    pairs = segmentation_pairs(root)
    report = LoadReport(str(root))
    images, masks, paths = [], [], []
    for img_path, mask_path in pairs if progress is None else progress(pairs, desc=f"reading {Path(root).name}"):
        try:
            rgb = read_training_image(img_path)
            mask = read_training_mask(mask_path, rgb.shape[:2])
        except UnusableFile as exc:
            if strict:
                raise
            report.skipped.append(str(exc))
            continue
        images.append(model_input(rgb, size, size))
        masks.append(resize_mask(mask, size, size))
        paths.append(str(img_path))
    report.loaded = len(images)
    if not images:
        raise DatasetError(
            f"{root}: none of the {len(pairs)} image/mask pairs could be used: " + "; ".join(report.skipped[:3])
        )
    return SegmentationSet(np.stack(images), np.stack(masks), paths, report)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation split of range(n) for a given seed."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def patches_from_segmentation(
    seg: SegmentationSet, patch: int, out_size: int, seed: int = 0, per_image: int = 4
) -> ClassificationSet:
    """Cut crack / no-crack patches from full images using their masks (a cross-surface classifier test).

    A patch is a crack when >= 1 % of its central half is crack; no-crack when it holds no crack pixel at all.
    """
    rng = np.random.default_rng(seed)
    images, labels, paths = [], [], []
    n, h, w = seg.masks.shape
    for i in range(n):
        m = seg.masks[i]
        got = {0: 0, 1: 0}
        for _ in range(per_image * 40):
            if got[0] >= per_image // 2 and got[1] >= per_image // 2:
                break
            y, x = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
            window = m[y : y + patch, x : x + patch]
            q = patch // 4
            centre = window[q : patch - q, q : patch - q]
            label = 1 if centre.mean() >= 0.01 else 0 if window.max() == 0 else None
            if label is None or got[label] >= per_image // 2:
                continue
            got[label] += 1
            images.append(model_input(seg.images[i][y : y + patch, x : x + patch], out_size, out_size))
            labels.append(label)
            paths.append(f"{seg.paths[i]}@{x},{y}")
    report = LoadReport(f"patches of {seg.report.source}", loaded=len(images))
    return ClassificationSet(np.stack(images), np.array(labels, np.int32), paths, report)


def mask_path_for(image_path: str | Path) -> Path | None:
    """The mask of a segmentation image (`ROOT/images/X.*` -> `ROOT/masks/X.*`), or None for any other image."""
    p = Path(image_path)
    if p.parent.name != "images":
        return None
    masks = p.parent.parent / "masks"
    for candidate in sorted(masks.glob(f"{p.stem}.*")) if masks.is_dir() else []:
        if candidate.suffix.lower() in IMAGE_SUFFIXES:
            return candidate
    return None
