"""`crackd infer` (images and folders -> results) and `crackd bench` (per-stage latency)."""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from edge.cli.common import add_json_arg, fail, print_json
from edge.engine.bundle import BundleError
from edge.engine.grouping import CrackGrouping
from edge.engine.runtime import RuntimeUnavailable
from edge.layout import SHIPPED_BUNDLE
from edge.sources.images import DEFAULT_MAX_PIXELS, image_files, read_rgb
from edge.vocabulary import RUNTIME_CHOICES, RUNTIME_NAMES, SEGMENT_MODES


def default_bundle() -> Path:
    """The bundle infer and bench use without --bundle: $CRACKD_BUNDLE, else the shipped one."""
    return Path(os.environ.get("CRACKD_BUNDLE", SHIPPED_BUNDLE))


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


def _build_cascade(args):
    from edge.engine.bundle import load_bundle
    from edge.engine.cascade import Cascade, TilingConfig

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:  # also refuses nan
        raise ValueError(f"--threshold: expected a crack score from 0 to 1, got {args.threshold:g}")
    if not 0.0 <= args.merge_gap <= 1.0:  # --min-crack-length is checked by min_length_option
        raise ValueError(f"--merge-gap: expected a fraction of the frame diagonal from 0 to 1, got {args.merge_gap:g}")
    bundle = load_bundle(args.bundle or default_bundle(), runtime=args.runtime, threads=args.threads)
    tiling = TilingConfig(tile=args.tile) if getattr(args, "tile", None) else None
    cracks = CrackGrouping(merge_gap=args.merge_gap, **min_length_option(args.min_crack_length))
    return Cascade(
        bundle,
        segment=args.segment,
        threshold=args.threshold,
        mm_per_pixel=args.mm_per_pixel,
        tiling=tiling,
        cracks=cracks,
    )


def min_length_option(text: str) -> dict[str, float]:
    """`--min-crack-length`: a fraction of the frame diagonal (0.025), frame pixels (20px) or millimetres (2mm),
    as the CrackGrouping key that holds it."""
    value, key = text.strip().lower(), "min_length"
    for suffix, unit_key in (("px", "min_length_px"), ("mm", "min_length_mm")):
        if value.endswith(suffix):
            value, key = value[: -len(suffix)].strip(), unit_key
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number >= 0 or (key == "min_length" and number > 1):  # also refuses nan
        raise ValueError(
            f"--min-crack-length {text!r}: expected a fraction of the frame diagonal from 0 to 1 (0.025), "
            "a length in pixels (20px) or in millimetres (2mm, with --mm-per-pixel)"
        )
    return {key: number}


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted, recursive)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(image_files(p, recursive=True))
        else:
            out.append(p)
    return out


def read_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 image; raises ValueError naming the file when it cannot be decoded or is over `max_pixels`."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    rgb = read_rgb(path, max_pixels)
    if rgb is None:
        raise ValueError(f"{path}: not a readable image")
    return rgb


def _row(path: Path, result) -> str:
    m = result.measurements
    meas = "-"
    if m is not None and m.count:
        meas = (
            f"{m.count} crack(s), length {m.length_px:.0f}px, max width {m.max_width_px:.1f}px, "
            f"area {100 * m.area_fraction:.2f}%"
        )
    elif result.segmented:
        meas = "segmented: no crack measured"
    return f"{str(path)[-48:]:<48} {'CRACK' if result.crack else 'ok':<6} {result.score:6.3f}  {meas}"


