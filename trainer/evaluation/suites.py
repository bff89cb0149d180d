"""Score a bundle on the procedural test suites (`suite_frames`) the way the device runs it.

Every frame goes through the device's own cascade twice: as a device with the default settings runs it (the frame is
a crack when the cascade says so) and with the segmenter on every frame (the frame is a crack when the segmenter
finds a crack component; its full-frame mask gives the pixel figures). Per suite:

- false-crack frame rate on the crack-free frames, by the default cascade and by the segmenter alone;
- where the false crack pixels lie: the share in the outer band of the frame (3 % of each side), the border and
  part-edge failure;
- tolerant precision / recall / F1 (2 px, pixels pooled) on the cracked frames, of the segmenter alone and of the
  default cascade (a frame it does not segment counts as an empty mask);
- overlays of the worst frames, and with `compare_with` the same figures of a previous bundle and the deltas.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.engine.bundle import load_bundle
from edge.engine.cascade import Cascade
from trainer.evaluation.suite_frames import CRACKS, SUITES, SuiteFrame, suite_frames
from trainer.export.metrics import tolerant_counts, tolerant_from_counts

TOLERANCE_PX = 2
# (suite, metric, comparison, target): the figures bundle 1.2.0 must reach.
TARGETS = (
    ("part_edges", "cascade_false_crack_rate", "<=", 0.02),
    ("part_edges", "border_false_share", "<=", 0.10),
    ("hairlines", "cascade_tolerant_recall", ">=", 0.80),
    ("markings", "cascade_false_crack_rate", "<=", 0.05),
)
# The metrics of a suite that the report and the comparison show, with how to read them.
METRICS = {
    "gate_false_open_rate": "crack-free frames the classifier gate passes",
    "gate_recall": "cracked frames the classifier gate passes",
    "cascade_false_crack_rate": "crack-free frames called crack (default cascade)",
    "segmenter_false_crack_rate": "crack-free frames called crack (segmenter alone)",
    "border_false_share": "false crack pixels in the outer 3 % band",
    "cascade_tolerant_recall": "tolerant recall, cracked frames (default cascade)",
    "cascade_tolerant_precision": "tolerant precision, cracked frames (default cascade)",
    "cascade_tolerant_f1": "tolerant F1, cracked frames (default cascade)",
    "segmenter_tolerant_recall": "tolerant recall, cracked frames (segmenter alone)",
    "segmenter_tolerant_precision": "tolerant precision, cracked frames (segmenter alone)",
    "segmenter_tolerant_f1": "tolerant F1, cracked frames (segmenter alone)",
    "cascade_crack_frame_recall": "cracked frames called crack (default cascade)",
}
SUITE_WORDS = {
    "part_edges": "manufactured parts (edges, chamfers, holes, tile borders, the image border)",
    "hairlines": "cracks 1-3 px wide, 5-20 grey levels darker than road, asphalt and concrete",
    "markings": "road scenes with lane paint, joints, sealed cracks and shadows",
}


@dataclass(frozen=True)
class SuiteConfig:
    frames: int = 120  # per suite, half crack-free, half cracked
    suites: tuple[str, ...] = SUITES
    border_band: float = 0.03  # the outer band, as a share of each side
    worst: int = 4  # frames per overlay figure
    runtime: str = "auto"
    negatives: tuple[str, ...] = ()  # folders of real crack-free photographs (METU negatives), `frames` of each


@dataclass(frozen=True)
class FrameScore:
    index: int
    cracked: bool
    gate_open: bool  # the classifier's score passed its threshold (the segmenter runs)
    cascade_crack: bool
    segmenter_crack: bool
    false_px: int  # predicted (segmenter alone) farther than the tolerance from any true crack pixel
    border_false_px: int
    segmenter_counts: tuple[int, int, int, int]  # trainer.export.metrics.tolerant_counts
    cascade_counts: tuple[int, int, int, int]
    crack_width: int | None = None  # the frame's cracks (suite_frames.SuiteFrame)
    crack_contrast: float | None = None

    @property
    def tolerant_f1(self) -> float:
        return float(tolerant_from_counts(np.array(self.segmenter_counts))["tolerant_f1"])


def border_band(h: int, w: int, share: float) -> np.ndarray:
    """True in the outer `share` of each side of an h x w frame."""
    by, bx = max(1, round(share * h)), max(1, round(share * w))
    band = np.ones((h, w), bool)
    band[by : h - by, bx : w - bx] = False
    return band


def score_frame(
    frame: SuiteFrame, default: Cascade, segmenter: Cascade, band: np.ndarray
) -> tuple[FrameScore, np.ndarray]:
    """(the frame's scores, the segmenter's full-frame mask as bool)."""
    device = default.process(frame.image)
    full = segmenter.process(frame.image)
    pred = (full.mask > 0) if full.mask is not None else np.zeros(frame.mask.shape, bool)
    device_pred = (device.mask > 0) if device.mask is not None else np.zeros(frame.mask.shape, bool)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * TOLERANCE_PX + 1, 2 * TOLERANCE_PX + 1))
    false = pred & ~(cv2.dilate(frame.mask, k) > 0)
    score = FrameScore(
        index=frame.index,
        cracked=frame.cracked,
        gate_open=bool(device.score >= default.threshold),
        cascade_crack=bool(device.crack),
        segmenter_crack=bool(full.measurements is not None and full.measurements.count > 0),
        false_px=int(false.sum()),
        border_false_px=int((false & band).sum()),
        segmenter_counts=tolerant_counts(frame.mask, pred, TOLERANCE_PX),
        cascade_counts=tolerant_counts(frame.mask, device_pred, TOLERANCE_PX),
        crack_width=frame.crack_width,
        crack_contrast=frame.crack_contrast,
    )
    return score, pred


def suite_metrics(scores: list[FrameScore], band_area_share: float) -> dict[str, Any]:
    free = [s for s in scores if not s.cracked]
    cracked = [s for s in scores if s.cracked]
    false_px = sum(s.false_px for s in scores)
    out: dict[str, Any] = {
        "frames": len(scores),
        "crack_free_frames": len(free),
        "cracked_frames": len(cracked),
        "cascade_false_crack_frames": sum(s.cascade_crack for s in free),
        "segmenter_false_crack_frames": sum(s.segmenter_crack for s in free),
        "gate_false_open_rate": float(np.mean([s.gate_open for s in free])) if free else None,
        "gate_recall": float(np.mean([s.gate_open for s in cracked])) if cracked else None,
        "cascade_false_crack_rate": float(np.mean([s.cascade_crack for s in free])) if free else None,
        "segmenter_false_crack_rate": float(np.mean([s.segmenter_crack for s in free])) if free else None,
        "false_px": false_px,
        "border_false_share": sum(s.border_false_px for s in scores) / false_px if false_px else None,
        "border_area_share": band_area_share,
        "cascade_crack_frame_recall": float(np.mean([s.cascade_crack for s in cracked])) if cracked else None,
    }
    for variant in ("segmenter", "cascade"):
        counts = np.array([getattr(s, f"{variant}_counts") for s in cracked], np.int64).reshape(-1, 4)
        for key, value in tolerant_from_counts(counts).items():
            out[f"{variant}_{key}"] = value if cracked else None
    return out


def recall_breakdown(scores: list[FrameScore], contrast_range: tuple[float, float]) -> list[dict[str, Any]]:
    """Tolerant recall of the cracked frames by crack width and by contrast (three equal bins of the suite's range):
    which cracks a bundle misses, not only how many."""
    cracked = [s for s in scores if s.cracked and s.crack_width is not None]
    widths = sorted({s.crack_width for s in cracked if s.crack_width is not None})
    edges = np.linspace(contrast_range[0], contrast_range[1], 4)
    groups = [(f"{w} px wide", [s for s in cracked if s.crack_width == w]) for w in widths]
    for a, b in itertools.pairwise(edges):
        chosen = [s for s in cracked if s.crack_contrast is not None and a <= s.crack_contrast <= b]
        groups.append((f"{a:.0f}-{b:.0f} grey levels darker", chosen))
    rows = []
    for name, chosen in groups:
        if not chosen:
            continue
        row: dict[str, Any] = {"cracks": name, "frames": len(chosen)}
        for variant in ("segmenter", "cascade"):
            counts = np.array([getattr(s, f"{variant}_counts") for s in chosen], np.int64)
            row[f"{variant}_tolerant_recall"] = tolerant_from_counts(counts)["tolerant_recall"]
        rows.append(row)
    return rows


def _worst_overlays(suite: str, kept: dict, scores: list[FrameScore], cfg: SuiteConfig, plots: Path) -> dict:
    """Two figures: the crack-free frames with the most false crack pixels, the cracked ones with the lowest F1."""
    from trainer.evaluation import plots as report_plots

    files = {}
    free = sorted((s for s in scores if not s.cracked and s.false_px), key=lambda s: -s.false_px)[: cfg.worst]
    cracked = sorted((s for s in scores if s.cracked), key=lambda s: s.tolerant_f1)[: cfg.worst]
    for name, chosen, label, fmt, value in (
        ("false_cracks", free, "false px", ".0f", lambda s: float(s.false_px)),
        ("missed_cracks", cracked, "tolerant F1", ".2f", lambda s: s.tolerant_f1),
    ):
        if not chosen:
            continue
        frames = [kept[s.index] for s in chosen]
        path = report_plots.overlay_grid(
            np.stack([f.image for f, _ in frames]),
            np.stack([f.mask for f, _ in frames]),
            {"int8": np.stack([p for _, p in frames])},
            {"int8": [value(s) for s in chosen]},
            f"{suite}: worst {name.replace('_', ' ')} | image | true mask | segmenter",
            plots / f"suite_{suite}_{name}.png",
            score_label=label,
            score_format=fmt,
        )
        files[name] = path
    return files


def negative_files(folder: Path) -> list[Path]:
    """The crack-free images of `folder`: its negative class, or every image when it has no class folders."""
    from edge.sources.images import image_files
    from trainer.data.datasets import DatasetError, classification_files

    try:
        files = [p for p, label in classification_files(folder) if label == 0]
    except DatasetError:
        files = image_files(folder) if folder.is_dir() else []
    if not files:
        raise DatasetError(f"{folder}: no crack-free images (expected a negative/ class folder or a folder of images)")
    return files


def check_config(cfg: SuiteConfig) -> None:
    """Refuse, before any long work, what the suites cannot run: an unknown suite, too few frames, an empty folder."""
    unknown = [s for s in cfg.suites if s not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite {unknown[0]!r}; expected one of {', '.join(SUITES)}")
    if cfg.frames < 2:
        raise ValueError(
            f"--suite-frames: expected at least 2 (a crack-free frame and its cracked twin), got {cfg.frames}"
        )
    for folder in cfg.negatives:
        negative_files(Path(folder))


def negative_frames(folder: Path, n: int) -> Iterator[SuiteFrame]:
    """Up to `n` crack-free photographs of `folder` (a classification folder's negative class, or a folder of
    images), spread evenly over the sorted file list, as crack-free frames with all-zero masks."""
    from edge.sources.images import read_rgb
    from trainer.data.datasets import DatasetError

    files = negative_files(folder)
    picks = np.unique(np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int))
    for i in picks:
        rgb = read_rgb(files[i])
        if rgb is None:
            raise DatasetError(f"{files[i]}: not a readable image")
        yield SuiteFrame(folder.name, int(i), rgb, np.zeros(rgb.shape[:2], np.uint8), files[i].name, cracked=False)


def run_suite(
    bundle_dir: Path, suite: str, cfg: SuiteConfig, plots: Path | None, progress: Callable | None = None
) -> dict[str, Any]:
    """One suite on one bundle: metrics and (with `plots`) the overlay files."""
    result, scores = score_frames(bundle_dir, suite, suite_frames(suite, cfg.frames), cfg, plots, progress)
    result["description"] = SUITE_WORDS[suite]
    result["recall_by_crack"] = recall_breakdown(scores, CRACKS[suite][2])
    return result


def run_negatives(
    bundle_dir: Path, folder: Path, cfg: SuiteConfig, plots: Path | None, progress: Callable | None = None
) -> dict[str, Any]:
    """Real crack-free photographs as one more crack-free set (METU negatives: the false-positive check)."""
    frames = negative_frames(folder, cfg.frames)
    result, _ = score_frames(bundle_dir, f"negatives_{folder.name}", frames, cfg, plots, progress)
    result["description"] = f"crack-free photographs of {folder}"
    return result


def score_frames(
    bundle_dir: Path,
    name: str,
    frames: Iterable[SuiteFrame],
    cfg: SuiteConfig,
    plots: Path | None,
    progress: Callable | None = None,
) -> tuple[dict[str, Any], list[FrameScore]]:
    """Frames through one bundle's cascade: (metrics and, with `plots`, the overlays of the worst frames; the
    per-frame scores)."""
    bundle = load_bundle(bundle_dir, runtime=cfg.runtime, threads=1)
    default = Cascade(bundle)
    segmenter = Cascade(bundle, segment="always")
    scores: list[FrameScore] = []
    kept: dict[int, tuple[SuiteFrame, np.ndarray]] = {}  # the candidates for the worst-case overlays
    for frame in progress(frames, desc=name) if progress else frames:
        h, w = frame.mask.shape
        band = border_band(h, w, cfg.border_band)
        score, pred = score_frame(frame, default, segmenter, band)
        scores.append(score)
        kept[frame.index] = (frame, pred)
        if len(kept) > 4 * cfg.worst:  # keep memory flat: drop the least bad of each kind
            worst_free = sorted((s for s in scores if not s.cracked), key=lambda s: -s.false_px)[: cfg.worst]
            worst_cracked = sorted((s for s in scores if s.cracked), key=lambda s: s.tolerant_f1)[: cfg.worst]
            keep = {s.index for s in worst_free + worst_cracked}
            kept = {i: v for i, v in kept.items() if i in keep}
    if not scores:
        raise ValueError(f"{name}: no frames to score")
    result: dict[str, Any] = {"metrics": suite_metrics(scores, float(band.mean()))}
    if plots is not None:
        files = _worst_overlays(name, kept, scores, cfg, plots)
        result["plots"] = {k: str(p.relative_to(plots.parent)) for k, p in files.items()}
    return result, scores


def check_suite_targets(suites: dict[str, Any]) -> list[dict[str, Any]]:
    """Each of TARGETS: met (True/False) or not measured (None), with the measured value."""
    checks = []
    for suite, metric, op, target in TARGETS:
        value = suites.get(suite, {}).get("metrics", {}).get(metric)
        met = None if value is None else (value <= target if op == "<=" else value >= target)
        checks.append({"suite": suite, "metric": metric, "op": op, "target": target, "measured": value, "met": met})
    return checks


def deltas(current: dict[str, Any], previous: dict[str, Any]) -> dict[str, dict[str, dict]]:
    """Per suite and metric: this bundle's value, the previous bundle's and the difference."""
    out: dict[str, dict[str, dict]] = {}
    for suite, entry in current.items():
        before = previous.get(suite, {}).get("metrics", {})
        rows = {}
        for metric in METRICS:
            a, b = entry["metrics"].get(metric), before.get(metric)
            rows[metric] = {"this": a, "previous": b, "delta": None if a is None or b is None else a - b}
        out[suite] = rows
    return out


def run_suites(
    bundle_dir: str | Path,
    out_dir: str | Path,
    cfg: SuiteConfig = SuiteConfig(),
    compare_with: str | Path | None = None,
    progress: Callable | None = None,
) -> dict[str, Any]:
    """Every suite of `cfg` on the bundle (and on `compare_with`, the same frames): the report's `suites` section.

    Overlays go to OUT_DIR/plots; the caller writes the section into its report."""
    from edge.engine.bundle import read_manifest

    bundle_dir = Path(bundle_dir)
    plots = Path(out_dir) / "plots"
    check_config(cfg)
    report: dict[str, Any] = {
        "config": asdict(cfg),
        "bundle": {"path": str(bundle_dir), "version": read_manifest(bundle_dir).bundle_version},
        "suites": {s: run_suite(bundle_dir, s, cfg, plots, progress) for s in cfg.suites},
    }
    for folder in map(Path, cfg.negatives):
        report["suites"][f"negatives_{folder.name}"] = run_negatives(bundle_dir, folder, cfg, plots, progress)
    report["targets"] = check_suite_targets(report["suites"])
    if compare_with is not None:
        previous_dir = Path(compare_with)
        previous = {s: run_suite(previous_dir, s, cfg, None, progress) for s in cfg.suites}
        for folder in map(Path, cfg.negatives):
            previous[f"negatives_{folder.name}"] = run_negatives(previous_dir, folder, cfg, None, progress)
        report["compare_with"] = {
            "path": str(previous_dir),
            "version": read_manifest(previous_dir).bundle_version,
            "suites": previous,
            "deltas": deltas(report["suites"], previous),
        }
    return report
