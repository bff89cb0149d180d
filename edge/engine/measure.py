"""Crack measurements from a binary mask: pure numpy/OpenCV functions.

Per crack and in total: pixel area and area fraction, bounding box, centroid, length, mean and maximum
width, orientation; in millimetres too when a `mm_per_pixel` scale is known.

Length comes from each crack's outline and area: a tube of length l and width w has half an outline of
l + w and an area of l * w, so l is the larger root of a quadratic (`_tube_length`). This is exact for
a straight crack, adds about half a width per branch, and needs one contour pass instead of thinning the
mask to a skeleton (which cost twice as much and, against drawn cracks of known length, erred twice as
much: 95th percentile 10 % against 5 %). Max width comes from the distance transform: 2*d - 1 at the
deepest pixel (d = distance to the nearest background pixel centre); mean width = area / length, capped
at the max width; the mask-wide mean is the length-weighted mean of the cracks' means.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np


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
        if d["orientation_deg"] is not None:
            d["orientation_deg"] = round(d["orientation_deg"], 2)
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


def _padded(mask01: np.ndarray) -> np.ndarray:
    """0/1 uint8 copy of a mask with a one-pixel background border (neighbours of any pixel exist)."""
    return cv2.copyMakeBorder((mask01 > 0).view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)


def _flat_nonzero(img: np.ndarray) -> np.ndarray:
    """Flat indices of the non-zero pixels of a uint8 image; OpenCV's scan is ~5x faster than np.flatnonzero."""
    points = cv2.findNonZero(img)
    if points is None:
        return np.empty(0, np.intp)
    points = points.reshape(-1, 2).astype(np.intp)
    return points[:, 1] * img.shape[1] + points[:, 0]


def _orientation(mu20: float, mu02: float, mu11: float) -> float:
    angle = 0.5 * math.degrees(math.atan2(2.0 * mu11, mu20 - mu02))
    return float((-angle) % 180.0)  # image y points down; report counter-clockwise on screen


def _group_labels(img: np.ndarray, gap: tuple[float, float]) -> tuple[int, np.ndarray]:
    """Label the crack pixels of a padded 0/1 image so that pieces closer than `gap` (x, y mask px) share a label.

    Each piece is grown by half the gap and the grown mask is labelled: two pieces whose grown shapes touch
    were within the gap of each other. Every pixel of a piece lies inside its own grown shape, so the grown
    labels label the pieces directly. The growth is a rectangle (separable, several times cheaper than an
    ellipse), so the gap is measured along rows and columns: diagonally it reaches up to 1.4x further.
    """
    kx, ky = (2 * int(round(g / 2)) + 1 for g in gap)
    if kx > 1 or ky > 1:
        img = cv2.dilate(img, cv2.getStructuringElement(cv2.MORPH_RECT, (kx, ky)))
    return _label(img)


def _label(img: np.ndarray) -> tuple[int, np.ndarray]:
    """8-connected labels of a 0/1 image (Grana's block-based algorithm, no statistics: they come cheaper later).

    16-bit labels when they cannot overflow (an image of N pixels has at most N/4 separate 8-connected pieces):
    half the memory traffic of 32-bit ones, for every mask at model resolution.
    """
    ltype = cv2.CV_16U if img.size // 4 < 0xFFFF else cv2.CV_32S
    return cv2.connectedComponentsWithAlgorithm(img, 8, ltype, cv2.CCL_GRANA)