def cmd_infer(args) -> int:
    import cv2

    from edge.engine.overlay import draw_overlay

    try:
        cascade = _build_cascade(args)
    except (BundleError, RuntimeUnavailable, ValueError) as exc:
        return fail(f"error: {exc}")
    files = expand_paths(args.paths)
    if not files:
        return fail(f"error: no images found in {' '.join(args.paths)}")
    for d in (args.overlay, args.mask_dir):
        if d:
            Path(d).mkdir(parents=True, exist_ok=True)
    if not args.json:
        print(f"bundle {cascade.bundle.version} ({cascade.bundle.classifier.runtime}, {args.threads} thread(s))")
        print(f"{'image':<48} {'result':<6} {'score':>6}  measurements")
    failed = 0
    for path in files:
        try:
            rgb = read_image(path, int(args.max_image_mpixels * 1e6) if args.max_image_mpixels else None)
            result = cascade.process(rgb)
        except ValueError as exc:
            failed += 1
            if args.json:
                print_json({"path": str(path), "error": str(exc)}, flush=True)
            else:
                print(f"{str(path)[-48:]:<48} ERROR  {exc}")
            continue
        if args.mask_dir:
            mask = result.mask if result.mask is not None else np.zeros(rgb.shape[:2], np.uint8)
            cv2.imwrite(str(Path(args.mask_dir) / f"{path.stem}.png"), mask)
        if args.overlay:
            cv2.imwrite(
                str(Path(args.overlay) / f"{path.stem}.jpg"), cv2.cvtColor(draw_overlay(rgb, result), cv2.COLOR_RGB2BGR)
            )
        if args.json:
            print_json({"path": str(path), **result.to_dict()}, flush=True)
        else:
            print(_row(path, result), flush=True)
    if failed and not args.json:
        print(f"{failed} of {len(files)} image(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


def _percentiles(values: list[float]) -> dict:
    a = np.asarray(values)
    return {
        "median": float(np.median(a)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
    }


def _timed_loop(cascade, frames: list[np.ndarray], n: int, warmup: int) -> tuple[dict[str, list[float]], int, float]:
    """Process `n` frames (cycling `frames`) after `warmup` untimed
    ones: (per-stage ms lists, segmented count, wall s)."""
    for i in range(warmup):
        cascade.process(frames[i % len(frames)])
    stages: dict[str, list[float]] = {k: [] for k in ("preprocess", "classify", "segment", "measure", "total")}
    segmented = 0
    t_start = time.perf_counter()
    for i in range(n):
        r = cascade.process(frames[i % len(frames)])
        segmented += r.segmented
        for k in stages:
            stages[k].append(r.timings_ms.get(k, 0.0))
    return stages, segmented, time.perf_counter() - t_start


def _reference_report(reference, before, after, stages_ms: dict, no_crack_ms: dict, stream: dict | None = None) -> dict:
    """The reference's medians and every stage / frame median as a multiple of it (before and after runs pooled);
    a stream of real frames by its mean (a stream's cost is its average frame)."""
    from edge.engine.reference_timing import ReferenceTiming, relative_to

    pooled = ReferenceTiming(before.times_ms + after.times_ms)
    medians = {k: v["median"] for k, v in stages_ms.items()}
    medians["crack_frame"] = stages_ms["total"]["median"]
    medians["no_crack_frame"] = no_crack_ms["median"]
    if stream is not None:
        medians["stream_mean"] = stream["mean_ms"]
    return {
        "reference": {
            "path": str(reference.path),
            "input_shape": reference.input_shape,
            "runtime": reference.model.runtime,
            "threads": reference.model.threads,
            "median_ms": pooled.median_ms,
            "before": before.as_dict(),
            "after": after.as_dict(),
        },
        "relative_to_reference": relative_to(pooled.median_ms, medians),
    }


def _stream_frames(folder: Path, width: int, height: int, limit: int = 100) -> list[np.ndarray]:
    """Up to `limit` photographs of a folder (sorted, evenly spaced), each resized to the bench's frame size."""
    import cv2

    files = image_files(folder)
    if not files:
        raise ValueError(f"--stream {folder}: no images there (expected a folder of .jpg/.png photographs)")
    picked = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(limit, len(files))).round()]
    frames = []
    for path in picked:
        rgb = read_rgb(path)
        if rgb is not None:
            frames.append(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR))
    if not frames:
        raise ValueError(f"--stream {folder}: none of its images could be read")
    return frames


def _stream_report(cascade, folder: Path, frames: list[np.ndarray], n: int, warmup: int) -> dict:
    """Real frames through the bundle's own decision (segmenter on a classifier crack only): what a stream costs."""
    from edge.engine.cascade import Cascade

    gated = Cascade(
        cascade.bundle,
        segment="on-crack",
        threshold=cascade.threshold,
        mm_per_pixel=cascade.mm_per_pixel,
        tiling=cascade.tiling,
        cracks=cascade.cracks,
    )
    stages, segmented, _wall = _timed_loop(gated, frames, n, min(warmup, 5))
    total = stages["total"]
    return {
        "folder": str(folder),
        "distinct_frames": len(frames),
        "frames": n,
        "segmented_share": segmented / n,
        "mean_ms": float(np.mean(total)),
        **_percentiles(total),
    }


