"""`crack-train export`: trained runs -> verified INT8 bundle."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ChosenThresholds:
    """The thresholds export writes into the manifest, and where each came from."""

    thresholds: dict[str, float] = field(default_factory=dict)  # role -> value
    source: str | None = None
    gate: float | None = None  # the classifier's high-recall gate
    gate_source: str | None = None


def chosen_thresholds(args) -> ChosenThresholds:
    """The thresholds of `--crossval` (crack-train crossval's crossval.json), each replaced by its command-line
    option when given."""
    from trainer.cli.checks import InputError, check_threshold, read_json

    chosen = ChosenThresholds()
    if args.crossval:
        cv = read_json(Path(args.crossval), "the crossval.json of crack-train crossval")
        if not isinstance(cv, dict):
            raise InputError(f"{args.crossval}: expected a JSON object (crack-train crossval's crossval.json)")
        chosen.thresholds = {
            role: check_threshold(cv[f"{role}_threshold"], f"{args.crossval}: {role}_threshold")
            for role in ("classifier", "segmenter")
            if isinstance(cv.get(f"{role}_threshold"), (int, float))
        }
        chosen.source = f"leave-one-dataset-out validation ({Path(args.crossval).name})"
        if isinstance(cv.get("classifier_gate_threshold"), (int, float)):
            chosen.gate = check_threshold(
                cv["classifier_gate_threshold"], f"{args.crossval}: classifier_gate_threshold"
            )
            chosen.gate_source = chosen.source
    for role in ("classifier", "segmenter"):
        value = getattr(args, f"{role}_threshold")
        if value is not None:
            chosen.thresholds[role] = check_threshold(value, f"--{role}-threshold")
            chosen.source = chosen.source or "given on the command line"
    if args.classifier_gate_threshold is not None:
        chosen.gate = check_threshold(args.classifier_gate_threshold, "--classifier-gate-threshold")
        chosen.gate_source = "given on the command line"
    return chosen


def cmd_export(args) -> int:
    from trainer.cli.checks import (
        InputError,
        check_bundle,
        check_output_dir,
        check_run_dir,
    )

    # Every input is checked before the export imports TensorFlow and converts anything.
    runs = {role: getattr(args, role) for role in ("classifier", "segmenter")}
    for role, run in runs.items():
        if run:
            check_run_dir(Path(run), f"--{role}")
    kept = [role for role, run in runs.items() if not run]
    if kept and args.keep_from:
        check_bundle(Path(args.keep_from), kept)
    elif kept:
        raise InputError(
            f"no {kept[0]} run given: name its run directory (--{kept[0]}), or keep the {kept[0]} of a bundle "
            "with --keep-from"
        )
    check_output_dir(Path(args.out), "--out")
    if args.finetune_dir:
        check_output_dir(Path(args.finetune_dir), "--finetune-dir")
    if args.sign and not Path(args.sign).is_file():
        raise InputError(f"--sign {args.sign}: no such key file (an OpenSSH ed25519 private key)")
    chosen = chosen_thresholds(args)

    from trainer.export.convert import ExportConfig, export_bundle

    version = args.version or dt.datetime.now(dt.UTC).strftime("%Y.%m.%d-%H%M%S")
    cfg = ExportConfig(calibration_images=args.calibration_images, tolerance=args.tolerance, golden_samples=args.golden)
    out = export_bundle(
        Path(args.classifier) if args.classifier else None,
        Path(args.segmenter) if args.segmenter else None,
        Path(args.out),
        version,
        cfg,
        keep_from=Path(args.keep_from) if args.keep_from else None,
        thresholds=chosen.thresholds,
        threshold_source=chosen.source,
        finetune_dir=Path(args.finetune_dir) if args.finetune_dir else None,
        gate_threshold=chosen.gate,
        gate_threshold_source=chosen.gate_source,
        force=args.force,
    )
    if args.sign:
        from edge.releases.signing import sign_bundle

        sign_bundle(out, Path(args.sign))
        print(f"signed {out}/manifest.json with {args.sign}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="convert trained runs into a full-integer INT8 model bundle")
    p.add_argument(
        "--classifier",
        metavar="RUN_DIR",
        help="run directory of `crack-train classifier` (or keep a bundle's: --keep-from)",
    )
    p.add_argument(
        "--segmenter",
        metavar="RUN_DIR",
        help="run directory of `crack-train segmenter` (or keep a bundle's: --keep-from)",
    )
    p.add_argument(
        "--keep-from",
        metavar="BUNDLE_DIR",
        help="take the model without a run directory from this bundle, unchanged; it is also the base a site "
        "bundle records, whose thresholds it carries over and which it must beat on the site's held-out images",
    )
    p.add_argument(
        "--finetune-dir",
        metavar="DIR",
        help="also publish the Keras checkpoints `crack-train adapt` starts from "
        "(e.g. models/finetune; kept out of the bundle, which devices do not need)",
    )
    p.add_argument(
        "--crossval",
        metavar="CROSSVAL_JSON",
        help="record the thresholds chosen by `crack-train crossval` (classifier, its gate, segmenter)",
    )
    p.add_argument("--classifier-threshold", type=float, default=None, help="P(crack) threshold of the frame decision")
    p.add_argument(
        "--classifier-gate-threshold",
        type=float,
        default=None,
        help="the classifier's high-recall gate: frames scoring at least this are segmented, and are cracks when the "
        "segmenter confirms one (default: none; the device gates at --classifier-threshold)",
    )
    p.add_argument("--segmenter-threshold", type=float, default=None, help="per-pixel P(crack) threshold of the mask")
    p.add_argument(
        "--force",
        action="store_true",
        help="write a segmenter adapted with `crack-train adapt` even when it scores below the --keep-from bundle's "
        "on the site's held-out images (refused by default)",
    )
    p.add_argument("--out", required=True, metavar="BUNDLE_DIR")
    p.add_argument("--version", default=None, help="bundle version (default: UTC date-time)")
    p.add_argument("--calibration-images", type=int, default=200, help="real training images used to calibrate INT8")
    p.add_argument(
        "--tolerance", type=float, default=0.01, help="largest INT8 drop vs FP32 in F1/Dice before export fails"
    )
    p.add_argument("--golden", type=int, default=4, help="golden self-test samples stored in the bundle")
    p.add_argument(
        "--sign", metavar="KEY", default=None, help="sign the manifest with this OpenSSH ed25519 private key"
    )
    p.set_defaults(func=cmd_export)
