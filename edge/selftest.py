"""Golden-sample self-test: does this device compute what the trainer recorded at export?

At export the trainer runs a few sample images through the INT8 models and
records the raw outputs in the bundle (`manifest["golden"]`). Before a bundle
may serve, the device runs the same images through its own runtime, with the
shared preprocessing, and compares. A mismatch means a broken copy, a runtime
that computes differently (a different TFLite build, a missing delegate op) or
preprocessing drift: all reasons not to serve.

Manifest format (written by the trainer's exporter):

    "golden": {
      "samples": [{"image": "golden/0.png",                  # RGB PNG, relative to the bundle
                   "classifier_output": 187,                  # raw quantized classifier output
                   "segmenter_output": "golden/0_seg.png"}],  # PNG of the raw quantized segmenter map
      "tolerance": {"classifier": 2,                          # max |diff| in quanta
                    "segmenter_mean_abs": 1.0,                # mean |diff| in quanta
                    "segmenter_max_fraction_off": 0.01}       # fraction of pixels allowed > 2 quanta off
    }
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.bundle import BundleError, LoadedBundle
from edge.images import read_rgb
from edge.preprocess import model_input

log = logging.getLogger(__name__)

# A segmenter pixel counts as "off" when it differs by more than this many quanta.
PIXEL_OFF_QUANTA = 2
DEFAULT_TOLERANCE = {"classifier": 2, "segmenter_mean_abs": 1.0, "segmenter_max_fraction_off": 0.01}


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
    segmenter_mean_abs: float | None = None
    segmenter_fraction_off: float | None = None
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
            "segmenter_mean_abs": self.segmenter_mean_abs,
            "segmenter_fraction_off": self.segmenter_fraction_off,
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
            raise GoldenMismatch(f"bundle {self.bundle_version}: golden sample {failed[0].image}: {'; '.join(failed[0].problems)}{more}")

    def as_dict(self) -> dict:
        return {"ok": self.ok, "bundle_version": self.bundle_version, "tolerance": self.tolerance, "samples": [s.as_dict() for s in self.samples]}


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
    unknown = set(given) - set(DEFAULT_TOLERANCE)
    if unknown:
        log.warning("golden.tolerance: ignoring unknown keys %s", sorted(unknown))
    tol.update({k: v for k, v in given.items() if k in DEFAULT_TOLERANCE})
    return tol


def _check_sample(bundle: LoadedBundle, sample: dict, tol: dict) -> SampleResult:
    root = bundle.manifest.path
    name = str(sample.get("image", "?"))
    if "image" not in sample or "classifier_output" not in sample:
        raise GoldenError(f"{root}: golden sample {name}: expected keys image and classifier_output")
    rgb = _read_rgb(root / sample["image"])

    cls = bundle.classifier
    cls_out = cls.run(model_input(rgb, *cls.input_hw)).astype(np.int32).ravel()
    expected = np.atleast_1d(np.asarray(sample["classifier_output"], dtype=np.int32)).ravel()
    result = SampleResult(name, expected.tolist(), cls_out.tolist(), 0)
    if expected.shape != cls_out.shape:
        result.problems.append(f"classifier output has {cls_out.size} values, golden record has {expected.size}")
    else:
        result.classifier_max_diff = int(np.abs(cls_out - expected).max())
        if result.classifier_max_diff > tol["classifier"]:
            result.problems.append(
                f"classifier output {cls_out.tolist()} differs from the recorded {expected.tolist()} by {result.classifier_max_diff} quanta (tolerance {tol['classifier']})"
            )

    if sample.get("segmenter_output"):
        seg = bundle.segmenter
        seg_out = _squeeze_channels(seg.run(model_input(rgb, *seg.input_hw))).astype(np.int32)
        recorded = _squeeze_channels(_read_map(root / sample["segmenter_output"])).astype(np.int32)
        if recorded.shape != seg_out.shape:
            result.problems.append(f"segmenter output shape {list(seg_out.shape)} != recorded {list(recorded.shape)} ({sample['segmenter_output']})")
        else:
            diff = np.abs(seg_out - recorded)
            result.segmenter_mean_abs = float(diff.mean())
            result.segmenter_fraction_off = float((diff > PIXEL_OFF_QUANTA).mean())
            if result.segmenter_mean_abs > tol["segmenter_mean_abs"]:
                result.problems.append(
                    f"segmenter output differs from {sample['segmenter_output']} by {result.segmenter_mean_abs:.2f} quanta on average (tolerance {tol['segmenter_mean_abs']})"
                )
            if result.segmenter_fraction_off > tol["segmenter_max_fraction_off"]:
                result.problems.append(
                    f"{100 * result.segmenter_fraction_off:.1f}% of segmenter pixels are more than {PIXEL_OFF_QUANTA} quanta off {sample['segmenter_output']} "
                    f"(tolerance {100 * tol['segmenter_max_fraction_off']:.1f}%)"
                )
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
        raise GoldenMissing(f"{bundle.manifest.path}: the manifest records no golden samples, so this device cannot check it computes what the trainer did; re-export the bundle")
    tol = _tolerance(golden)
    results = [_check_sample(bundle, s, tol) for s in samples]
    report = GoldenReport(bundle.version, tol, results)
    log.info("golden self-test of bundle %s: %d/%d samples ok", bundle.version, sum(r.ok for r in results), len(results))
    return report


@dataclass(frozen=True)
class Latency:
    classifier_ms_p50: float
    segmenter_ms_p50: float
    total_ms_p50: float
    total_ms_max: float
    runs: int

    def as_dict(self) -> dict:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def measure_latency(bundle: LoadedBundle, runs: int = 5) -> Latency:
    """Time classifier and segmenter on this device (after one warm-up run), on the first golden image or a grey frame."""
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
    return Latency(float(np.median(cls_ms)), float(np.median(seg_ms)), float(np.median(total)), float(total.max()), len(cls_ms))


def run_cascade(bundle: LoadedBundle) -> None:
    """Run the daemon's whole per-frame path (edge.cascade, segmenter always on) on the first golden image.

    The golden comparison checks the raw model outputs; this checks that the
    cascade the daemon builds from the bundle (thresholds, output shapes,
    measurement) also works, so a bundle that would fail on every frame after
    activation is refused before it.
    """
    from edge.cascade import Cascade

    samples = (bundle.manifest.golden or {}).get("samples") or []
    try:
        cascade = Cascade(bundle, segment="always")
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise GoldenError(f"bundle {bundle.version}: the cascade cannot be built from this bundle ({type(exc).__name__}: {exc})") from None
    for sample in samples[:1]:  # structure, not accuracy: one image finds it, and measuring a noisy mask is slow
        try:
            cascade.process(_read_rgb(bundle.manifest.path / sample["image"]))
        except GoldenError:
            raise
        except Exception as exc:  # any failure here would be a failure on every camera frame
            raise GoldenError(f"bundle {bundle.version}: golden sample {sample['image']}: the cascade failed ({type(exc).__name__}: {exc})") from None
