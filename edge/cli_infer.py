"""`crackd infer` (images and folders -> results) and `crackd bench` (per-stage latency)."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from edge.bundle import BundleError
from edge.images import image_files, read_rgb
from edge.runtime import RUNTIME_CHOICES, RuntimeUnavailable

DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "default"


def default_bundle() -> Path:
    """The shipped default bundle: $CRACKD_BUNDLE, else models/default beside the package."""
    return Path(os.environ.get("CRACKD_BUNDLE", DEFAULT_BUNDLE))


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc), for cold-start figures."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _fail(message: str) -> int:
    print(f"crackd: error: {message}", file=sys.stderr)
    return 2


def _build_cascade(args):
    from edge.bundle import load_bundle
    from edge.cascade import Cascade, TilingConfig

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:  # also refuses nan
        raise ValueError(f"--threshold: expected a crack score from 0 to 1, got {args.threshold:g}")
    bundle = load_bundle(args.bundle or default_bundle(), runtime=args.runtime, threads=args.threads)
    tiling = TilingConfig(tile=args.tile) if getattr(args, "tile", None) else None
    return Cascade(bundle, segment=args.segment, threshold=args.threshold, mm_per_pixel=args.mm_per_pixel, tiling=tiling)


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted, recursive)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(image_files(p, recursive=True))
        else:
            out.append(p)
    return out


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 image; raises ValueError naming the file when it cannot be decoded."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    rgb = read_rgb(path)
    if rgb is None:
        raise ValueError(f"{path}: not a readable image")
    return rgb


def _row(path: Path, result) -> str:
    m = result.measurements
    meas = "-"
    if m is not None and m.count:
        meas = f"{m.count} crack(s), length {m.length_px:.0f}px, max width {m.max_width_px:.1f}px, area {100 * m.area_fraction:.2f}%"
    elif result.segmented:
        meas = "segmented: no crack pixels"
    return f"{str(path)[-48:]:<48} {'CRACK' if result.crack else 'ok':<6} {result.score:6.3f}  {meas}"


def cmd_infer(args) -> int:
    import cv2

    from edge.overlay import draw_overlay

    try:
        cascade = _build_cascade(args)
    except (BundleError, RuntimeUnavailable, ValueError) as exc:
        return _fail(str(exc))
    files = expand_paths(args.paths)
    if not files:
        return _fail(f"no images found in {' '.join(args.paths)}")
    for d in (args.overlay, args.mask_dir):
        if d:
            Path(d).mkdir(parents=True, exist_ok=True)
    if not args.json:
        print(f"bundle {cascade.bundle.version} ({cascade.bundle.classifier.runtime}, {args.threads} thread(s))")
        print(f"{'image':<48} {'result':<6} {'score':>6}  measurements")
    failed = 0
    for path in files:
        try:
            rgb = read_image(path)
            result = cascade.process(rgb)
        except ValueError as exc:
            failed += 1
            if args.json:
                print(json.dumps({"path": str(path), "error": str(exc)}), flush=True)
            else:
                print(f"{str(path)[-48:]:<48} ERROR  {exc}")
            continue
        if args.mask_dir:
            mask = result.mask if result.mask is not None else np.zeros(rgb.shape[:2], np.uint8)
            cv2.imwrite(str(Path(args.mask_dir) / f"{path.stem}.png"), mask)
        if args.overlay:
            cv2.imwrite(str(Path(args.overlay) / f"{path.stem}.jpg"), cv2.cvtColor(draw_overlay(rgb, result), cv2.COLOR_RGB2BGR))
        if args.json:
            print(json.dumps({"path": str(path), **result.to_dict()}), flush=True)
        else:
            print(_row(path, result), flush=True)
    if failed and not args.json:
        print(f"{failed} of {len(files)} image(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


def _percentiles(values: list[float]) -> dict:
    a = np.asarray(values)
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def cmd_bench(args) -> int:
    from edge.synth import generate

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        return _fail(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 640x480")
    rng = np.random.default_rng(args.seed)
    first = generate(rng, height, width, crack_probability=1.0).image
    try:
        cascade = _build_cascade(args)
    except (BundleError, RuntimeUnavailable, ValueError) as exc:
        return _fail(str(exc))
    cascade.process(first)
    cold_start = process_age_s()
    # A handful of distinct realistic frames, cycled: every frame has a crack so both models run.
    frames = [first] + [generate(rng, height, width, crack_probability=1.0).image for _ in range(7)]
    for i in range(args.warmup):
        cascade.process(frames[i % len(frames)])
    stages: dict[str, list[float]] = {k: [] for k in ("preprocess", "classify", "segment", "measure", "total")}
    t_start = time.perf_counter()
    segmented = 0
    for i in range(args.frames):
        r = cascade.process(frames[i % len(frames)])
        segmented += r.segmented
        for k in stages:
            stages[k].append(r.timings_ms.get(k, 0.0))
    wall = time.perf_counter() - t_start
    model_ms = sum(stages["classify"]) + sum(stages["segment"])
    report = {
        "bundle_version": cascade.bundle.version,
        "runtime": cascade.bundle.classifier.runtime,
        "threads": args.threads,
        "frame_size": [width, height],
        "frames": args.frames,
        "segmented_frames": segmented,
        "segment_mode": args.segment,
        "stages_ms": {k: _percentiles(v) for k, v in stages.items()},
        "fps": args.frames / wall,
        "pipeline_efficiency": model_ms / sum(stages["total"]),
        "peak_rss_mb": peak_rss_mb(),
        "cold_start_s": cold_start,
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"crackd bench: bundle {report['bundle_version']}, runtime {report['runtime']}, {args.threads} thread(s), "
          f"{width}x{height}, {args.frames} frames ({segmented} segmented, mode {args.segment})")
    print(f"{'stage':<11} {'median':>8} {'p95':>8} {'p99':>8}   (ms)")
    for k, v in report["stages_ms"].items():
        print(f"{k:<11} {v['median']:8.3f} {v['p95']:8.3f} {v['p99']:8.3f}")
    print(f"throughput           {report['fps']:.1f} frames/s")
    print(f"pipeline efficiency  {report['pipeline_efficiency']:.3f}  (time inside the models / end-to-end)")
    print(f"peak RSS             {report['peak_rss_mb']:.1f} MB")
    print(f"cold start           {report['cold_start_s']:.2f} s  (process start to first result)")
    return 0


def _add_model_args(p, segment_default: str) -> None:
    p.add_argument("--bundle", default=None, metavar="DIR", help="model bundle (default: the shipped models/default)")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto", help="TFLite runtime (default auto: ai-edge-litert, tflite-runtime, tensorflow)")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--segment", choices=["never", "on-crack", "always"], default=segment_default, help=f"when to run the segmenter (default {segment_default})")
    p.add_argument("--threshold", type=float, default=None, help="crack score threshold (default: the bundle's)")
    p.add_argument("--mm-per-pixel", type=float, default=None, help="scale for millimetre measurements")
    p.add_argument("--tile", type=int, default=None, metavar="PX", help="tiling mode for large frames: tile size in pixels")


def register(sub) -> None:
    p = sub.add_parser("infer", help="run the models on image files or folders")
    _add_model_args(p, "on-crack")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--json", action="store_true", help="one JSON object per image per line")
    p.add_argument("--overlay", metavar="DIR", help="write annotated images here")
    p.add_argument("--mask-dir", metavar="DIR", help="write predicted masks (0/255 PNG at the input size) here")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("bench", help="benchmark the per-frame path (per stage and end to end)")
    _add_model_args(p, "always")
    p.add_argument("--frames", type=int, default=300, help="frames to time (default 300)")
    p.add_argument("--warmup", type=int, default=20, help="untimed frames first (default 20)")
    p.add_argument("--size", default="640x480", metavar="WxH", help="frame size (default 640x480)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic cracked frames (default 0)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.set_defaults(func=cmd_bench)
