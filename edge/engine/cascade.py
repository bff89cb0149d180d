"""The per-frame path: classifier first, the segmenter only when needed, then measurement.

preprocess (shared, resize straight into the input tensor) -> classifier ->
[segmenter -> full-frame mask] -> measure. An optional tiling mode splits large
frames into overlapping tiles, classifies each, segments the crack tiles and
stitches one full-frame mask.

The classifier is a gate: a frame whose score passes the threshold is segmented, and it is a crack only
if the segmenter then measures a crack (edge.engine.verdict).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.engine.bundle import LoadedBundle
from edge.engine.grouping import CrackGrouping
from edge.engine.measure import CrackMeasurements, measure_mask
from edge.engine.preprocess import ensure_rgb_uint8, resize_into
from edge.engine.verdict import counts_as_crack
from edge.vocabulary import SEGMENT_MODES, SegmentMode


@dataclass(frozen=True)
class TilingConfig:
    """Grid tiling for high-resolution frames: square tiles of `tile` px overlapping by `overlap`."""

    tile: int = 448
    overlap: float = 0.15

    def __post_init__(self):
        if self.tile < 32:
            raise ValueError(f"tiling.tile must be >= 32 px, got {self.tile}")
        if not 0.0 <= self.overlap < 0.9:
            raise ValueError(f"tiling.overlap must be in [0, 0.9), got {self.overlap}")


def tile_grid(height: int, width: int, cfg: TilingConfig) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) tiles covering the frame; edge tiles are shifted inwards so all have the full size."""

    def starts(extent: int) -> list[int]:
        size = min(cfg.tile, extent)
        if extent <= size:
            return [0]
        step = max(1, int(size * (1.0 - cfg.overlap)))
        n = math.ceil((extent - size) / step) + 1
        return sorted({min(i * step, extent - size) for i in range(n)})

    tw, th = min(cfg.tile, width), min(cfg.tile, height)
    return [(x, y, tw, th) for y in starts(height) for x in starts(width)]


@dataclass
class FrameResult:
    crack: bool  # counts_as_crack(score, threshold, confirmed)
    score: float  # classifier P(crack), 0-1 (max over tiles in tiling mode)
    segmented: bool
    measurements: CrackMeasurements | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    tiles: int = 1
    crack_tiles: int = 0
    # The full-frame mask is built only when someone asks (overlays, snapshots, --mask-dir): most frames never need it.
    _mask_builder: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    _mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def confirmed(self) -> bool | None:
        """Whether the segmenter measured a crack (one at least the minimum length); None when it did not run."""
        return None if self.measurements is None else self.measurements.count > 0

    @property
    def mask(self) -> np.ndarray | None:
        """uint8 0/255 crack mask at frame size, or None when the segmenter did not run."""
        if self._mask is None and self._mask_builder is not None:
            self._mask = self._mask_builder()
            self._mask_builder = None
        return self._mask

    def to_dict(self) -> dict:
        d = {
            "crack": self.crack,
            "score": round(self.score, 4),
            "segmented": self.segmented,
            "tiles": self.tiles,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
        }
        if self.measurements is not None:
            d["measurements"] = self.measurements.to_dict()
        return d