def _outlines(
    img: np.ndarray, labels: np.ndarray, kept: np.ndarray, scale: tuple[float, float]
) -> dict[int, tuple[float, int, tuple[int, int, int, int]]]:
    """Per kept label: (half its outline's length in frame px, number of pieces, (x0, y0, x1, y1) in crop px).

    One contour pass over the crop. Each contour is simplified to a polyline (Douglas-Peucker, 1 mask px):
    pixel steps overestimate slanted edges by up to 8 %. A contour runs through its boundary pixels'
    centres, half a pixel inside the crack's edge, so each piece's outline gets one pixel more per side
    (exact for a rectangle); a hole's contour runs outside the hole's edge and gets nothing.
    """
    sx, sy = scale
    to_frame = np.array((sx, sy), np.float32)
    contours, hierarchy = cv2.findContours(img, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return {}
    keep = kept.tolist()
    out: dict[int, tuple[float, int, tuple[int, int, int, int]]] = {}
    for contour, parent in zip(contours, hierarchy[0, :, 3].tolist()):
        x, y = contour[0, 0].tolist()
        label = int(labels[y, x])
        if not keep[label]:
            continue
        total, pieces, box = out.get(label, (0.0, 0, (1 << 30, 1 << 30, -1, -1)))
        if parent < 0:  # an outer contour: one piece of the crack
            total += sx + sy
            pieces += 1
            bx, by, bw, bh = cv2.boundingRect(contour)
            box = (min(box[0], bx), min(box[1], by), max(box[2], bx + bw), max(box[3], by + bh))
        if len(contour) > 2:  # simplified in mask pixels, then scaled: only the polyline's corners are scaled
            contour = cv2.approxPolyDP(contour, 1.0, closed=True)
        out[label] = (total + cv2.arcLength(contour.astype(np.float32) * to_frame, closed=True) / 2.0, pieces, box)
    return out


def _tube_length(half_perimeter: float, pieces: int, area: float) -> float:
    """Length of `pieces` tubes of one width with this total half-outline and area.

    A piece of length l and width w has half an outline of l + w, so half_perimeter = L + pieces * w and
    area = L * w: L is the larger root of L^2 - half_perimeter * L + pieces * area = 0. Exact for a
    rectangle; a branch adds about half its width (as extending a thinned midline's free ends would).
    """
    disc = half_perimeter * half_perimeter - 4.0 * pieces * area
    return (half_perimeter + math.sqrt(max(0.0, disc))) / 2.0


def measure_mask(
    mask: np.ndarray,
    mm_per_pixel: float | None = None,
    min_area_px: int = 12,
    frame_size: tuple[int, int] | None = None,
    merge_gap_px: float = 0.0,
    min_length_px: float = 0.0,
) -> CrackMeasurements:
    """Measure every crack of a binary mask (non-zero = crack).

    A crack is an 8-connected component of the mask, or, with `merge_gap_px` > 0, the pieces of the mask
    closer than that to each other (a crack the segmenter saw broken into fragments is one crack). Cracks of
    fewer than `min_area_px` mask pixels or shorter than `min_length_px` are specks and are left out.
    `merge_gap_px` and `min_length_px` are in frame pixels.

    With `frame_size` = (width, height) the mask is taken as a scaled-down view of that frame (the cascade
    measures on the model-resolution mask: the full-frame mask is only its upsampling, so no detail is
    lost) and all results are in frame pixels. Labelling, the distance transform and the contour pass
    each run once over the cracks' bounding rectangle; per-crack moments and widths then look only inside
    each crack's own box, so the cost follows the cracks, not the frame.
    """
    mh, mw = mask.shape[:2]
    w, h = frame_size or (mw, mh)
    sx, sy = w / mw, h / mh
    iso = math.sqrt(sx * sy)
    binary = mask.view(np.uint8) if mask.dtype == np.bool_ else (mask > 0).view(np.uint8)
    # Work on the cracks' bounding rectangle plus a background border: every later step costs in
    # proportion to its area, and every crack's outline is closed inside it.
    rx, ry, rw, rh = cv2.boundingRect(binary)
    components = []
    if rw and rh:
        img = _padded(binary[ry : ry + rh, rx : rx + rw])
        ox, oy = rx - 1, ry - 1  # mask coordinates of the padded crop's origin
        if merge_gap_px > 0:
            n, labels = _group_labels(img, (merge_gap_px / sx, merge_gap_px / sy))
        else:
            n, labels = _label(img)
        area = np.bincount(labels.reshape(-1)[_flat_nonzero(img)], minlength=n)
        kept = area >= min_area_px
        kept[0] = False
        if kept.any():
            # The 5x5 chamfer distance is within ~2 % of the exact one at crack widths, at a third of the cost.
            # Its maximum over a crack lies on the crack's midline: half the widest width.
            dist = cv2.distanceTransform(img, cv2.DIST_L2, cv2.DIST_MASK_5)
            outline = _outlines(img, labels, kept, (sx, sy))
            for label in map(int, np.flatnonzero(kept)):
                half_perimeter, pieces, (bx0, by0, bx1, by1) = outline[label]
                area_px = float(area[label]) * sx * sy
                length = max(iso, _tube_length(half_perimeter, pieces, area_px))
                if length < min_length_px:
                    continue
                # The crack's own pixels within its box (grown labels also cover background between pieces).
                own8 = (labels[by0:by1, bx0:bx1] == label).view(np.uint8)
                own8 &= img[by0:by1, bx0:bx1]
                mo = cv2.moments(own8, binaryImage=True)
                deepest = cv2.minMaxLoc(dist[by0:by1, bx0:bx1], own8)[1]
                max_width = iso * max(1.0, 2.0 * deepest - 1.0)
                cx, cy = mo["m10"] / mo["m00"] + bx0, mo["m01"] / mo["m00"] + by0
                bx, by = bx0 + ox, by0 + oy
                components.append(
                    CrackComponent(
                        area_px=int(round(area_px)),
                        bbox=(int(bx * sx), int(by * sy), int(round((bx1 - bx0) * sx)), int(round((by1 - by0) * sy))),
                        centroid=((cx + ox + 0.5) * sx - 0.5, (cy + oy + 0.5) * sy - 0.5),
                        length_px=float(length),
                        max_width_px=float(max_width),
                        mean_width_px=float(min(max_width, area_px / length)),
                        orientation_deg=_orientation(mo["mu20"], mo["mu02"], mo["mu11"]),
                    )
                )
    components.sort(key=lambda c: (-c.area_px, c.bbox[1], c.bbox[0]))  # largest first; ties top to bottom
    if not components:
        return CrackMeasurements((w, h), 0, 0.0, 0.0, 0.0, 0.0, None, None, [], mm_per_pixel)
    total_area = sum(c.area_px for c in components)
    total_length = sum(c.length_px for c in components)
    left = min(c.bbox[0] for c in components)
    top = min(c.bbox[1] for c in components)
    right = max(c.bbox[0] + c.bbox[2] for c in components)
    bottom = max(c.bbox[1] + c.bbox[3] for c in components)
    return CrackMeasurements(
        frame_size=(w, h),
        total_area_px=total_area,
        area_fraction=total_area / float(h * w),
        length_px=total_length,
        max_width_px=max(c.max_width_px for c in components),
        # The same definition as a crack's (area / length, at most its max width), weighted by length:
        # never above max_width_px, unlike total_area / total_length.
        mean_width_px=sum(c.mean_width_px * c.length_px for c in components) / total_length,
        bbox=(left, top, right - left, bottom - top),
        orientation_deg=components[0].orientation_deg,
        components=components,
        mm_per_pixel=mm_per_pixel,
    )
