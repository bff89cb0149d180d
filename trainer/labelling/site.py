"""A site dataset folder as the labelling commands see it: the frames, their pre-annotations, the masks written back.

    SITE/images/      the frames (what `crack-train adapt` trains on, with masks/)
    SITE/masks/       0/255 PNG masks named by the image's stem: the labels (written by `label import`)
    SITE/predicted/   crackd's predicted masks, as `crackd infer --mask-dir` writes them (0/255 PNG, image stem)

A frame's pre-annotation is its label in masks/ when it has one (a person's work is never replaced by a guess),
otherwise crackd's prediction, otherwise nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.atomic_write import write_bytes_atomic
from edge.engine.preprocess import resize_mask
from edge.sources.images import decode_rgb, image_files
from trainer.data.datasets import DatasetError, UnusableFile, read_training_image, read_training_mask

PREDICTED_DIR = "predicted"


class LabelFileError(DatasetError):
    """A labelling tool's file that cannot be read back; the message names the file, the entry and what was expected."""


@dataclass(frozen=True)
class SiteFrame:
    """One image of the site and what a labelling tool should show on it before anyone draws."""

    stem: str
    image: Path
    height: int
    width: int
    preannotation: np.ndarray | None  # 0/1 at the image's size, or None: nothing to start from
    source: str  # "masks", "predicted" or "none": where the pre-annotation came from

    @property
    def drawn(self) -> bool:
        """Whether the frame goes out with something drawn on it (an empty mask is nothing to correct)."""
        return self.preannotation is not None and bool(self.preannotation.any())


@dataclass
class LabelledFrame:
    """A frame a person finished in the labelling tool, named by its image's stem: its mask (0/1 at the image's
    size), or None when nothing was drawn on it (a crack-free frame: written as an empty mask)."""

    stem: str
    mask: np.ndarray | None
    image_bytes: bytes | None = None  # the image itself, when the tool's export carries it (CVAT's JPEGImages/)
    image_name: str | None = None


@dataclass
class ImportSummary:
    written: list[str] = field(default_factory=list)  # stems whose mask was written
    images_added: list[str] = field(default_factory=list)  # images copied in from the export
    not_labelled: list[str] = field(default_factory=list)  # frames the tool has no finished label for


def _read_preannotation(path: Path, height: int, width: int) -> np.ndarray:
    try:
        mask = read_training_mask(path, (height, width))
    except UnusableFile as exc:
        raise DatasetError(str(exc)) from None
    return resize_mask(mask, height, width)


def site_frames(site: Path, predicted: Path | None = None) -> list[SiteFrame]:
    """The frames of a site folder with their pre-annotations; DatasetError naming what is missing or unusable."""
    images_dir = site / "images"
    if not images_dir.is_dir():
        raise DatasetError(f"{site}: no images/ folder (a site dataset keeps its frames in SITE/images/)")
    predicted_dir = predicted if predicted is not None else site / PREDICTED_DIR
    if predicted is not None and not predicted_dir.is_dir():
        raise DatasetError(f"--predicted {predicted_dir}: no such folder")
    images = image_files(images_dir)
    if not images:
        raise DatasetError(f"{images_dir}: no images to label")
    stems = [p.stem for p in images]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise DatasetError(f"{images_dir}: two images share the stem {twice[0]!r} (a mask is matched by stem)")
    frames = []
    for path in images:
        try:
            height, width = read_training_image(path).shape[:2]
        except UnusableFile as exc:
            raise DatasetError(str(exc)) from None
        source, pre = "none", None
        for kind, folder in (("masks", site / "masks"), ("predicted", predicted_dir)):
            candidate = folder / f"{path.stem}.png"
            if candidate.is_file():
                source, pre = kind, _read_preannotation(candidate, height, width)
                break
        frames.append(SiteFrame(path.stem, path, height, width, pre, source))
    return frames


def image_sizes(site: Path) -> dict[str, tuple[int, int]]:
    """{stem: (height, width)} of the site's images (an empty dict when there is no images/ folder yet)."""
    folder = site / "images"
    if not folder.is_dir():
        return {}
    sizes = {}
    for path in image_files(folder):
        try:
            sizes[path.stem] = read_training_image(path).shape[:2]
        except UnusableFile as exc:
            raise DatasetError(str(exc)) from None
    return sizes


def _size_of(frame: LabelledFrame, sizes: dict[str, tuple[int, int]]) -> tuple[int, int]:
    if frame.stem in sizes:
        return sizes[frame.stem]
    rgb = decode_rgb(np.frombuffer(frame.image_bytes or b"", np.uint8))
    if rgb is None:
        raise LabelFileError(f"{frame.image_name}: the image in the export cannot be decoded")
    return rgb.shape[0], rgb.shape[1]


def write_labels(site: Path, labelled: list[LabelledFrame], source: Path) -> ImportSummary:
    """Write each finished mask to SITE/masks/STEM.png (0/255), after checking all of them: a bad entry stops the
    import before anything is written. An image the site lacks is taken from the export when it carries it."""
    sizes = image_sizes(site)
    summary = ImportSummary()
    for frame in labelled:
        if frame.stem in sizes and frame.mask is not None:
            h, w = frame.mask.shape
            if sizes[frame.stem] != (h, w):
                ih, iw = sizes[frame.stem]
                raise LabelFileError(
                    f"{source}: the mask of {frame.stem!r} is {w}x{h} but {site / 'images'} has it at {iw}x{ih} "
                    "(labelled on another copy of the frame?)"
                )
        elif frame.stem not in sizes and frame.image_bytes is None:
            raise LabelFileError(
                f"{source}: {frame.stem!r} is labelled but {site / 'images'} has no image with that stem "
                "(import into the site folder the task was exported from)"
            )
    (site / "images").mkdir(parents=True, exist_ok=True)
    (site / "masks").mkdir(parents=True, exist_ok=True)
    for frame in labelled:
        if frame.stem not in sizes and frame.image_bytes is not None:
            name = frame.image_name or f"{frame.stem}.png"
            write_bytes_atomic(site / "images" / name, frame.image_bytes)
            summary.images_added.append(frame.stem)
        mask = frame.mask if frame.mask is not None else np.zeros(_size_of(frame, sizes), np.uint8)
        ok, png = cv2.imencode(".png", np.where(mask > 0, 255, 0).astype(np.uint8))
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 array as PNG
            raise LabelFileError(f"{source}: could not encode the mask of {frame.stem!r} as PNG")
        write_bytes_atomic(site / "masks" / f"{frame.stem}.png", png.tobytes())
        summary.written.append(frame.stem)
    return summary
