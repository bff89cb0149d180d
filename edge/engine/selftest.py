"""Golden-sample self-test: does this device compute what the trainer recorded at export?

At export the trainer runs a few sample images through the INT8 models and
records the raw outputs in the bundle (`manifest["golden"]`). Before a bundle
may serve, the device runs the same images through its own runtime, with the
shared preprocessing, and compares. It exists to catch a broken model or
runtime (a damaged or wrong model file, a runtime that miscomputes, preprocessing
drift such as BGR instead of RGB), not to demand bit-identical INT8 arithmetic:
kernels legitimately round differently. LiteRT on emulated arm64 gave 165 where
x86 gave 172 (of 255) on the default bundle's sample 01 when XNNPACK could not
read the CPU's processor lists from /sys (172 when it could), and tflite-runtime's
builtin kernels move the segmenter maps by 0.15-0.29 quanta on the same samples.

What must agree, per sample (measured on x86-64 with LiteRT 2.3, default bundle
1.0.0, 314 images: the 4 golden ones, 150 synthetic, 40 each of UAV, SUT, METU
crack and METU clean photographs; XNNPACK against LiteRT's builtin kernels without
delegates and against its reference kernels, which agree with each other):
- the classifier's P(crack) within CLASSIFIER_SCORE_TOLERANCE = 0.12 of the
  recorded one. Kernels moved it by up to 23 quanta = 0.090 (median 0, 99th
  percentile 18 quanta; the largest moves are mid-range scores, saturated ones
  do not move); the ARM difference above is 7 quanta = 0.027. So the decision at
  the bundle's threshold is the recorded one unless the recorded score lies
  within the tolerance of the threshold.
- the segmenter's crack mask (at the bundle's pixel threshold): IoU with the
  recorded mask >= SEGMENTER_IOU_FLOOR = 0.7 when the two masks cover at least
  MASK_MIN_PIXELS together (measured minimum 0.843, mean 0.986), and the mean
  |difference| of the raw map <= SEGMENTER_MEAN_ABS_TOLERANCE = 1.0 quanta
  (measured maximum 0.43; up to 3 % of pixels moved by more than 2 quanta, which
  the old rule's 2 % limit refused).
Real defects measured against the same samples: reading the images as BGR moves
sample 01's classifier from 172 to 136 (0.14) and the segmenter maps by 1.1
quanta on average; flipping the sign bit of the largest weight of the
segmenter's output layer moves its maps by 1.2-1.7 quanta; one bit of a byte of
an output bias sends the score or the mask to 0; a truncated model does not
load. tests/edge/test_selftest.py shows the last three (and BGR) fail.

Manifest format (written by the trainer's exporter):

    "golden": {
      "samples": [{"image": "golden/0.png",                  # RGB PNG, relative to the bundle
                   "classifier_output": 187,                  # raw quantized classifier output
                   "segmenter_output": "golden/0_seg.png"}],  # PNG of the raw quantized segmenter map
      "tolerance": {"classifier_score": 0.12,                 # optional, any of the keys in DEFAULT_TOLERANCE
                    "segmenter_iou": 0.7, "segmenter_mean_abs": 1.0}
    }

Older bundles record a tolerance in quanta (`classifier`, `segmenter_max_fraction_off`)
that XNNPACK's ARM kernels do not meet; those keys are superseded by this rule.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.engine.bundle import BundleError, LoadedBundle
from edge.engine.preprocess import model_input
from edge.sources.images import read_rgb

log = logging.getLogger(__name__)

CLASSIFIER_SCORE_TOLERANCE = 0.12
SEGMENTER_IOU_FLOOR = 0.7
SEGMENTER_MEAN_ABS_TOLERANCE = 1.0  # quanta of the raw segmenter map
MASK_MIN_PIXELS = 50  # below this, IoU of two near-empty masks says nothing; the mean difference still applies
DEFAULT_TOLERANCE = {
    "classifier_score": CLASSIFIER_SCORE_TOLERANCE,
    "segmenter_iou": SEGMENTER_IOU_FLOOR,
    "segmenter_mean_abs": SEGMENTER_MEAN_ABS_TOLERANCE,
}
SUPERSEDED_TOLERANCE_KEYS = {"classifier", "segmenter_max_fraction_off"}


class GoldenError(BundleError):
    """The bundle's golden samples are missing, unreadable, or not reproduced by this device."""


class GoldenMissing(GoldenError):
    pass


class GoldenMismatch(GoldenError):
    pass


@dataclass
class SampleResult:
    image: str
    classifier_expected: list[int]
    classifier_actual: list[int]
    classifier_max_diff: int
    classifier_score_diff: float = 0.0
    segmenter_mean_abs: float | None = None
    segmenter_iou: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {
            "image": self.image,
            "ok": self.ok,
            "classifier_expected": self.classifier_expected,
            "classifier_actual": self.classifier_actual,
            "classifier_max_diff": self.classifier_max_diff,
            "classifier_score_diff": round(self.classifier_score_diff, 4),
            "segmenter_mean_abs": self.segmenter_mean_abs,
            "segmenter_iou": self.segmenter_iou,
            "problems": self.problems,
        }


