"""Procedural test suites, one per failure mode seen on real surfaces, never used for training.

Three suites, each a sequence of *pairs*: frame 2k is crack-free, frame 2k+1 is the same scene with cracks added
(only the crack pixels differ, so a false crack on the twin is the scene's fault, never the crack's):

- ``part_edges``: manufactured parts (plates with chamfers and holes, rows of tiles with their borders, discs),
  cut by the image border or not, on plain and textured backgrounds; cracks 1-3 px across the part;
- ``hairlines``: road, asphalt and concrete-like surfaces with cracks 1-3 px wide that are only 5-20 grey levels
  darker than the surface (the thin, low-contrast cracks the segmenter misses);
- ``markings``: road scenes with lane paint, joints, sealed cracks and shadows; cracks among them.

Disjoint from training by construction: every frame draws from ``SeedSequence(SUITE_ENTROPY, spawn_key=(suite,
pair, part))``, while the training generators (``edge.sources.synth``, ``trainer.data.domain``) draw from
``default_rng(int)`` (an empty spawn key); the suites' frames are not square (training samples are), their scenes
come from this module's own generators, and their hairlines are shallower than any training crack except training's
own hairlines (`HAIRLINE_MAX_DEPTH`; bundle 1.2 trains on shallow hairlines drawn by trainer.data.domain). Masks are
exact: a crack darkens exactly the pixels its mask marks, after the scene's blur and with the twin's sensor noise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from edge.sources import synth
from trainer.data import domain

SUITES = ("part_edges", "hairlines", "markings")
SUITE_ENTROPY = 0x5017E5_C7AC  # the root of every suite seed; training seeds are small ints with no spawn key
# (h, w), never square, and near the segmenter's input (224 px), so that a crack's width in the frame is its width
# as the model sees it: "1-3 px" hairlines are 1-3 px to the model, not half a pixel after the resize.
FRAME_SIZES = {"part_edges": (240, 320), "hairlines": (192, 256), "markings": (225, 400)}
HAIRLINE_WIDTHS = (1, 2, 3)  # px
HAIRLINE_CONTRAST = (5.0, 20.0)  # grey levels darker than the surface
HAIRLINE_MIN_SURFACE = 75.0  # surfaces are brightened to this mean, so 20 levels stay a shallow crack
HAIRLINE_MAX_DEPTH = HAIRLINE_CONTRAST[1] / HAIRLINE_MIN_SURFACE  # relative darkening, below other cracks' minimum
MIN_CRACK_PIXELS = 40  # a cracked twin whose crack ends up smaller is drawn again


@dataclass(frozen=True)
class SuiteFrame:
    """One test frame: RGB uint8 image, exact crack mask (uint8 0/1, all zero on a crack-free frame), what it shows."""

    suite: str
    index: int
    image: np.ndarray
    mask: np.ndarray
    scene: str  # in words, for overlays: "plate, textured background, border cut"
    cracked: bool  # False: a crack-free frame (its mask is all zero)
    crack_width: int | None = None  # px across, every crack of the frame
    crack_contrast: float | None = None  # grey levels darker than the scene, every crack of the frame


def frame_seed(suite: str, pair: int, part: int) -> np.random.SeedSequence:
    """The seed of one part of one pair (0: scene, 1: crack, 2: sensor noise)."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}")
    return np.random.SeedSequence(SUITE_ENTROPY, spawn_key=(SUITES.index(suite), pair, part))


def _rng(suite: str, pair: int, part: int) -> np.random.Generator:
    return np.random.default_rng(frame_seed(suite, pair, part))


# ---------------------------------------------------------------- part edges


