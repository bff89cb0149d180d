"""`crack-train evaluate` (bundle report) and `crack-train sweep` (model selection)."""

from __future__ import annotations

from pathlib import Path

from edge.cli.common import EXIT_USAGE, fail
from edge.vocabulary import RUNTIME_CHOICES


def _progress(iterable, desc: str = ""):
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False, disable=None)


def _add_timing_args(p, runs: int) -> None:
    p.add_argument(
        "--latency-runs", type=int, default=runs, metavar="N", help=f"timed runs per model and round (default {runs})"
    )
    p.add_argument(
        "--latency-rounds",
        type=int,
        default=3,
        metavar="N",
        help="interleaved timing rounds over all models; per model the round with the lowest median counts (default 3)",
    )
    p.add_argument(
        "--timing-priority",
        choices=["realtime", "normal"],
        default="realtime",
        help="scheduling of the timing thread while it times: realtime (default; SCHED_FIFO for about a second per "
        "measurement, so other jobs on the machine do not inflate the numbers; needs root, else falls back) or normal",
    )


def _one_line_error(command: str, exc: Exception) -> int:
    """A bundle or conversion error as one line: its first line (TFLite converter errors run to pages)."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return fail(f"error: {first}", EXIT_USAGE, f"crack-train {command}")


def cmd_evaluate(args) -> int:
    from edge.engine.bundle import BundleError
    from edge.engine.runtime import RuntimeUnavailable
    from trainer.evaluation.evaluate import EvalConfig, evaluate_bundle
    from trainer.reports import markdown as report_md

    cfg = EvalConfig(
        limit=args.limit,
        latency_runs=args.latency_runs,
        latency_rounds=args.latency_rounds,
        timing_priority=args.timing_priority,
        seed=args.seed,
        in_domain=args.in_domain,
        cross_surface=args.cross_surface,
        overlay_samples=args.overlay_samples,
        runtime=args.runtime,
        suite_frames=args.suite_frames,
        compare_with=args.compare_with,
        suite_negatives=tuple(args.negatives),
    )
    out = Path(args.out) if args.out else Path(args.bundle)
    try:
        report = evaluate_bundle(args.bundle, args.data, args.heldout_from, out, cfg, progress=_progress)
        report_md.write(out, report)
    except (BundleError, RuntimeUnavailable) as exc:
        return _one_line_error("evaluate", exc)
    result = {True: "met", False: "NOT met", None: "not measured"}
    for check in report["targets"]:
        print(f"{result[check['met']]:>12}  {check['name']}: {check['measured']}")
    print(f"report: {out / 'REPORT.md'} (data: {out / 'report.json'})")
    return 0


def add_suite_args(p, frames: int, can_skip: bool = True) -> None:
    """The options of the procedural test suites, shared by `evaluate`, `crossval` and `suites`."""
    p.add_argument(
        "--suite-frames",
        type=int,
        default=frames,
        metavar="N",
        help=f"frames per procedural test suite (part edges, hairlines, markings; half crack-free), scored with the "
        f"device's cascade (default {frames}{'; 0: no suites' if can_skip else ''})",
    )
    p.add_argument(
        "--compare-with",
        default=None,
        metavar="BUNDLE",
        help="a previous bundle scored on the same suite frames (crossval: also its crossval.json's leave-one-out "
        "figures against these): the report gets tables of deltas",
    )
    p.add_argument(
        "--negatives",
        nargs="+",
        default=[],
        metavar="DIR",
        help="real crack-free photographs scored beside the suites, up to --suite-frames of each (a classification "
        "folder's negative class, e.g. metu_cls, or a folder of images): the false-positive check on real surfaces",
    )


def suite_config(args, bundle: Path):
    """The suites' settings from the command line, checked with the bundles it names (before any long work)."""
    from edge.engine.bundle import read_manifest
    from trainer.evaluation.suites import SuiteConfig, check_config

    read_manifest(bundle)
    if args.compare_with:
        read_manifest(Path(args.compare_with))
    cfg = SuiteConfig(
        frames=args.suite_frames, runtime=getattr(args, "runtime", "auto"), negatives=tuple(args.negatives)
    )
    check_config(cfg)
    return cfg


def suites_section(args, bundle: Path, out: Path) -> dict:
    """The suites section of a report."""
    from trainer.evaluation.suites import run_suites

    return run_suites(bundle, out, suite_config(args, bundle), args.compare_with, _progress)


def cmd_suites(args) -> int:
    from edge.engine.bundle import BundleError
    from edge.engine.runtime import RuntimeUnavailable
    from trainer.evaluation.json_safe import dumps, json_safe
    from trainer.reports import suites as suites_report

    out = Path(args.out) if args.out else Path(args.bundle)
    out.mkdir(parents=True, exist_ok=True)
    try:
        section = json_safe(suites_section(args, Path(args.bundle), out))
    except (BundleError, RuntimeUnavailable) as exc:
        return _one_line_error("suites", exc)
    (out / "suites.json").write_text(dumps(section))
    path = suites_report.write(out, section)
    print(path.read_text())
    print(f"suites: {path} (data: {out / 'suites.json'})")
    return 0


