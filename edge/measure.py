"""Crack measurements from a binary mask: pure numpy/OpenCV functions.

Per connected component and in total: pixel area and area fraction, bounding
box, centroid, skeleton length, mean and maximum width, orientation; in
millimetres too when a `mm_per_pixel` scale is known.

Length is measured on a one-pixel skeleton (Zhang-Suen thinning): orthogonal
links count 1, diagonal links sqrt(2), and each free end is extended by the
local half-width the thinning ate. Width comes from the Euclidean distance
transform: max width = 2*d - 1 at the skeleton (d = distance to the nearest
background pixel centre); mean width = area / length.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class CrackComponent:
    area_px: int
    bbox: tuple[int, int, int, int]  # x, y, width, height in frame pixels
    centroid: tuple[float, float]  # x, y
    length_px: float
    max_width_px: float
    mean_width_px: float
    orientation_deg: float  # principal axis, 0 = horizontal, counter-clockwise on screen, [0, 180)


@dataclass(frozen=True)
class CrackMeasurements:
    frame_size: tuple[int, int]  # width, height
    total_area_px: int
    area_fraction: float
    length_px: float
    max_width_px: float
    mean_width_px: float
    bbox: tuple[int, int, int, int] | None
    orientation_deg: float | None
    components: list[CrackComponent] = field(default_factory=list)
    mm_per_pixel: float | None = None

    @property
    def count(self) -> int:
        return len(self.components)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["count"] = self.count
        d["frame_size"] = list(self.frame_size)
        d["bbox"] = list(self.bbox) if self.bbox else None
        for c in d["components"]:
            c["bbox"] = list(c["bbox"])
            c["centroid"] = [round(v, 1) for v in c["centroid"]]
            for k in ("length_px", "max_width_px", "mean_width_px", "orientation_deg"):
                c[k] = round(c[k], 2)
        for k in ("length_px", "max_width_px", "mean_width_px"):
            d[k] = round(d[k], 2)
        d["area_fraction"] = round(d["area_fraction"], 6)
        if self.mm_per_pixel:
            s = self.mm_per_pixel
            d["area_mm2"] = round(self.total_area_px * s * s, 3)
            d["length_mm"] = round(self.length_px * s, 2)
            d["max_width_mm"] = round(self.max_width_px * s, 3)
            d["mean_width_mm"] = round(self.mean_width_px * s, 3)
            for c, comp in zip(d["components"], self.components):
                c["length_mm"] = round(comp.length_px * s, 2)
                c["max_width_mm"] = round(comp.max_width_px * s, 3)
        return d


def thin(mask01: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a 0/1 mask to a one-pixel-wide 8-connected skeleton (vectorised)."""
    img = np.pad((mask01 > 0).astype(np.uint8), 1)
    core = img[1:-1, 1:-1]
    while True:
        changed = False
        for step in (0, 1):
            p2, p3, p4 = img[:-2, 1:-1], img[:-2, 2:], img[1:-1, 2:]
            p5, p6, p7 = img[2:, 2:], img[2:, 1:-1], img[2:, :-2]
            p8, p9 = img[1:-1, :-2], img[:-2, :-2]
            ring = (p2, p3, p4, p5, p6, p7, p8, p9, p2)
            neighbours = p2 + p3 + p4 + p5 + p6 + p7 + p8 + p9
            transitions = sum(((ring[i] == 0) & (ring[i + 1] == 1)).astype(np.uint8) for i in range(8))
            if step == 0:
                cond = ((p2 * p4 * p6) == 0) & ((p4 * p6 * p8) == 0)
            else:
                cond = ((p2 * p4 * p8) == 0) & ((p2 * p6 * p8) == 0)
            remove = (core == 1) & (neighbours >= 2) & (neighbours <= 6) & (transitions == 1) & cond
            if remove.any():
                core[remove] = 0
                changed = True
        if not changed:
            return core.copy()


