"""Annotated pictures of a result: crack pixels tinted, cracks boxed, measurements labelled."""

from __future__ import annotations

import cv2
import numpy as np

TINT = np.array([255, 40, 40], np.float32)  # RGB red
BOX = (255, 220, 0)
TEXT_OK, TEXT_CRACK = (40, 200, 40), (255, 60, 60)


def _label(img: np.ndarray, text: str, org: tuple[int, int], color) -> None:
    scale = max(0.4, img.shape[1] / 1400.0)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = org
    y = max(th + 2, y)
    cv2.rectangle(img, (x, y - th - 3), (x + tw + 4, y + base), (0, 0, 0), -1)
    cv2.putText(img, text, (x + 2, y - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def draw_overlay(rgb: np.ndarray, result) -> np.ndarray:
    """Return a copy of `rgb` annotated with a FrameResult (edge.engine.cascade)."""
    img = rgb.copy()
    mask = result.mask
    if mask is not None and mask.any():
        on = mask > 0
        img[on] = (img[on].astype(np.float32) * 0.4 + TINT * 0.6).astype(np.uint8)
    m = result.measurements
    if m is not None:
        unit_mm = m.mm_per_pixel
        for i, c in enumerate(m.components):
            x, y, w, h = c.bbox
            cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), BOX, 1)
            if unit_mm:
                text = f"#{i + 1} L {c.length_px * unit_mm:.0f}mm W {c.max_width_px * unit_mm:.1f}mm"
            else:
                text = f"#{i + 1} L {c.length_px:.0f}px W {c.max_width_px:.1f}px"
            _label(img, text, (x, y - 2), BOX)
    head = f"{'CRACK' if result.crack else 'no crack'}  p={result.score:.2f}"
    if m is not None and m.count:
        head += f"  {m.count} crack(s)  area {100 * m.area_fraction:.2f}%"
    _label(img, head, (4, 4), TEXT_CRACK if result.crack else TEXT_OK)
    return img