def _background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, str]:
    kind = str(rng.choice(["plain", "textured", "belt"]))
    if kind == "plain":
        img = np.empty((h, w, 3), np.float32)
        img[:] = rng.uniform(20, 235, size=3).astype(np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        img += ((xx / w - 0.5) * rng.uniform(-25, 25) + (yy / h - 0.5) * rng.uniform(-25, 25))[..., None]
    elif kind == "textured":
        img = synth._texture(rng, str(rng.choice(["concrete", "painted", "asphalt"])), h, w)
    else:  # conveyor belt: fine streaks along the travel direction
        streaks = synth._smooth_noise(rng, 1, w, int(rng.integers(2, 6)))
        img = np.empty((h, w, 3), np.float32)
        img[:] = rng.uniform(25, 90)
        img += np.repeat(streaks, h, axis=0)[..., None] * rng.uniform(4, 12)
        img += rng.standard_normal((h, w, 1)).astype(np.float32) * rng.uniform(2, 6)
    return img, kind


def _chamfered_rect(rng: np.random.Generator, cx: float, cy: float, rw: float, rh: float) -> np.ndarray:
    """A rectangle with its corners cut (chamfers), slightly rotated: polygon points (N x 2 int32)."""
    c = rng.uniform(0.04, 0.2) * min(rw, rh)
    pts = np.array(
        [(-rw + c, -rh), (rw - c, -rh), (rw, -rh + c), (rw, rh - c), (rw - c, rh), (-rw + c, rh), (-rw, rh - c)]
        + [(-rw, -rh + c)],
        np.float32,
    )
    a = rng.uniform(-0.25, 0.25)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], np.float32)
    return (pts @ rot.T + (cx, cy)).round().astype(np.int32)


def _part_regions(rng: np.random.Generator, h: int, w: int) -> tuple[list[np.ndarray], list[tuple], str]:
    """Part outlines (polygons, or circles as (cx, cy, r)), holes (cx, cy, r) and the part's name."""
    kind = str(rng.choice(["plate", "tiles", "disc"]))
    cut = rng.random() < 0.35  # the part runs off the frame: its edge meets the image border
    spread = 0.75 if cut else 0.35
    cx = w / 2 + rng.uniform(-spread, spread) * w / 2
    cy = h / 2 + rng.uniform(-spread, spread) * h / 2
    holes: list[tuple] = []
    if kind == "plate":
        rw, rh = rng.uniform(0.2, 0.45) * w, rng.uniform(0.2, 0.45) * h
        polys = [_chamfered_rect(rng, cx, cy, rw, rh)]
        for _ in range(int(rng.integers(0, 4))):
            holes.append((cx + rng.uniform(-0.6, 0.6) * rw, cy + rng.uniform(-0.6, 0.6) * rh, rng.uniform(3, 12)))
    elif kind == "tiles":  # a row or grid of tiles: their borders are gaps showing the background
        cols, rows = int(rng.integers(2, 5)), int(rng.integers(1, 4))
        gap = rng.uniform(2, 7)
        tw, th = rng.uniform(0.12, 0.3) * w, rng.uniform(0.15, 0.35) * h
        x0, y0 = cx - cols * (tw + gap) / 2, cy - rows * (th + gap) / 2
        polys = [
            _chamfered_rect(rng, x0 + (i + 0.5) * (tw + gap), y0 + (j + 0.5) * (th + gap), tw / 2, th / 2)
            for j in range(rows)
            for i in range(cols)
        ]
    else:
        r = rng.uniform(0.2, 0.45) * min(h, w)
        polys = [np.array([(cx, cy, r)], np.float32)]
        holes.append((cx, cy, r * rng.uniform(0.15, 0.45)))
    return polys, holes, kind + (", border cut" if cut else "")


def _fill(layer: np.ndarray, shape: np.ndarray, value: float, thickness: int = -1) -> None:
    if shape.shape == (1, 3):  # a circle
        cx, cy, r = (float(v) for v in shape[0])
        cv2.circle(layer, (round(cx), round(cy)), round(r), value, thickness, cv2.LINE_AA)
    else:
        if thickness < 0:
            cv2.fillPoly(layer, [shape], value, cv2.LINE_AA)
        else:
            cv2.polylines(layer, [shape], True, value, thickness, cv2.LINE_AA)


