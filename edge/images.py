"""Image files: which suffixes count as images, how folders are listed and files decoded (to RGB).

One definition for the folder camera, `crackd infer`, the bundle self-test and the trainer's loaders.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in `folder` (and below it when `recursive`), sorted by path."""
    found = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def decode_rgb(data: np.ndarray | None) -> np.ndarray | None:
    """Decode encoded image bytes (uint8 array) to RGB uint8, or None when empty or corrupt."""
    if data is None or data.size == 0:
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_rgb(path: str | Path) -> np.ndarray | None:
    """Decode an image file to RGB uint8, or None when it is missing, empty or corrupt."""
    path = Path(path)
    return decode_rgb(np.fromfile(str(path), dtype=np.uint8)) if path.is_file() else None