def cmd_sweep(args) -> int:
    from trainer.evaluation.sweep import SweepConfig, run_sweep
    from trainer.export.convert import ExportError
    from trainer.reports import sweep as sweep_report

    cfg = SweepConfig(
        alphas=tuple(args.alphas),
        sizes=tuple(args.sizes),
        segmenters=tuple(args.segmenters),
        latency_only=args.latency_only,
        from_runs=args.from_runs,
        data=tuple(args.data),
        holdout=tuple(args.holdout),
        synth=args.synth,
        train_images=args.train_images,
        val_images=args.val_images,
        epochs=args.epochs,
        seg_epochs=args.seg_epochs,
        calibration_images=args.calibration_images,
        latency_runs=args.latency_runs,
        latency_rounds=args.latency_rounds,
        timing_priority=args.timing_priority,
        seed=args.seed,
    )
    try:
        result = sweep_report.write(Path(args.out), run_sweep(Path(args.out), cfg, progress=_progress))
    except ExportError as exc:
        return _one_line_error("sweep", exc)
    print("\n".join(sweep_report.table_lines(result)))
    print(f"sweep: {Path(args.out) / 'SWEEP.md'} (data: {Path(args.out) / 'sweep.json'})")
    return 0


def register(sub) -> None:
    from trainer.evaluation.sweep import CLASSIFIER_ALPHAS, CLASSIFIER_SIZES, SEGMENTER_NAMES, SweepConfig

    p = sub.add_parser(
        "evaluate", help="evaluate a bundle's INT8 models against their FP32 references; write REPORT.md"
    )
    p.add_argument("bundle", metavar="BUNDLE", help="model bundle directory (manifest.json, *.tflite, reference/)")
    p.add_argument(
        "--data",
        nargs="+",
        default=[],
        metavar="DIR",
        help="dataset folders: classification (positive/ negative/) or segmentation (images/ + masks/)",
    )
    p.add_argument(
        "--heldout-from",
        nargs="+",
        default=[],
        metavar="RUN_DIR",
        help="training run directories whose heldout.npz (the test split never trained on) gives the headline numbers",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="where report.json, REPORT.md and plots/ go (default: the bundle directory)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="at most N images per class of a classification folder, N images of any other set (quick looks)",
    )
    _add_timing_args(p, 100)
    p.add_argument(
        "--overlay-samples", type=int, default=4, metavar="N", help="segmenter samples per data set in the overlay grid"
    )
    p.add_argument(
        "--in-domain",
        default="metu_cls",
        metavar="NAME",
        help="data set of the in-domain classifier target (default metu_cls)",
    )
    p.add_argument(
        "--cross-surface",
        default="sut_seg",
        metavar="NAME",
        help="data set of the cross-surface target (default sut_seg)",
    )
    p.add_argument(
        "--runtime", default="auto", choices=RUNTIME_CHOICES, help=f"TFLite runtime: {' | '.join(RUNTIME_CHOICES)}"
    )
    p.add_argument("--seed", type=int, default=0)
    add_suite_args(p, 120)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "suites",
        help="score a bundle on the procedural test suites (part edges, hairlines, markings); write SUITES.md",
        description="Generates the suites' frames (deterministic, from seeds no training uses) and runs each through "
        "the device's cascade: false-crack frame rates on crack-free frames, the share of false crack pixels in the "
        "outer 3 % band, tolerant recall/precision/F1 (2 px) on cracked frames, overlays of the worst frames.",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="model bundle directory")
    p.add_argument(
        "--out", default=None, metavar="DIR", help="where suites.json, SUITES.md and plots/ go (default: the bundle)"
    )
    add_suite_args(p, 300, can_skip=False)
    p.add_argument(
        "--runtime", default="auto", choices=RUNTIME_CHOICES, help=f"TFLite runtime: {' | '.join(RUNTIME_CHOICES)}"
    )
    p.set_defaults(func=cmd_suites)

    d = SweepConfig()
    p = sub.add_parser(
        "sweep", help="model-selection sweep: INT8 latency and short-schedule quality of each configuration"
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="where sweep.json, SWEEP.md, plots and newly trained runs go"
    )
    p.add_argument("--data", nargs="+", default=[], metavar="DIR", help="dataset folders for training and calibration")
    p.add_argument(
        "--holdout",
        nargs="*",
        default=[],
        metavar="NAME",
        help="folders kept out of classifier training (as `classifier`)",
    )
    p.add_argument(
        "--synth",
        type=int,
        default=d.synth,
        metavar="N",
        help=f"synthetic samples added to each training run (default {d.synth})",
    )
    p.add_argument(
        "--alphas", nargs="*", type=float, default=list(CLASSIFIER_ALPHAS), help="MobileNetV2 width multipliers"
    )
    p.add_argument("--sizes", nargs="*", type=int, default=list(CLASSIFIER_SIZES), help="classifier input sizes")
    p.add_argument(
        "--segmenters", nargs="*", default=list(SEGMENTER_NAMES), choices=list(SEGMENTER_NAMES), help="U-Net sizes"
    )
    p.add_argument("--latency-only", action="store_true", help="convert and time every configuration; train nothing")
    p.add_argument(
        "--from-runs",
        default=None,
        metavar="DIR",
        help="reuse trained runs DIR/cls_a{alpha}_s{size} and DIR/seg_{size} where they exist instead of training",
    )
    p.add_argument(
        "--train-images",
        type=int,
        default=d.train_images,
        help=f"training images per short run (default {d.train_images})",
    )
    p.add_argument(
        "--val-images", type=int, default=d.val_images, help=f"validation images per run (default {d.val_images})"
    )
    p.add_argument(
        "--epochs", type=int, default=d.epochs, help=f"classifier epochs of the short schedule (default {d.epochs})"
    )
    p.add_argument(
        "--seg-epochs",
        type=int,
        default=d.seg_epochs,
        help=f"segmenter epochs of the short schedule (default {d.seg_epochs})",
    )
    p.add_argument("--calibration-images", type=int, default=d.calibration_images, help="images for INT8 calibration")
    _add_timing_args(p, d.latency_runs)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sweep)
