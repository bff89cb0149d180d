"""Domain randomisation: training samples that teach "crack", not "this dataset".

Bundle 1.0 learned "thin dark line on smooth concrete": on unseen surfaces it
missed wide cracks, cracks in coarse texture and cracks seen at another scale.
Three kinds of sample fix what a licence-free lever can fix:

- **rescaled real photographs**: one crack seen at many widths (zoom 0.33-2x of
  the whole-image view; below 1x the frame is a mosaic of several photographs);
- **procedural cracks on real crack-free backgrounds** (METU concrete negatives,
  crack-free regions of the segmentation photographs): widths 1-30 px at model
  resolution, tapering, branching, spalled edges, a darker core and a lit rim;
- **procedural surfaces** the data lacks (coarse aggregate, tiles with grout,
  painted, brick), with and without cracks.

Every kind carries hard negatives that look like cracks and are not (joints,
grout, lane markings, cables, edge shadows, stains, leaves) and camera effects
(exposure, white balance, blur, noise, JPEG). Masks are exact: the mask is drawn
with the same geometry as the crack. Pure numpy + OpenCV, deterministic by seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.sources import synth
from edge.sources.images import read_rgb

HARD_NEGATIVES = ("joint", "grout", "marking", "cable", "shadow", "stain", "leaf", "scratch", "sealed")
SURFACES = ("aggregate", "tiles", *synth.SURFACES)
CRACK_DEPTH = (0.35, 0.9)  # share of the surface's brightness a rendered crack takes away
# Hairlines: 1-3 px and far shallower than other cracks (bundle 1.1 missed thin low-contrast cracks on road and
# asphalt): 0.12 of a surface of grey 120 is 14 grey levels.
HAIRLINE_WIDTH = (1.0, 3.0)
HAIRLINE_DEPTH = (0.12, 0.5)


@dataclass(frozen=True)
class DomainConfig:
    zoom: tuple[float, float] = (0.33, 2.0)  # real photographs, relative to the whole-image view
    crack_width: tuple[float, float] = (1.0, 30.0)  # rendered cracks, px at model resolution
    real: float = 0.45  # share of rescaled real photographs
    rendered: float = 0.35  # share of procedural cracks on real backgrounds (the rest: procedural surfaces)
    crack_probability: float = 0.7  # rendered / procedural samples holding a crack
    hard_negative_probability: float = 0.6
    hairline_probability: float = 0.3  # a rendered crack is a shallow 1-3 px hairline
    part_probability: float = 0.3  # a procedural sample is a manufactured part (edges, holes, the image border)


# `--domain-preset`: "default" is bundle 1.1's mix; "hard" weighs what bundle 1.1 failed on (manufactured parts and
# their edges, hairlines, look-alikes such as markings, joints and sealed cracks) for a fine-tuning pass.
DOMAIN_PRESETS = {
    "default": DomainConfig(),
    "hard": DomainConfig(
        real=0.3, rendered=0.3, part_probability=0.5, hairline_probability=0.5, hard_negative_probability=0.85
    ),
}


@dataclass
class Pool:
    """Full-resolution training photographs (with masks) and crack-free backgrounds."""

    images: list[np.ndarray]
    masks: list[np.ndarray]  # uint8 0/1, same size as the image
    backgrounds: list[np.ndarray]


def load_pool(
    pairs: Iterable[tuple[str | Path, str | Path | None]], backgrounds: list[str], max_side: int = 640
) -> Pool:
    """Read (image, mask) pairs at up to `max_side` and background photographs; unreadable files are skipped."""
    from edge.engine.preprocess import mask_to_binary

    images, masks, bgs = [], [], []
    for img_path, mask_path in pairs:
        rgb = read_rgb(Path(img_path))
        raw = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED) if mask_path else None
        if rgb is None or (mask_path and raw is None):
            continue
        m = mask_to_binary(raw) if raw is not None else np.zeros(rgb.shape[:2], np.uint8)
        if m.shape != rgb.shape[:2]:
            m = cv2.resize(m, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        f = min(1.0, max_side / max(rgb.shape[:2]))
        if f < 1.0:
            rgb = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            m = (
                cv2.resize(m.astype(np.float32), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_AREA) >= 0.5
            ).astype(np.uint8)
        images.append(rgb)
        masks.append(m)
    for p in backgrounds:
        rgb = read_rgb(Path(p))
        if rgb is not None:
            bgs.append(rgb)
    return Pool(images, masks, bgs)


# ---------------------------------------------------------------- real photographs at another scale


def _resized(image: np.ndarray, mask: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = mask.shape
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    img = cv2.resize(image, size, interpolation=interp)
    # A crack pixel stays a crack when downscaled (max, not mean), so thin cracks keep their mask.
    m = cv2.resize(mask.astype(np.float32), size, interpolation=interp)
    return img, (m >= (0.25 if scale < 1 else 0.5)).astype(np.uint8)


def rescaled_real(
    pool: Pool, size: int, rng: np.random.Generator, zoom: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """A real photograph at a random zoom; below the whole-image view the frame is a mosaic of photographs."""
    z = math.exp(rng.uniform(math.log(zoom[0]), math.log(zoom[1])))
    canvas = np.zeros((size, size, 3), np.uint8)
    target = np.zeros((size, size), np.uint8)
    y = 0
    while y < size:
        x, row_h = 0, size
        while x < size:
            i = int(rng.integers(len(pool.images)))
            img, m = pool.images[i], pool.masks[i]
            scale = z * size / min(m.shape)
            img, m = _resized(img, m, scale)
            h, w = m.shape
            oy = int(rng.integers(0, h - size + 1)) if h > size else 0
            ox = int(rng.integers(0, w - size + 1)) if w > size else 0
            th, tw = min(h - oy, size - y), min(w - ox, size - x)
            canvas[y : y + th, x : x + tw] = img[oy : oy + th, ox : ox + tw]
            target[y : y + th, x : x + tw] = m[oy : oy + th, ox : ox + tw]
            x += tw
            row_h = min(row_h, th)
        y += row_h
    return canvas, target


# ---------------------------------------------------------------- surfaces


def _background(pool: Pool, size: int, rng: np.random.Generator) -> np.ndarray:
    """A crack-free real surface: a METU negative, or a crack-free window of a segmentation photograph."""
    use_seg = pool.images and (not pool.backgrounds or rng.random() < 0.5)
    if use_seg:
        for _ in range(20):
            i = int(rng.integers(len(pool.images)))
            m, img = pool.masks[i], pool.images[i]
            side = int(rng.integers(min(64, min(m.shape)), min(m.shape) + 1))
            y, x = int(rng.integers(0, m.shape[0] - side + 1)), int(rng.integers(0, m.shape[1] - side + 1))
            # Keep clear of the crack by a margin: its unlabelled fringe must not become "background".
            if not cv2.dilate(m, np.ones((9, 9), np.uint8))[y : y + side, x : x + side].any():
                return cv2.resize(
                    img[y : y + side, x : x + side],
                    (size, size),
                    interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR,
                )
    if pool.backgrounds:
        bg = pool.backgrounds[int(rng.integers(len(pool.backgrounds)))]
        side = int(rng.integers(min(bg.shape[:2]) // 2, min(bg.shape[:2]) + 1))
        y, x = int(rng.integers(0, bg.shape[0] - side + 1)), int(rng.integers(0, bg.shape[1] - side + 1))
        return cv2.resize(bg[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_LINEAR)
    return procedural_surface(rng, "concrete", size).astype(np.uint8)


def procedural_surface(rng: np.random.Generator, surface: str, size: int) -> np.ndarray:
    """Float32 RGB texture in [0, 255]: the synth module's surfaces plus coarse aggregate and tiles."""
    if surface in synth.SURFACES:
        return synth._texture(rng, surface, size, size)
    if surface == "aggregate":  # coarse stones of many greys in a darker binder (close-range asphalt)
        img = np.empty((size, size, 3), np.float32)
        img[:] = rng.uniform(50, 110)
        n = int(rng.integers(150, 600) * (size / 224) ** 2)
        r_max = rng.uniform(2, 9)
        for _ in range(n):
            c = (int(rng.integers(0, size)), int(rng.integers(0, size)))
            axes = (max(1, int(rng.uniform(1, r_max))), max(1, int(rng.uniform(1, r_max))))
            cv2.ellipse(
                img, c, axes, float(rng.uniform(0, 180)), 0, 360, (float(rng.uniform(60, 200)),) * 3, -1, cv2.LINE_AA
            )
        img += rng.standard_normal((size, size, 1)).astype(np.float32) * rng.uniform(4, 14)
        return img
    if surface == "tiles":  # ceramic / magnetic tiles: a smooth glaze with grout lines
        base = rng.uniform(60, 230, size=3).astype(np.float32)
        img = np.empty((size, size, 3), np.float32)
        img[:] = base
        img += synth._smooth_noise(rng, size, size, int(rng.integers(32, 128)))[..., None] * rng.uniform(3, 12)
        img += rng.standard_normal((size, size, 1)).astype(np.float32) * rng.uniform(1, 4)
        return img
    raise ValueError(f"unknown surface {surface!r}; expected one of {', '.join(SURFACES)}")