def cmd_bench(args) -> int:
    from edge.engine.cascade import Cascade
    from edge.engine.reference_timing import ReferenceError, ReferenceModel
    from edge.sources.synth import generate

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        return fail(f"error: --size {args.size!r}: expected WIDTHxHEIGHT, e.g. 640x480")
    if args.frames < 1:
        return fail(f"error: --frames {args.frames}: expected at least 1 frame to time")
    if args.warmup < 0 or args.reference_runs < 1:
        return fail(f"error: --warmup {args.warmup} / --reference-runs {args.reference_runs}: expected >= 0 / >= 1")
    if args.reference and not Path(args.reference).is_file():
        return fail(f"error: {args.reference}: no such reference model file")
    try:
        streamed = _stream_frames(Path(args.stream), width, height) if args.stream else None
    except (OSError, ValueError) as exc:
        return fail(f"error: {exc}")
    rng = np.random.default_rng(args.seed)
    first = generate(rng, height, width, crack_probability=1.0).image
    try:
        cascade = _build_cascade(args)
    except (BundleError, RuntimeUnavailable, ValueError) as exc:
        return fail(f"error: {exc}")
    reference = None
    if args.reference:
        try:  # the same runtime and threads as the bundle's models, or the ratio would compare runtimes
            reference = ReferenceModel(args.reference, runtime=cascade.bundle.classifier.runtime, threads=args.threads)
        except ReferenceError as exc:
            return fail(f"error: {exc}")
    cascade.process(first)
    cold_start = process_age_s()
    # A handful of distinct realistic frames, cycled: every frame has a crack so both models run.
    frames = [first] + [generate(rng, height, width, crack_probability=1.0).image for _ in range(7)]
    ref_before = reference.time(args.reference_runs) if reference else None
    stages, segmented, wall = _timed_loop(cascade, frames, args.frames, args.warmup)
    # A frame without a crack: the same frames with the segmenter off (preprocess + classifier).
    no_crack = Cascade(cascade.bundle, segment="never", threshold=cascade.threshold)
    no_crack_stages, _, _ = _timed_loop(no_crack, frames, args.frames, min(args.warmup, 5))
    stream = _stream_report(cascade, Path(args.stream), streamed, args.frames, args.warmup) if streamed else None
    ref_after = reference.time(args.reference_runs) if reference else None
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
        "no_crack_frame_ms": _percentiles(no_crack_stages["total"]),
        "fps": args.frames / wall,
        "pipeline_efficiency": model_ms / sum(stages["total"]),
        "peak_rss_mb": peak_rss_mb(),
        "cold_start_s": cold_start,
    }
    if stream is not None:
        report["stream"] = stream
    if reference:
        report.update(
            _reference_report(
                reference, ref_before, ref_after, report["stages_ms"], report["no_crack_frame_ms"], stream
            )
        )
    if args.json:
        print_json(report, indent=1)
        return 0
    _print_bench(report, args.threads)
    return 0


def _print_bench(report: dict, threads: int) -> None:
    width, height = report["frame_size"]
    ratios = report.get("relative_to_reference")
    print(
        f"crackd bench: bundle {report['bundle_version']}, runtime {report['runtime']}, "
        f"{threads} thread(s), {width}x{height}, {report['frames']} frames "
        f"({report['segmented_frames']} segmented, mode {report['segment_mode']})"
    )
    print(f"{'stage':<14} {'median':>8} {'p95':>8} {'p99':>8}   (ms)" + ("   x reference" if ratios else ""))
    rows = [*report["stages_ms"].items(), ("no-crack frame", report["no_crack_frame_ms"])]
    keys = [*report["stages_ms"], "no_crack_frame"]
    for (name, v), key in zip(rows, keys):
        ratio = f"   {ratios[key]:8.3f}" if ratios else ""
        print(f"{name:<14} {v['median']:8.3f} {v['p95']:8.3f} {v['p99']:8.3f}{ratio}")
    if ratios:
        ref = report["reference"]
        print(
            f"reference      {ref['median_ms']:8.3f} ms median ({Path(ref['path']).name}, "
            f"input {'x'.join(map(str, ref['input_shape'][1:]))}; before "
            f"{ref['before']['median_ms']:.3f}, after {ref['after']['median_ms']:.3f})"
        )
        print(
            f"crack frame          {ratios['crack_frame']:.3f} x "
            f"reference   no-crack frame {ratios['no_crack_frame']:.3f} x reference"
        )
    if "stream" in report:
        stream = report["stream"]
        ratio = f", {ratios['stream_mean']:.3f} x reference" if ratios else ""
        print(
            f"stream of {stream['distinct_frames']} real frames ({Path(stream['folder']).name}): mean "
            f"{stream['mean_ms']:.3f} ms{ratio}, {stream['segmented_share']:.1%} segmented (the bundle's gate)"
        )
    print(f"throughput           {report['fps']:.1f} frames/s")
    print(f"pipeline efficiency  {report['pipeline_efficiency']:.3f}  (time inside the models / end-to-end)")
    print(f"peak RSS             {report['peak_rss_mb']:.1f} MB")
    print(f"cold start           {report['cold_start_s']:.2f} s  (process start to first result)")


