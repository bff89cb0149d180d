"""Annotated pictures of a result: crack pixels tinted, cracks boxed, measurements labelled.

Labels are laid out (`place_labels`) so that each stays inside the picture and none covers another:
at 320x240 a crack's label is a third of the frame wide, and labels drawn at their boxes' corners ran off
the right edge and over each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

TINT = np.array([255, 40, 40], np.float32)  # RGB red
BOX = (255, 220, 0)
TEXT_OK, TEXT_CRACK = (40, 200, 40), (255, 60, 60)
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    def overlaps(self, other: Rect) -> bool:
        return (
            self.x < other.x + other.w
            and other.x < self.x + self.w
            and self.y < other.y + other.h
            and other.y < self.y + self.h
        )

    def inside(self, width: int, height: int) -> bool:
        return self.x >= 0 and self.y >= 0 and self.x + self.w <= width and self.y + self.h <= height


@dataclass(frozen=True)
class Placement:
    rect: Rect
    choice: int  # which of the label's alternative sizes was placed (0 = the first, preferred one)


def _candidates(box: Rect, w: int, h: int, width: int, height: int) -> list[tuple[int, int]]:
    """Top-left corners for a `w` x `h` label of `box`, best first, clamped into the picture."""
    near = [
        (box.x, box.y - h),  # above, left-aligned
        (box.x, box.y + box.h),  # below
        (box.x + box.w - w, box.y - h),  # above, right-aligned
        (box.x + box.w - w, box.y + box.h),  # below, right-aligned
        (box.x, box.y),  # inside, top
        (box.x, box.y + box.h - h),  # inside, bottom
    ]
    # Then anywhere along the picture's rows, nearest to the box first.
    rows = sorted(range(0, height - h + 1, max(1, h // 2)), key=lambda y: abs(y - box.y))
    far = [(x, y) for y in rows for x in (box.x, width - w, 0)]
    clamp = [(min(max(0, x), width - w), min(max(0, y), height - h)) for x, y in near + far]
    return list(dict.fromkeys(clamp))


def place_labels(
    boxes: list[Rect], sizes: list[list[tuple[int, int]]], width: int, height: int, taken: list[Rect] | None = None
) -> list[Placement | None]:
    """Where to put each box's label: inside the `width` x `height` picture, clear of `taken` and of each other.

    `sizes[i]` lists label i's alternative (w, h), preferred first (e.g. the full text, then just its number);
    labels are placed in order (the largest crack first), each at the first free spot near its box, in the
    first alternative that fits anywhere; None when none does.
    """
    placed = list(taken or [])
    out: list[Placement | None] = []
    for box, alternatives in zip(boxes, sizes):
        spot = None
        for choice, (w, h) in enumerate(alternatives):
            if w > width or h > height:
                continue
            for x, y in _candidates(box, w, h, width, height):
                rect = Rect(x, y, w, h)
                if not any(rect.overlaps(other) for other in placed):
                    spot = Placement(rect, choice)
                    break
            if spot:
                break
        if spot:
            placed.append(spot.rect)
        out.append(spot)
    return out


def _scale(width: int) -> float:
    return max(0.4, width / 1400.0)


def _label_size(text: str, scale: float) -> tuple[int, int]:
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    return tw + 4, th + base + 3


def _draw_label(img: np.ndarray, text: str, rect: Rect, scale: float, color: tuple[int, int, int]) -> None:
    cv2.rectangle(img, (rect.x, rect.y), (rect.x + rect.w - 1, rect.y + rect.h - 1), (0, 0, 0), -1)
    (_, th), _ = cv2.getTextSize(text, FONT, scale, 1)
    cv2.putText(img, text, (rect.x + 2, rect.y + th + 2), FONT, scale, color, 1, cv2.LINE_AA)


def draw_overlay(rgb: np.ndarray, result) -> np.ndarray:
    """Return a copy of `rgb` annotated with a FrameResult (edge.engine.cascade)."""
    img = rgb.copy()
    height, width = img.shape[:2]
    scale = _scale(width)
    mask = result.mask
    if mask is not None and mask.any():
        on = mask > 0
        img[on] = (img[on].astype(np.float32) * 0.4 + TINT * 0.6).astype(np.uint8)
    m = result.measurements
    # The header's longest form that fits the width (a 160 px frame has room for the verdict only).
    heads = [f"{'CRACK' if result.crack else 'no crack'}  p={result.score:.2f}"]
    if m is not None and m.count:
        heads.insert(0, f"{heads[0]}  {m.count} crack(s)")
        heads.insert(0, f"{heads[0]}  area {100 * m.area_fraction:.2f}%")
    head = next((h for h in heads if _label_size(h, scale)[0] <= width), heads[-1])
    hw, hh = _label_size(head, scale)
    head_rect = Rect(0, 0, min(hw, width), min(hh, height))
    _draw_label(img, head, head_rect, scale, TEXT_CRACK if result.crack else TEXT_OK)
    if m is None:
        return img
    unit_mm = m.mm_per_pixel
    boxes, texts = [], []
    for i, c in enumerate(m.components):
        x, y, w, h = c.bbox
        cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), BOX, 1)
        boxes.append(Rect(x, y, w, h))
        if unit_mm:
            full = f"#{i + 1} L {c.length_px * unit_mm:.0f}mm W {c.max_width_px * unit_mm:.1f}mm"
        else:
            full = f"#{i + 1} L {c.length_px:.0f}px W {c.max_width_px:.1f}px"
        texts.append([full, f"#{i + 1}"])
    sizes = [[_label_size(t, scale) for t in alternatives] for alternatives in texts]
    for alternatives, spot in zip(texts, place_labels(boxes, sizes, width, height, [head_rect])):
        if spot is not None:
            _draw_label(img, alternatives[spot.choice], spot.rect, scale, BOX)
    return img