def _part_scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(float32 RGB scene, uint8 0/1 region where a crack may run, description)."""
    img, bg_kind = _background(rng, h, w)
    polys, holes, part = _part_regions(rng, h, w)
    body = np.zeros((h, w), np.float32)
    bevel = np.zeros((h, w), np.float32)
    chamfer = int(rng.integers(2, 6))
    for shape in polys:
        _fill(body, shape, 1.0)
        _fill(bevel, shape, 1.0, chamfer)
    hole_layer = np.zeros((h, w), np.float32)
    for cx, cy, r in holes:
        cv2.circle(hole_layer, (round(cx), round(cy)), round(r), 1.0, -1, cv2.LINE_AA)
        cv2.circle(bevel, (round(cx), round(cy)), round(r), 1.0, max(1, chamfer // 2), cv2.LINE_AA)
    background_level = float(img.mean())
    level = background_level + rng.choice([-1, 1]) * rng.uniform(30, 110)
    if not 60 <= level <= 235:
        level = background_level - math.copysign(rng.uniform(30, 110), level - background_level)
    level = float(np.clip(level, 60, 235))
    surface = np.empty((h, w, 3), np.float32)
    surface[:] = level + rng.uniform(-10, 10, size=3).astype(np.float32)
    machining = synth._smooth_noise(rng, int(rng.integers(1, 4)), w, int(rng.integers(3, 12)))
    surface += cv2.resize(machining, (w, h), interpolation=cv2.INTER_LINEAR)[..., None] * rng.uniform(2, 8)
    surface += rng.standard_normal((h, w, 1)).astype(np.float32) * rng.uniform(1, 4)
    img = img * (1 - body[..., None]) + surface * body[..., None]
    img += bevel[..., None] * rng.choice([-1, 1]) * rng.uniform(20, 60)  # a lit or shaded chamfer
    img = img * (1 - hole_layer[..., None]) + rng.uniform(5, 50) * hole_layer[..., None]
    border = ""
    if rng.random() < 0.3:  # a fixture or rail along one image side
        side, band = int(rng.integers(0, 4)), int(rng.integers(3, 12))
        value = rng.uniform(0, 40) if rng.random() < 0.5 else rng.uniform(200, 250)
        view = (img[:band], img[-band:], img[:, :band], img[:, -band:])[side]
        view[:] = value
        border = ", fixture at the border"
    if rng.random() < 0.4:  # lens vignetting darkens the corners
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        img *= (1 - rng.uniform(0.15, 0.45) * np.clip(r2 / 2, 0, 1))[..., None]
        border += ", vignetting"
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.0))
    solid = (body > 0.99).astype(np.uint8) & (bevel < 0.01).astype(np.uint8) & (hole_layer < 0.01).astype(np.uint8)
    region = cv2.erode(solid, np.ones((7, 7), np.uint8))
    return img, region, f"{part}, {bg_kind} background{border}"


# ---------------------------------------------------------------- hairlines


def _road_surface(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, str]:
    kind = str(rng.choice(["asphalt", "concrete", "aggregate"]))
    if kind == "aggregate":
        img = domain.procedural_surface(rng, "aggregate", max(h, w))[:h, :w]
    else:
        img = synth._texture(rng, kind, h, w)
    mean = float(img.mean())
    if mean < HAIRLINE_MIN_SURFACE:
        img = img + (HAIRLINE_MIN_SURFACE - mean)
    return img, kind


def _hairline_scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, str]:
    img, kind = _road_surface(rng, h, w)
    img = np.clip(cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.8)), 0, 255)
    return img, np.ones((h, w), np.uint8), f"{kind} surface"


# ---------------------------------------------------------------- markings


def _perspective_band(h: int, w: int, vp: tuple[float, float], x_bottom: float, width: float) -> np.ndarray:
    """A band from the bottom edge towards the vanishing point, `width` px wide at the bottom, 1 px at the horizon."""
    vx, vy = vp
    top = max(vy, 0.0) + 0.05 * h
    t = (top - vy) / (h - vy)  # how far along from the vanishing point the top of the band lies
    xt = vx + (x_bottom - vx) * t
    wt = max(1.0, width * t)
    return np.array([(x_bottom - width / 2, h), (x_bottom + width / 2, h), (xt + wt / 2, top), (xt - wt / 2, top)])


def _marking_scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, str]:
    img, kind = _road_surface(rng, h, w)
    drawn = ["lane paint"]
    vp = (w / 2 + rng.uniform(-0.3, 0.3) * w, rng.uniform(-0.3, 0.2) * h)
    paint = np.zeros((h, w), np.float32)
    for x_bottom in rng.uniform(-0.1, 1.1, size=int(rng.integers(1, 4))) * w:
        band = _perspective_band(h, w, vp, x_bottom, rng.uniform(6, 18)).round().astype(np.int32)
        cv2.fillPoly(paint, [band], 1.0, cv2.LINE_AA)
        if rng.random() < 0.5:  # dashed: gaps across the band
            period, duty = rng.uniform(0.12, 0.3) * h, rng.uniform(0.4, 0.7)
            rows = (np.arange(h) + rng.uniform(0, period)) % period > duty * period
            paint[rows] *= 0.0 if rng.random() < 0.8 else 1.0
    colour = np.array(rng.choice([[235, 235, 230], [230, 190, 60]]), np.float32)
    worn = np.clip(0.75 + 0.25 * synth._smooth_noise(rng, h, w, 16), 0.3, 1.0)[..., None]
    img = img * (1 - paint[..., None] * worn) + colour * paint[..., None] * worn
    layer: np.ndarray = np.zeros((h, w), np.float32)
    if rng.random() < 0.6:  # saw-cut joints across the lane (straight, even, dark)
        for y in np.sort(rng.uniform(0.35, 1.0, size=int(rng.integers(1, 4))) * h):
            tilt = rng.uniform(-0.05, 0.05) * w
            cv2.line(layer, (0, round(y - tilt)), (w, round(y + tilt)), 1.0, int(rng.integers(2, 5)), cv2.LINE_AA)
        img -= layer[..., None] * rng.uniform(25, 55)
        drawn.append("joints")
    if rng.random() < 0.6:  # a sealed crack: a wide, smooth, very dark band of sealant along a crack's path
        layer[:] = 0
        start = np.array([rng.uniform(0, w), rng.uniform(0.3, 1.0) * h], np.float32)
        path = synth._crack_path(rng, start, rng.uniform(0, 2 * math.pi), rng.uniform(0.4, 1.0) * w, 6.0)
        cv2.polylines(layer, [path.round().astype(np.int32)], False, 1.0, int(rng.integers(4, 11)), cv2.LINE_AA)
        layer = cv2.GaussianBlur(layer, (0, 0), 1.5)
        img = img * (1 - layer[..., None]) + rng.uniform(15, 40) * layer[..., None]
        drawn.append("sealed crack")
    if rng.random() < 0.6:  # a pole's or a tree's shadow
        layer[:] = 0
        if rng.random() < 0.5:
            x0, x1 = rng.uniform(0, w, size=2)
            cv2.line(layer, (round(x0), h), (round(x1), 0), 1.0, int(rng.integers(5, 20)))
        else:
            for _ in range(int(rng.integers(3, 10))):
                c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                cv2.ellipse(layer, c, (int(rng.integers(6, 40)), int(rng.integers(3, 20))), 0, 0, 360, 1.0, -1)
        layer = cv2.GaussianBlur(layer, (0, 0), rng.uniform(2, 6))
        img *= (1 - layer * rng.uniform(0.3, 0.55))[..., None]
        drawn.append("shadow")
    img = np.clip(cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.0)), 0, 255)
    region = np.zeros((h, w), np.uint8)
    region[int(max(vp[1], 0) + 0.15 * h) :] = 1  # cracks on the road, below the horizon
    return img, region, f"{kind} road: " + ", ".join(drawn)


# ---------------------------------------------------------------- cracks and the pair


# A 1-px path dilated by these is `width` px across (measured: mean width 0.9, 1.9, 2.7, 4.1 px). cv2.line's own
# thickness is not: thickness 2 draws about 3 px, 3 about 5 px.
WIDTH_KERNELS = {
    2: np.ones((2, 2), np.uint8),
    3: cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)),
    4: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4, 4)),
}
SCENES = {"part_edges": _part_scene, "hairlines": _hairline_scene, "markings": _marking_scene}
# Per suite: how many cracks, widths (px, drawn with cv2 thickness) and contrast (grey levels darker).
CRACKS = {
    "part_edges": ((1, 2), (1, 2, 3), (25.0, 80.0)),
    "hairlines": ((1, 2), HAIRLINE_WIDTHS, HAIRLINE_CONTRAST),
    "markings": ((1, 3), (1, 2, 3, 4), (25.0, 70.0)),
}


def _crack_mask(rng: np.random.Generator, region: np.ndarray, suite: str) -> tuple[np.ndarray, int, float]:
    """The union of this suite's cracks, clipped to `region`: (mask uint8 0/1, width px, grey levels darker).

    The cracks of one frame share a width and a contrast, so the report can break recall down by both."""
    h, w = region.shape
    counts, widths, contrasts = CRACKS[suite]
    width, contrast = int(rng.choice(widths)), float(rng.uniform(*contrasts))
    inside = np.argwhere(region > 0)
    for _ in range(20):  # a crack that leaves the region at once is drawn again
        mask: np.ndarray = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(counts[0], counts[1] + 1))):
            y, x = inside[int(rng.integers(len(inside)))]
            length = rng.uniform(0.25, 0.8) * max(h, w)
            path = synth._crack_path(rng, np.array([x, y], np.float32), rng.uniform(0, 2 * math.pi), length, 3.0)
            for p0, p1 in itertools.pairwise(path):
                cv2.line(mask, tuple(int(v) for v in p0.round()), tuple(int(v) for v in p1.round()), 1, 1)
        if width > 1:
            mask = cv2.dilate(mask, WIDTH_KERNELS[width])
        mask &= region
        if mask.sum() >= MIN_CRACK_PIXELS:
            break
    return mask, width, contrast


def _finish(img: np.ndarray, noise: np.random.Generator) -> np.ndarray:
    img = img + noise.standard_normal(img.shape).astype(np.float32) * noise.uniform(1.0, 3.0)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def suite_pair(suite: str, pair: int) -> tuple[SuiteFrame, SuiteFrame]:
    """(crack-free frame 2*pair, the same scene with cracks, frame 2*pair + 1)."""
    scene_rng = _rng(suite, pair, 0)  # refuses an unknown suite
    h, w = FRAME_SIZES[suite]
    scene, region, what = SCENES[suite](scene_rng, h, w)
    mask, width, contrast = _crack_mask(_rng(suite, pair, 1), region, suite)
    # Keep every crack pixel visibly darker: never darker than 0, never below 55 % of the scene's value there.
    depth = mask.astype(np.float32) * contrast
    cracked = scene - np.minimum(depth, 0.45 * scene.min(axis=2))[..., None]
    free_image = _finish(scene, _rng(suite, pair, 2))
    cracked_image = _finish(cracked, _rng(suite, pair, 2))
    mask &= (cracked_image != free_image).any(axis=2).astype(np.uint8)  # a pixel the noise hid is no crack pixel
    free = SuiteFrame(suite, 2 * pair, free_image, np.zeros((h, w), np.uint8), what, cracked=False)
    crack = f", cracks {width} px wide, {contrast:.0f} grey levels darker"
    return free, SuiteFrame(suite, 2 * pair + 1, cracked_image, mask, what + crack, True, width, contrast)


def suite_frames(suite: str, n: int) -> Iterator[SuiteFrame]:
    """The suite's first `n` frames (crack-free and cracked twins alternate), the same bytes on every run."""
    for pair in range((n + 1) // 2):
        for frame in suite_pair(suite, pair):
            if frame.index < n:
                yield frame