# ---------------------------------------------------------------- cracks and look-alikes


def draw_crack(rng: np.random.Generator, size: int, width: float) -> tuple[np.ndarray, np.ndarray]:
    """One tapering, branching crack of `width` px (at its widest): (darkness 0-1 float32, mask 0/1 uint8).

    The mask is drawn with the same polylines and thicknesses as the darkness, so it is exact.
    """
    darkness = np.zeros((size, size), np.float32)
    mask = np.zeros((size, size), np.uint8)

    def branch(start, angle, length, w, depth):
        path = synth._crack_path(rng, start, angle, length, step=max(2.0, size / 70))
        n = len(path)
        taper = np.linspace(1.0, rng.uniform(0.2, 0.7), n)
        wobble = 1.0 + 0.35 * synth._smooth_noise(rng, 1, n + 2, 6)[0, :n]  # spalled, irregular edges
        for i in range(n - 1):
            t = max(1, int(round(w * taper[i] * wobble[i])))
            p0 = tuple(int(round(v)) for v in path[i])
            p1 = tuple(int(round(v)) for v in path[i + 1])
            cv2.line(darkness, p0, p1, 1.0, t, cv2.LINE_8)
            cv2.line(mask, p0, p1, 1, t, cv2.LINE_8)
            if depth < 2 and rng.random() < 0.03:
                a = math.atan2(path[i + 1][1] - path[i][1], path[i + 1][0] - path[i][0]) + rng.choice(
                    [-1, 1]
                ) * rng.uniform(0.4, 1.2)
                branch(
                    path[i + 1], a, (n - i) * size / 70 * rng.uniform(0.2, 0.5), max(1.0, w * taper[i] * 0.6), depth + 1
                )

    start = np.array([rng.uniform(0, size), rng.uniform(0, size)], np.float32)
    branch(start, rng.uniform(0, 2 * math.pi), rng.uniform(0.5, 1.4) * size, width, 0)
    return darkness, mask


