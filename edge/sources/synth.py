"""Procedural crack images with exact ground truth (numpy + OpenCV only).

Used three ways: extra training data for the trainer, ground truth for tests,
and the `synthetic` demo camera of the daemon. Each sample is a surface texture
(concrete, asphalt, painted, brick), zero or more branching cracks that taper
and wander, and distractors that are *not* cracks (joints, stains, shadows,
edges, scratches), so a model cannot learn "dark line = crack".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

SURFACES = ("concrete", "asphalt", "painted", "brick")
DISTRACTORS = ("joint", "stain", "shadow", "edge", "scratch")
CRACK_CONTRAST = (0.35, 0.8)  # share of the surface's brightness a crack's core takes away


@dataclass(frozen=True)
class SynthSample:
    """One generated image (RGB uint8), its crack mask (uint8 0/255) and what was drawn."""

    image: np.ndarray
    mask: np.ndarray
    surface: str
    n_cracks: int
    distractors: list[str] = field(default_factory=list)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: random values on a coarse grid, upsampled."""
    gh, gw = max(2, h // scale), max(2, w // scale)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    field_ = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return field_ / (np.abs(field_).max() + 1e-6)


def _texture(rng: np.random.Generator, surface: str, h: int, w: int) -> np.ndarray:
    """A float32 HxWx3 surface texture in [0, 255]."""
    base_colors = {
        "concrete": (rng.uniform(150, 205),) * 3,
        "asphalt": (rng.uniform(70, 120),) * 3,
        "painted": tuple(rng.uniform(120, 235, size=3)),
        "brick": (rng.uniform(140, 180), rng.uniform(70, 100), rng.uniform(50, 80)),
    }
    color = np.array(base_colors[surface], np.float32)
    tint = rng.uniform(-8, 8, size=3).astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = color + tint
    low = _smooth_noise(rng, h, w, scale=int(rng.integers(24, 96)))[..., None]
    grain = rng.standard_normal((h, w, 1)).astype(np.float32)
    if surface == "concrete":
        img += low * rng.uniform(6, 18) + grain * rng.uniform(4, 10)
        # Air voids (small dark pores): the classic false positive on concrete.
        for _ in range(int(rng.integers(5, 40) * h * w / 65536)):
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.circle(img, c, int(rng.integers(1, 3)), tuple(float(v) for v in color * 0.6), -1, cv2.LINE_AA)
    elif surface == "asphalt":
        img += low * rng.uniform(4, 12) + grain * rng.uniform(10, 22)
        stones: np.ndarray = (rng.random((h, w)) < 0.04).astype(np.float32)
        stones = cv2.GaussianBlur(stones, (3, 3), 0)[..., None]
        img += stones * rng.uniform(40, 90)
    elif surface == "painted":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        gradient = (xx / w - 0.5) * rng.uniform(-30, 30) + (yy / h - 0.5) * rng.uniform(-30, 30)
        img += gradient[..., None] + low * rng.uniform(2, 6) + grain * rng.uniform(1, 3)
    else:  # brick: courses of bricks with mortar joints (joints are not cracks)
        img += low * rng.uniform(5, 12) + grain * rng.uniform(4, 9)
        course = int(rng.integers(max(8, h // 10), max(9, h // 5)))
        brick_w = course * int(rng.integers(2, 4))
        mortar = np.array([rng.uniform(170, 210)] * 3, np.float32)
        joint = max(1, course // 8)
        for row, y in enumerate(range(0, h, course)):
            img[y : y + joint] = mortar
            offset = (brick_w // 2) * (row % 2)
            for x in range(-offset, w, brick_w):
                if x >= 0:
                    img[y : y + course, x : x + joint] = mortar
    return img


def _crack_path(rng: np.random.Generator, start: np.ndarray, angle: float, length: float, step: float) -> np.ndarray:
    """A wandering polyline: heading drifts as a random walk with occasional kinks."""
    points = [start.astype(np.float32)]
    heading = angle
    for _ in range(max(2, int(length / step))):
        heading += rng.normal(0.0, 0.15) + (rng.normal(0.0, 0.9) if rng.random() < 0.05 else 0.0)
        nxt = points[-1] + step * np.array([math.cos(heading), math.sin(heading)], np.float32)
        points.append(nxt)
    return np.array(points)


def _draw_crack(rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray, width: float) -> None:
    """Draw one tapering crack (with its branches) into `canvas` (darkness 0-1) and `mask` (0/255)."""
    h, w = mask.shape
    start = np.array([rng.uniform(0, w), rng.uniform(0, h)], np.float32)
    length = rng.uniform(0.5, 1.3) * max(h, w)
    _draw_branch(rng, canvas, mask, start, rng.uniform(0, 2 * math.pi), length, width, depth=0)


def _draw_branch(
    rng: np.random.Generator,
    canvas: np.ndarray,
    mask: np.ndarray,
    start: np.ndarray,
    angle: float,
    length: float,
    width: float,
    depth: int,
) -> None:
    """One tapering branch; forks recursively (two levels at most)."""
    path = _crack_path(rng, start, angle, length, step=max(2.0, min(mask.shape) / 80))
    n = len(path)
    taper = np.linspace(1.0, rng.uniform(0.15, 0.5), n)
    for i in range(n - 1):
        wd = max(1.0, width * taper[i] * rng.uniform(0.8, 1.2))
        p0 = tuple(int(round(v)) for v in path[i])
        p1 = tuple(int(round(v)) for v in path[i + 1])
        thickness = max(1, int(round(wd)))
        cv2.line(canvas, p0, p1, 1.0, thickness, cv2.LINE_AA)
        cv2.line(mask, p0, p1, 255, thickness, cv2.LINE_8)
        if depth < 2 and rng.random() < 0.025:
            branch_angle = math.atan2(path[i + 1][1] - path[i][1], path[i + 1][0] - path[i][0]) + rng.choice(
                [-1, 1]
            ) * rng.uniform(0.4, 1.2)
            _draw_branch(
                rng, canvas, mask, path[i + 1], branch_angle, (n - i) * rng.uniform(0.2, 0.5) * 2, wd * 0.7, depth + 1
            )


def _distractor(rng: np.random.Generator, kind: str, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    if kind == "joint":  # straight saw-cut / formwork joint
        layer: np.ndarray = np.zeros((h, w), np.float32)
        if rng.random() < 0.5:
            x = int(rng.integers(0, w))
            cv2.line(layer, (x, 0), (x, h), 1.0, int(rng.integers(2, 5)))
        else:
            y = int(rng.integers(0, h))
            cv2.line(layer, (0, y), (w, y), 1.0, int(rng.integers(2, 5)))
        img -= layer[..., None] * rng.uniform(25, 60)
    elif kind == "stain":
        layer = np.zeros((h, w), np.float32)
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(w // 20 + 2, w // 5 + 3)), int(rng.integers(h // 20 + 2, h // 5 + 3)))
        cv2.ellipse(layer, c, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        layer = cv2.GaussianBlur(layer, (0, 0), max(axes) / 3)
        img -= layer[..., None] * rng.uniform(15, 45)
    elif kind == "shadow":
        layer = np.zeros((h, w), np.float32)
        pts = rng.integers(0, [w, h], size=(4, 2)).astype(np.int32)
        pts[0] = (0, pts[0][1])
        pts[1] = (0, h)
        cv2.fillPoly(layer, [pts], 1.0)
        layer = cv2.GaussianBlur(layer, (0, 0), rng.uniform(3, 15))
        img *= 1.0 - layer[..., None] * rng.uniform(0.2, 0.45)
    elif kind == "edge":  # a step between two surfaces (slab edge, kerb)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, math.pi)
        d = (xx - w / 2) * math.cos(a) + (yy - h / 2) * math.sin(a) - rng.uniform(-w / 3, w / 3)
        img += np.tanh(d / 1.5)[..., None] * rng.uniform(8, 25)
    else:  # scratch: short, thin, straight and lighter than the surface
        layer = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(1, 4))):
            p0 = rng.integers(0, [w, h]).astype(int)
            ang = rng.uniform(0, 2 * math.pi)
            ln = rng.uniform(0.05, 0.25) * max(h, w)
            p1 = (p0 + ln * np.array([math.cos(ang), math.sin(ang)])).astype(int)
            cv2.line(layer, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 1.0, 1, cv2.LINE_AA)
        img += layer[..., None] * rng.uniform(20, 50)


def generate(
    rng: np.random.Generator,
    height: int = 256,
    width: int = 256,
    crack_probability: float = 0.5,
    surface: str | None = None,
) -> SynthSample:
    """Generate one sample. With probability `crack_probability` it holds 1-3 cracks."""
    surface = surface or str(rng.choice(SURFACES))
    if surface not in SURFACES:
        raise ValueError(f"unknown surface {surface!r}; expected one of {', '.join(SURFACES)}")
    img = _texture(rng, surface, height, width)
    mask = np.zeros((height, width), np.uint8)
    darkness = np.zeros((height, width), np.float32)
    n_cracks = int(rng.integers(1, 4)) if rng.random() < crack_probability else 0
    scale = min(height, width) / 256.0
    for _ in range(n_cracks):
        _draw_crack(rng, darkness, mask, width=rng.uniform(1.5, 6.0) * scale)
    kinds = [str(k) for k in rng.choice(DISTRACTORS, size=int(rng.integers(0, 3)), replace=False)]
    for kind in kinds:
        _distractor(rng, kind, img)
    if n_cracks:
        contrast = rng.uniform(*CRACK_CONTRAST)
        img *= 1.0 - np.clip(darkness, 0, 1)[..., None] * contrast
    # Camera: slight blur and sensor noise, then global brightness.
    img = np.asarray(cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.9)), np.float32)  # float32 in, float32 out
    img += rng.standard_normal(img.shape).astype(np.float32) * rng.uniform(1, 4)
    img *= rng.uniform(0.8, 1.15)
    image = np.clip(img, 0, 255).astype(np.uint8)
    return SynthSample(image=image, mask=mask, surface=surface, n_cracks=n_cracks, distractors=kinds)


def write_dataset(
    out_dir, n: int, seed: int = 0, height: int = 256, width: int = 256, crack_probability: float = 0.5, progress=None
) -> int:
    """Write `n` pairs as `images/synth_XXXXX.png` + `masks/synth_XXXXX.png`; returns the count written.

    Images with no crack are also listed in `labels.csv` so the classification loader can use the set.
    """
    from pathlib import Path

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["file,label,surface,n_cracks,distractors"]
    iterator = range(n) if progress is None else progress(range(n))
    for i in iterator:
        s = generate(rng, height, width, crack_probability)
        name = f"synth_{i:05d}.png"
        cv2.imwrite(str(out / "images" / name), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / "masks" / name), s.mask)
        rows.append(
            f"{name},{'crack' if s.n_cracks else 'no_crack'},{s.surface},{s.n_cracks},{'|'.join(s.distractors)}"
        )
    (out / "labels.csv").write_text("\n".join(rows) + "\n")
    return n