class Cascade:
    """Runs a loaded bundle on RGB frames. One instance per bundle; not thread-safe (one inference thread)."""

    def __init__(
        self,
        bundle: LoadedBundle,
        segment: SegmentMode = "on-crack",
        threshold: float | None = None,
        mm_per_pixel: float | None = None,
        tiling: TilingConfig | None = None,
        min_area_px: int = 4,
        cracks: CrackGrouping | None = None,
    ):
        if segment not in SEGMENT_MODES:
            raise ValueError(f"segment mode {segment!r}: expected one of {', '.join(SEGMENT_MODES)}")
        self.bundle = bundle
        self.segment = segment
        self.threshold = bundle.manifest.gate_threshold if threshold is None else float(threshold)
        self.mm_per_pixel = mm_per_pixel
        self.tiling = tiling
        self.min_area_px = min_area_px
        self.cracks = cracks or CrackGrouping()
        self.cracks.check_units(mm_per_pixel)
        out = bundle.classifier.output
        self._cls_scale, self._cls_zp = out.scale, out.zero_point
        seg_out = bundle.segmenter.output
        pixel_threshold = bundle.manifest.segmenter.threshold
        # Compare in the quantized domain: no float map is ever built.
        self._seg_q_threshold = int(math.ceil(pixel_threshold / seg_out.scale + seg_out.zero_point))

    @staticmethod
    def _run(model, rgb: np.ndarray, halvings: dict | None = None) -> tuple[np.ndarray, float, float]:
        """Resize `rgb` straight into the model's input tensor and invoke it: (raw output, preprocess ms, model ms).

        `halvings` is shared by the models that see the same frame, so it is downscaled only once."""
        t0 = time.perf_counter()
        view = model.input_view()
        resize_into(rgb, view, halvings)
        del view  # the runtimes refuse to invoke while a view of their buffers is alive
        t1 = time.perf_counter()
        raw = model.invoke()
        t2 = time.perf_counter()
        return raw, (t1 - t0) * 1000.0, (t2 - t1) * 1000.0

    def _score(self, raw: np.ndarray) -> float:
        return float((int(raw.reshape(-1)[0]) - self._cls_zp) * self._cls_scale)

    def _wants_segment(self, score: float) -> bool:
        return self.segment == "always" or (self.segment == "on-crack" and score >= self.threshold)

    def _prob_to_mask(self, prob_q: np.ndarray, height: int, width: int) -> np.ndarray:
        """Upsample the quantized probability map (bilinear) and threshold it: a smooth full-size 0/255 mask."""
        if prob_q.shape != (height, width):
            prob_q = cv2.resize(prob_q, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.where(prob_q >= self._seg_q_threshold, np.uint8(255), np.uint8(0))

    def _measure(self, mask: np.ndarray, frame_size: tuple[int, int]) -> CrackMeasurements:
        merge_gap_px, min_length_px = self.cracks.in_frame_px(*frame_size, self.mm_per_pixel)
        return measure_mask(mask, self.mm_per_pixel, self.min_area_px, frame_size, merge_gap_px, min_length_px)

    def process(self, frame: np.ndarray) -> FrameResult:
        t0 = time.perf_counter()
        rgb = ensure_rgb_uint8(frame)
        result = self._process_tiled(rgb, self.tiling) if self.tiling is not None else self._process_whole(rgb)
        result.timings_ms["total"] = (time.perf_counter() - t0) * 1000.0
        return result

    def _process_whole(self, rgb: np.ndarray) -> FrameResult:
        halvings: dict = {}
        raw, pre_ms, cls_ms = self._run(self.bundle.classifier, rgb, halvings)
        score = self._score(raw)
        timings = {"preprocess": pre_ms, "classify": cls_ms}
        result = FrameResult(crack=False, score=score, segmented=False, timings_ms=timings)
        if self._wants_segment(score):
            raw, pre_ms, seg_ms = self._run(self.bundle.segmenter, rgb, halvings)
            prob_q = raw[..., 0]
            t0 = time.perf_counter()
            h, w = rgb.shape[:2]
            # Measure on the model-resolution mask: the full-frame mask is only its upsampling.
            small = prob_q >= self._seg_q_threshold
            result.measurements = self._measure(small, (w, h))
            timings["preprocess"] += pre_ms
            timings["segment"] = seg_ms
            timings["measure"] = (time.perf_counter() - t0) * 1000.0
            result.segmented = True
            result._mask_builder = lambda: self._prob_to_mask(prob_q, h, w)
        result.crack = counts_as_crack(score, self.threshold, result.confirmed)
        return result

    def _process_tiled(self, rgb: np.ndarray, tiling: TilingConfig) -> FrameResult:
        h, w = rgb.shape[:2]
        tiles = tile_grid(h, w, tiling)
        timings = {"preprocess": 0.0, "classify": 0.0, "segment": 0.0, "measure": 0.0}
        prob = np.zeros((h, w), np.uint8)
        best, crack_tiles, segmented = 0.0, 0, False
        for x, y, tw, th in tiles:
            tile = rgb[y : y + th, x : x + tw]
            halvings: dict = {}
            raw, pre_ms, cls_ms = self._run(self.bundle.classifier, tile, halvings)
            score = self._score(raw)
            timings["preprocess"] += pre_ms
            timings["classify"] += cls_ms
            best = max(best, score)
            crack_tiles += score >= self.threshold
            if self._wants_segment(score):
                raw, pre_ms, seg_ms = self._run(self.bundle.segmenter, tile, halvings)
                t0 = time.perf_counter()
                tile_prob = cv2.resize(raw[..., 0], (tw, th), interpolation=cv2.INTER_LINEAR)
                # Overlaps keep the most confident tile's answer.
                np.maximum(prob[y : y + th, x : x + tw], tile_prob, out=prob[y : y + th, x : x + tw])
                timings["preprocess"] += pre_ms + (time.perf_counter() - t0) * 1000.0
                timings["segment"] += seg_ms
                segmented = True
        result = FrameResult(
            crack=False,
            score=best,
            segmented=segmented,
            timings_ms=timings,
            tiles=len(tiles),
            crack_tiles=crack_tiles,
        )
        if segmented:
            t0 = time.perf_counter()
            result._mask = np.where(prob >= self._seg_q_threshold, np.uint8(255), np.uint8(0))
            result.measurements = self._measure(result._mask, (w, h))
            timings["measure"] = (time.perf_counter() - t0) * 1000.0
        result.crack = counts_as_crack(best, self.threshold, result.confirmed)
        return result