def skeleton_length(skeleton: np.ndarray) -> tuple[float, np.ndarray]:
    """Length of a one-pixel skeleton in pixels, and the (row, col) of its free ends."""
    s = skeleton.astype(bool)
    orth = np.count_nonzero(s[:, :-1] & s[:, 1:]) + np.count_nonzero(s[:-1, :] & s[1:, :])
    # A diagonal link that also has an orthogonal path through a shared neighbour is a corner, not a step.
    d1 = s[:-1, :-1] & s[1:, 1:] & ~(s[:-1, 1:] | s[1:, :-1])
    d2 = s[:-1, 1:] & s[1:, :-1] & ~(s[:-1, :-1] | s[1:, 1:])
    length = orth + SQRT2 * (np.count_nonzero(d1) + np.count_nonzero(d2))
    padded = np.pad(s.astype(np.uint8), 1)
    neighbours = cv2.filter2D(padded, cv2.CV_16S, np.ones((3, 3), np.float32), borderType=cv2.BORDER_CONSTANT)[1:-1, 1:-1] - s
    ends = np.argwhere(s & (neighbours == 1))
    return float(length), ends


def _orientation(moments: dict) -> float:
    angle = 0.5 * math.degrees(math.atan2(2.0 * moments["mu11"], moments["mu20"] - moments["mu02"]))
    return float((-angle) % 180.0)  # image y points down; report counter-clockwise on screen


def measure_component(component01: np.ndarray, offset: tuple[int, int] = (0, 0)) -> CrackComponent:
    """Measure one connected crack given as a 0/1 crop; `offset` = (x, y) of the crop in the frame."""
    area = int(np.count_nonzero(component01))
    dist = cv2.distanceTransform(np.pad(component01.astype(np.uint8), 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    skeleton = thin(component01)
    if not skeleton.any():
        skeleton = (dist == dist.max()).astype(np.uint8)
    length, ends = skeleton_length(skeleton)
    # Thinning shortens each free end by about the local half-width: add it back.
    length += float(sum(max(0.0, dist[r, c] - 0.5) for r, c in ends))
    length = max(length, 1.0)
    max_width = float(max(1.0, 2.0 * dist[skeleton > 0].max() - 1.0))
    m = cv2.moments(component01.astype(np.uint8), binaryImage=True)
    ys, xs = np.nonzero(component01)
    x0, y0 = offset
    bbox = (int(xs.min()) + x0, int(ys.min()) + y0, int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
    centroid = (float(m["m10"] / m["m00"]) + x0, float(m["m01"] / m["m00"]) + y0)
    return CrackComponent(area, bbox, centroid, length, max_width, min(max_width, area / length), _orientation(m))


def measure_mask(mask: np.ndarray, mm_per_pixel: float | None = None, min_area_px: int = 12) -> CrackMeasurements:
    """Measure every crack (8-connected component of >= `min_area_px` pixels) of a binary mask (any non-zero = crack)."""
    binary = (mask > 0).astype(np.uint8)
    h, w = binary.shape[:2]
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    components = []
    for label in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[label])
        if area < min_area_px:
            continue
        crop = (labels[y : y + bh, x : x + bw] == label).astype(np.uint8)
        components.append(measure_component(crop, (x, y)))
    components.sort(key=lambda c: c.area_px, reverse=True)
    if not components:
        return CrackMeasurements((w, h), 0, 0.0, 0.0, 0.0, 0.0, None, None, [], mm_per_pixel)
    total_area = sum(c.area_px for c in components)
    total_length = sum(c.length_px for c in components)
    x0 = min(c.bbox[0] for c in components); y0 = min(c.bbox[1] for c in components)
    x1 = max(c.bbox[0] + c.bbox[2] for c in components); y1 = max(c.bbox[1] + c.bbox[3] for c in components)
    return CrackMeasurements(
        frame_size=(w, h),
        total_area_px=total_area,
        area_fraction=total_area / float(h * w),
        length_px=total_length,
        max_width_px=max(c.max_width_px for c in components),
        mean_width_px=total_area / total_length,
        bbox=(x0, y0, x1 - x0, y1 - y0),
        orientation_deg=components[0].orientation_deg,
        components=components,
        mm_per_pixel=mm_per_pixel,
    )
