"""Frames on disk for the folder camera: a pattern string says which are cracks, which are clear, which are corrupt."""

from __future__ import annotations

from pathlib import Path


def write_frames(folder: Path, pattern: str, size=(64, 48), start: int = 0) -> list[Path]:
    """Image files named in replay order from a pattern: 'C' = a dark crack line, '.' = blank light surface, 'X' = corrupt file."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    paths = []
    for i, ch in enumerate(pattern):
        path = folder / f"f{start + i:06d}.png"
        if ch == "X":
            path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
        else:
            img = np.full((h, w, 3), 215, np.uint8)
            if ch == "C":
                cv2.line(img, (4, 6 + i % 5), (w - 6, h - 8), (15, 15, 15), 3)
            cv2.imwrite(str(path), img)
        paths.append(path)
    return paths