@dataclass
class GoldenReport:
    bundle_version: str
    tolerance: dict
    samples: list[SampleResult]

    @property
    def ok(self) -> bool:
        return bool(self.samples) and all(s.ok for s in self.samples)

    def raise_for_failures(self) -> None:
        """Raise GoldenMismatch naming the first failing sample (and how many failed)."""
        failed = [s for s in self.samples if not s.ok]
        if failed:
            more = f" (and {len(failed) - 1} more of {len(self.samples)} samples)" if len(failed) > 1 else ""
            raise GoldenMismatch(
                f"bundle {self.bundle_version}: golden sample {failed[0].image}: {'; '.join(failed[0].problems)}{more}"
            )

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "bundle_version": self.bundle_version,
            "tolerance": self.tolerance,
            "samples": [s.as_dict() for s in self.samples],
        }


def _read_rgb(path: Path) -> np.ndarray:
    image = read_rgb(path)
    if image is None:
        raise GoldenError(f"{path}: golden image could not be read as an image")
    return image


def _read_map(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise GoldenError(f"{path}: golden segmenter output could not be read as an image")
    return image


def _squeeze_channels(a: np.ndarray) -> np.ndarray:
    return a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a


def _tolerance(golden: dict) -> dict:
    tol = dict(DEFAULT_TOLERANCE)
    given = golden.get("tolerance") or {}
    if set(given) & SUPERSEDED_TOLERANCE_KEYS:  # a tolerance in quanta, set for bit-exact kernels: replaced as a whole
        log.debug("golden.tolerance %s superseded by the cross-architecture rule %s", given, DEFAULT_TOLERANCE)
        return tol
    unknown = set(given) - set(DEFAULT_TOLERANCE)
    if unknown:
        log.warning("golden.tolerance: ignoring unknown keys %s", sorted(unknown))
    tol.update({k: float(v) for k, v in given.items() if k in DEFAULT_TOLERANCE})
    return tol


def mask_iou(a: np.ndarray, b: np.ndarray) -> float | None:
    """Intersection over union of two boolean masks; None when together they cover fewer than MASK_MIN_PIXELS."""
    union = int(np.count_nonzero(a | b))
    if union < MASK_MIN_PIXELS:
        return None
    return int(np.count_nonzero(a & b)) / union


def _check_classifier(bundle: LoadedBundle, rgb: np.ndarray, sample: dict, result: SampleResult, tol: dict) -> None:
    cls = bundle.classifier
    actual = cls.run(model_input(rgb, *cls.input_hw)).astype(np.int32).ravel()
    expected = np.atleast_1d(np.asarray(sample["classifier_output"], dtype=np.int32)).ravel()
    result.classifier_expected, result.classifier_actual = expected.tolist(), actual.tolist()
    if expected.shape != actual.shape:
        result.problems.append(f"classifier output has {actual.size} values, golden record has {expected.size}")
        return
    result.classifier_max_diff = int(np.abs(actual - expected).max())
    result.classifier_score_diff = result.classifier_max_diff * cls.output.scale
    if result.classifier_score_diff > tol["classifier_score"]:
        to_score = lambda q: (q - cls.output.zero_point) * cls.output.scale  # noqa: E731
        result.problems.append(
            f"classifier score {to_score(actual[0]):.3f} (raw {actual.tolist()}) differs "
            f"from the recorded {to_score(expected[0]):.3f} (raw {expected.tolist()}) by "
            f"{result.classifier_score_diff:.3f} (tolerance {tol['classifier_score']})"
        )


def _check_segmenter(bundle: LoadedBundle, rgb: np.ndarray, sample: dict, result: SampleResult, tol: dict) -> None:
    seg = bundle.segmenter
    actual = _squeeze_channels(seg.run(model_input(rgb, *seg.input_hw))).astype(np.int32)
    recorded = _squeeze_channels(_read_map(bundle.manifest.path / sample["segmenter_output"])).astype(np.int32)
    name = sample["segmenter_output"]
    if recorded.shape != actual.shape:
        result.problems.append(
            f"segmenter output shape {list(actual.shape)} != recorded {list(recorded.shape)} ({name})"
        )
        return
    result.segmenter_mean_abs = float(np.abs(actual - recorded).mean())
    if result.segmenter_mean_abs > tol["segmenter_mean_abs"]:
        result.problems.append(
            f"segmenter output differs from {name} by {result.segmenter_mean_abs:.2f} quanta on average "
            f"(tolerance {tol['segmenter_mean_abs']})"
        )
    out = seg.output
    q_threshold = int(np.ceil(bundle.manifest.segmenter.threshold / out.scale + out.zero_point))
    result.segmenter_iou = mask_iou(actual >= q_threshold, recorded >= q_threshold)
    if result.segmenter_iou is not None and result.segmenter_iou < tol["segmenter_iou"]:
        result.problems.append(
            f"segmenter crack mask overlaps the one of {name} with IoU {result.segmenter_iou:.3f} "
            f"(floor {tol['segmenter_iou']})"
        )


def _check_sample(bundle: LoadedBundle, sample: dict, tol: dict) -> SampleResult:
    root = bundle.manifest.path
    name = str(sample.get("image", "?"))
    if "image" not in sample or "classifier_output" not in sample:
        raise GoldenError(f"{root}: golden sample {name}: expected keys image and classifier_output")
    rgb = _read_rgb(root / sample["image"])
    result = SampleResult(name, [], [], 0)
    _check_classifier(bundle, rgb, sample, result, tol)
    if sample.get("segmenter_output"):
        _check_segmenter(bundle, rgb, sample, result, tol)
    return result


def run_golden(bundle: LoadedBundle) -> GoldenReport:
    """Run every golden sample through `bundle`'s models and compare with the recorded outputs.

    Returns the report (check `.ok`, or call `.raise_for_failures()`); raises
    GoldenMissing when the bundle records no samples and GoldenError when a
    sample's files cannot be read.
    """
    golden = bundle.manifest.golden or {}
    samples = golden.get("samples") or []
    if not samples:
        raise GoldenMissing(
            f"{bundle.manifest.path}: the manifest records no golden samples, so this "
            "device cannot check it computes what the trainer did; re-export the bundle"
        )
    tol = _tolerance(golden)
    results = [_check_sample(bundle, s, tol) for s in samples]
    report = GoldenReport(bundle.version, tol, results)
    log.info(
        "golden self-test of bundle %s: %d/%d samples ok", bundle.version, sum(r.ok for r in results), len(results)
    )
    return report


@dataclass(frozen=True)
class BundleLatency:
    """Per-frame time of a bundle's two models on this device, as `crackd models stage` measures it (medians in ms)."""

    classifier_ms_p50: float
    segmenter_ms_p50: float
    total_ms_p50: float
    total_ms_max: float
    runs: int

    def as_dict(self) -> dict:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def measure_bundle_latency(bundle: LoadedBundle, runs: int = 5) -> BundleLatency:
    """Time classifier and segmenter on this device (after one
    warm-up run), on the first golden image or a grey frame."""
    samples = (bundle.manifest.golden or {}).get("samples") or []
    if samples:
        rgb = _read_rgb(bundle.manifest.path / samples[0]["image"])
    else:
        rgb = np.full((*bundle.classifier.input_hw, 3), 128, np.uint8)
    cls_in = model_input(rgb, *bundle.classifier.input_hw)
    seg_in = model_input(rgb, *bundle.segmenter.input_hw)
    bundle.classifier.run(cls_in)
    bundle.segmenter.run(seg_in)
    cls_ms, seg_ms = [], []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        bundle.classifier.run(cls_in)
        t1 = time.perf_counter()
        bundle.segmenter.run(seg_in)
        t2 = time.perf_counter()
        cls_ms.append((t1 - t0) * 1000)
        seg_ms.append((t2 - t1) * 1000)
    total = np.add(cls_ms, seg_ms)
    return BundleLatency(
        float(np.median(cls_ms)), float(np.median(seg_ms)), float(np.median(total)), float(total.max()), len(cls_ms)
    )


def run_cascade(bundle: LoadedBundle) -> None:
    """Run the daemon's whole per-frame path (edge.engine.cascade, segmenter always on) on the first golden image.

    The golden comparison checks the raw model outputs; this checks that the
    cascade the daemon builds from the bundle (thresholds, output shapes,
    measurement) also works, so a bundle that would fail on every frame after
    activation is refused before it.
    """
    from edge.engine.cascade import Cascade

    samples = (bundle.manifest.golden or {}).get("samples") or []
    try:
        cascade = Cascade(bundle, segment="always")
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise GoldenError(
            f"bundle {bundle.version}: the cascade cannot be built from this bundle ({type(exc).__name__}: {exc})"
        ) from None
    for sample in samples[:1]:  # structure, not accuracy: one image finds it, and measuring a noisy mask is slow
        try:
            cascade.process(_read_rgb(bundle.manifest.path / sample["image"]))
        except GoldenError:
            raise
        except Exception as exc:  # any failure here would be a failure on every camera frame
            raise GoldenError(
                f"bundle {bundle.version}: golden sample {sample['image']}: "
                f"the cascade failed ({type(exc).__name__}: {exc})"
            ) from None