def _add_model_args(p, segment_default: str) -> None:
    p.add_argument("--bundle", default=None, metavar="DIR", help="model bundle (default: the shipped models/default)")
    p.add_argument(
        "--runtime",
        choices=RUNTIME_CHOICES,
        default="auto",
        help=f"TFLite runtime (default auto: {', '.join(RUNTIME_NAMES)})",
    )
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument(
        "--segment",
        choices=SEGMENT_MODES,
        default=segment_default,
        help=f"when to run the segmenter (default {segment_default}); a segmented image is a crack only when a crack "
        "is measured, with 'never' the classifier's score alone decides",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="classifier gate: the score at which the segmenter runs (default: the bundle's)",
    )
    p.add_argument("--mm-per-pixel", type=float, default=None, help="scale for millimetre measurements")
    defaults = CrackGrouping()
    p.add_argument(
        "--merge-gap",
        type=float,
        default=defaults.merge_gap,
        metavar="FRACTION",
        help=f"mask pieces closer than this fraction of the frame diagonal are one crack "
        f"(default {defaults.merge_gap})",
    )
    p.add_argument(
        "--min-crack-length",
        default=str(defaults.min_length),
        metavar="LENGTH",
        help="cracks shorter than this are not counted, and an image holding none is no crack: a fraction of the "
        f"frame diagonal (default {defaults.min_length}), pixels (20px) or millimetres (2mm, with --mm-per-pixel)",
    )
    p.add_argument(
        "--tile", type=int, default=None, metavar="PX", help="tiling mode for large frames: tile size in pixels"
    )


def register(sub) -> None:
    p = sub.add_parser("infer", help="run the models on image files or folders")
    _add_model_args(p, "on-crack")
    p.add_argument(
        "--max-image-mpixels",
        type=float,
        default=DEFAULT_MAX_PIXELS / 1e6,
        metavar="MP",
        help=(
            "skip images whose header announces more megapixels, undecoded "
            f"(default {DEFAULT_MAX_PIXELS / 1e6:g}; 0 = no limit)"
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    add_json_arg(p, help="one JSON object per image per line")
    p.add_argument("--overlay", metavar="DIR", help="write annotated images here")
    p.add_argument("--mask-dir", metavar="DIR", help="write predicted masks (0/255 PNG at the input size) here")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("bench", help="benchmark the per-frame path (per stage and end to end)")
    _add_model_args(p, "always")
    p.add_argument("--frames", type=int, default=300, help="frames to time (default 300)")
    p.add_argument("--warmup", type=int, default=20, help="untimed frames first (default 20)")
    p.add_argument("--size", default="640x480", metavar="WxH", help="frame size (default 640x480)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic cracked frames (default 0)")
    p.add_argument(
        "--stream",
        metavar="DIR",
        default=None,
        help="also time a stream of real photographs from DIR (e.g. crack-free surfaces), resized to --size, through "
        "the bundle's own decision (segmenter only on a classifier crack): its mean frame cost and segmented share",
    )
    p.add_argument(
        "--reference",
        metavar="MODEL.tflite",
        default=None,
        help=(
            "also time this model (crack-train reference-model) before "
            "and after, and state every median as a multiple of it"
        ),
    )
    p.add_argument(
        "--reference-runs",
        type=int,
        default=50,
        metavar="N",
        help="timed runs of the reference before and after (default 50)",
    )
    add_json_arg(p, help="print the figures as one JSON object")
    p.set_defaults(func=cmd_bench)