def render_crack(
    img: np.ndarray,
    darkness: np.ndarray,
    mask: np.ndarray,
    width: float,
    rng: np.random.Generator,
    depth_range: tuple[float, float] = CRACK_DEPTH,
) -> None:
    """Darken `img` (float32, in place) inside the crack: a darker core, texture kept, a lit rim on one side."""
    if width > 3:
        dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
        profile = np.clip(dist / max(1.0, width / 2), 0, 1) ** rng.uniform(0.3, 0.8)
        darkness = np.where(mask > 0, 0.35 + 0.65 * profile, 0).astype(np.float32)
    else:
        darkness = cv2.GaussianBlur(darkness, (0, 0), 0.5)
    depth = rng.uniform(*depth_range)
    shade = 1.0 - darkness[..., None] * depth
    img *= shade
    if rng.random() < 0.5:  # the far edge catches light
        dy, dx = (int(v) for v in rng.integers(-2, 3, size=2))
        shift = np.array([[1, 0, dx], [0, 1, dy]], np.float32)  # a shift that does not wrap around the frame
        rim = cv2.warpAffine(mask, shift, mask.shape[::-1], flags=cv2.INTER_NEAREST).astype(np.float32) * (1 - mask)
        img += cv2.GaussianBlur(rim, (0, 0), 0.7)[..., None] * rng.uniform(10, 40)


def hard_negative(rng: np.random.Generator, img: np.ndarray, kind: str) -> None:
    """Draw a look-alike that is not a crack into `img` (float32, in place)."""
    size = img.shape[0]
    layer = np.zeros((size, size), np.float32)
    if kind == "joint":  # straight saw-cut or formwork joint: long, straight, even width
        w = int(rng.integers(2, 9))
        a = rng.uniform(0, math.pi)
        c = rng.uniform(0, size, 2)
        d = np.array([math.cos(a), math.sin(a)]) * size * 2
        cv2.line(layer, tuple(int(v) for v in c - d), tuple(int(v) for v in c + d), 1.0, w, cv2.LINE_AA)
        img -= layer[..., None] * rng.uniform(30, 80)
    elif kind == "grout":  # a regular grid of tile joints
        pitch = int(rng.integers(size // 4, size // 1.5))
        w = int(rng.integers(1, 5))
        off = int(rng.integers(0, pitch))
        for v in range(off, size, pitch):
            cv2.line(layer, (v, 0), (v, size), 1.0, w)
            cv2.line(layer, (0, v), (size, v), 1.0, w)
        img += layer[..., None] * rng.uniform(-70, 40)
    elif kind == "marking":  # painted lane marking: bright, wide, straight
        w = int(rng.integers(6, max(7, size // 5)))
        a = rng.uniform(0, math.pi)
        c = rng.uniform(0, size, 2)
        d = np.array([math.cos(a), math.sin(a)]) * size * 2
        cv2.line(layer, tuple(int(v) for v in c - d), tuple(int(v) for v in c + d), 1.0, w, cv2.LINE_AA)
        color = np.array(rng.choice([[240, 240, 235], [235, 200, 60]]), np.float32)
        alpha = rng.uniform(0.6, 0.95)
        img[:] = img * (1 - alpha * layer[..., None]) + color * alpha * layer[..., None]
    elif kind == "cable":  # a smooth curve of constant width with a highlight along it
        pts = rng.uniform(-0.2, 1.2, size=(4, 2)) * size
        t = np.linspace(0, 1, 60)[:, None]
        curve = (
            (1 - t) ** 3 * pts[0] + 3 * (1 - t) ** 2 * t * pts[1] + 3 * (1 - t) * t**2 * pts[2] + t**3 * pts[3]
        ).astype(np.int32)
        w = int(rng.integers(3, 12))
        cv2.polylines(layer, [curve], False, 1.0, w, cv2.LINE_AA)
        img *= 1.0 - layer[..., None] * rng.uniform(0.4, 0.8)
        hl = np.zeros_like(layer)
        cv2.polylines(hl, [curve + int(max(1, w // 4))], False, 1.0, max(1, w // 4), cv2.LINE_AA)
        img += (hl * layer)[..., None] * rng.uniform(20, 60)
    elif kind == "sealed":  # a crack filled with sealant: a smooth dark band of even width over a crack's path
        path = synth._crack_path(rng, rng.uniform(0, size, 2), rng.uniform(0, 2 * math.pi), size * 1.2, size / 40)
        cv2.polylines(layer, [path.astype(np.int32)], False, 1.0, int(rng.integers(5, 16)), cv2.LINE_AA)
        seal = cv2.GaussianBlur(layer, (0, 0), 1.0)[..., None]
        img[:] = img * (1 - seal) + rng.uniform(15, 60) * seal
    elif kind == "leaf":
        for _ in range(int(rng.integers(1, 4))):
            center = (int(rng.integers(0, size)), int(rng.integers(0, size)))
            axes = (int(rng.integers(4, size // 8 + 5)), int(rng.integers(2, size // 16 + 3)))
            leafc = rng.uniform([30, 50, 10], [140, 120, 60]).astype(np.float32)
            cv2.ellipse(layer, center, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA)
            img[:] = img * (1 - layer[..., None]) + leafc * layer[..., None]
            layer[:] = 0
    else:  # shadow, stain, scratch: the synth module's distractors
        synth._distractor(rng, {"shadow": "shadow", "stain": "stain"}.get(kind, "scratch"), img)


def camera(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, white balance, blur, sensor noise and JPEG: float32 in, uint8 RGB out."""
    img = img * rng.uniform(0.65, 1.35) * rng.uniform(0.88, 1.12, size=3).astype(np.float32)
    if rng.random() < 0.5:
        img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(0.7, 1.4)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.5))
    img = img + rng.standard_normal(img.shape).astype(np.float32) * rng.uniform(0, 7)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        _ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 95))])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def rendered_sample(
    pool: Pool | None, size: int, rng: np.random.Generator, cfg: DomainConfig, real_background: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A real or procedural surface or a manufactured part, maybe with 1-3 rendered cracks, maybe with hard
    negatives."""
    region = None  # where a crack may run (a part's body); None: anywhere
    if real_background and pool is not None:
        img = _background(pool, size, rng).astype(np.float32)
    elif rng.random() < cfg.part_probability:
        img, region = manufactured_part(rng, size)
    else:
        img = procedural_surface(rng, str(rng.choice(SURFACES)), size)
        if rng.random() < 0.3:
            hard_negative(rng, img, "grout")
    mask = np.zeros((size, size), np.uint8)
    if rng.random() < cfg.crack_probability:
        for _ in range(int(rng.integers(1, 3))):
            hairline = rng.random() < cfg.hairline_probability
            width = rng.uniform(*HAIRLINE_WIDTH) if hairline else log_uniform(rng, *cfg.crack_width)
            darkness, m = draw_crack(rng, size, width)
            if region is not None:
                m &= region
                darkness *= region
            render_crack(img, darkness, m, width, rng, HAIRLINE_DEPTH if hairline else CRACK_DEPTH)
            mask |= m
    if region is None and rng.random() < cfg.hard_negative_probability:
        for kind in rng.choice(HARD_NEGATIVES, size=int(rng.integers(1, 3)), replace=False):
            hard_negative(rng, img, str(kind))
    return camera(img, rng), mask


def _tile_grid(rng: np.random.Generator, size: int, body: np.ndarray) -> None:
    """Tiles laid in rows on a tray or belt: the gaps between them (1-8 px, showing the background) and their
    bevels are thin dark lines that are not cracks."""
    gap = rng.uniform(1, 8)
    tile_w, tile_h = rng.uniform(0.15, 0.6, 2) * size
    angle = rng.uniform(-8, 8)
    x0, y0 = rng.uniform(-tile_w, 0), rng.uniform(-tile_h, 0)
    y = y0
    while y < size + tile_h:
        x = x0 + (rng.uniform(0, tile_w / 2) if rng.random() < 0.3 else 0)  # staggered rows
        while x < size + tile_w:
            centre = (x + tile_w / 2 + rng.uniform(-1, 1), y + tile_h / 2 + rng.uniform(-1, 1))
            box = cv2.boxPoints((centre, (tile_w - gap, tile_h - gap), angle + rng.uniform(-2, 2)))
            cv2.fillPoly(body, [box.round().astype(np.int32)], 1)
            x += tile_w
        y += tile_h


def _free_parts(rng: np.random.Generator, size: int, body: np.ndarray, holes: np.ndarray) -> None:
    """1-3 plates, brackets or discs, often cut by the image border, some with holes."""
    for _ in range(int(rng.integers(1, 4))):
        center = rng.uniform(-0.1, 1.1, 2) * size  # often cut by the image border
        radius = rng.uniform(0.2, 0.7) * size
        n = int(rng.integers(4, 10))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = radius * rng.uniform(0.7, 1.0, n)
        pts = (center + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)).astype(np.int32)
        if rng.random() < 0.3:
            cv2.ellipse(
                body,
                tuple(int(v) for v in center),
                (int(radius), int(radius * rng.uniform(0.5, 1.0))),
                float(rng.uniform(0, 180)),
                0,
                360,
                1,
                -1,
            )
        else:
            cv2.fillPoly(body, [pts], 1)
        for _ in range(int(rng.integers(0, 3))):
            c = tuple(int(v) for v in center + rng.uniform(-0.5, 0.5, 2) * radius)
            cv2.circle(holes, c, int(rng.uniform(3, 0.15 * size)), 1, -1)


def manufactured_part(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A part on a fixture or belt: (float32 RGB, uint8 0/1 body where a crack may run).

    Teaches that a part's outline, its bevels and holes, a fixture along the image border and the border itself
    are not cracks (bundle 1.1 drew them as cracks on production-line parts). Its own shapes and parameters:
    the part-edge test suite (trainer.evaluation.suite_frames) draws its parts differently.
    """
    img = np.empty((size, size, 3), np.float32)
    img[:] = rng.uniform(5, 120) if rng.random() < 0.7 else rng.uniform(150, 240)
    img += synth._smooth_noise(rng, size, size, int(rng.integers(8, 64)))[..., None] * rng.uniform(2, 15)
    body = np.zeros((size, size), np.uint8)
    outline = np.zeros((size, size), np.float32)
    holes = np.zeros((size, size), np.uint8)
    if rng.random() < 0.4:
        _tile_grid(rng, size, body)
    else:
        _free_parts(rng, size, body, holes)
    body &= 1 - holes
    level = rng.uniform(60, 230)
    part = np.empty((size, size, 3), np.float32)
    part[:] = level + rng.uniform(-15, 15, 3)
    streaks = synth._smooth_noise(rng, 1, size, int(rng.integers(2, 10)))  # machining marks along one direction
    part += np.repeat(streaks, size, axis=0)[..., None] * rng.uniform(1, 8)
    soft = cv2.GaussianBlur(body.astype(np.float32), (0, 0), rng.uniform(0.5, 2.0))  # rounded or sharp edges
    img = img * (1 - soft[..., None]) + part * soft[..., None]
    contours, _ = cv2.findContours(body, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(outline, contours, -1, 1.0, int(rng.integers(1, 5)))
    img += outline[..., None] * rng.choice([-1, 1]) * rng.uniform(15, 70)  # a bevel that catches light or shade
    if rng.random() < 0.5:  # a fixture, rail or the dark inside of the enclosure along the image border
        band = int(rng.integers(2, max(3, size // 12)))
        side = int(rng.integers(0, 4))
        view = (img[:band], img[-band:], img[:, :band], img[:, -band:])[side]
        view[:] = rng.uniform(0, 50)
    if rng.random() < 0.5:  # vignetting
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
        img *= (1 - rng.uniform(0.1, 0.5) * np.clip((xx**2 + yy**2) * 2, 0, 1))[..., None]
    region = cv2.erode(body, np.ones((5, 5), np.uint8))
    return img, region


def generate(
    pool: Pool | None, n: int, size: int, seed: int, cfg: DomainConfig = DomainConfig(), progress=None
) -> tuple[np.ndarray, np.ndarray]:
    """`n` randomised samples: (uint8 images NxSxSx3, uint8 0/1 masks NxSxS)."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    have_real = pool is not None and len(pool.images) > 0
    it = range(n) if progress is None else progress(range(n), desc="domain randomisation")
    for i in it:
        u = rng.random()
        if (
            have_real and pool is not None and u < cfg.real
        ):  # (have_real implies a pool; said again for the type checker)
            img, m = rescaled_real(pool, size, rng, cfg.zoom)
            img = camera(img.astype(np.float32), rng) if rng.random() < 0.5 else img
        else:
            img, m = rendered_sample(pool, size, rng, cfg, real_background=u < cfg.real + cfg.rendered)
        images[i], masks[i] = img, m
    return images, masks
