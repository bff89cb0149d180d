"""`crack-train export`: trained runs -> verified INT8 bundle."""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def cmd_export(args) -> int:
    from trainer.export.convert import ExportConfig, export_bundle

    version = args.version or dt.datetime.now(dt.UTC).strftime("%Y.%m.%d-%H%M%S")
    cfg = ExportConfig(calibration_images=args.calibration_images, tolerance=args.tolerance, golden_samples=args.golden)
    thresholds, source = {}, None
    if args.crossval:
        import json

        cv = json.loads(Path(args.crossval).read_text())
        thresholds = {
            role: cv[f"{role}_threshold"] for role in ("classifier", "segmenter") if f"{role}_threshold" in cv
        }
        source = f"leave-one-dataset-out validation ({Path(args.crossval).name})"
    for role in ("classifier", "segmenter"):
        value = getattr(args, f"{role}_threshold")
        if value is not None:
            thresholds[role], source = value, source or "given on the command line"
    out = export_bundle(
        Path(args.classifier) if args.classifier else None,
        Path(args.segmenter) if args.segmenter else None,
        Path(args.out),
        version,
        cfg,
        keep_from=Path(args.keep_from) if args.keep_from else None,
        thresholds=thresholds,
        threshold_source=source,
        finetune_dir=Path(args.finetune_dir) if args.finetune_dir else None,
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
        "--keep-from", metavar="BUNDLE_DIR", help="take the model without a run directory from this bundle, unchanged"
    )
    p.add_argument(
        "--finetune-dir",
        metavar="DIR",
        help="also publish the Keras checkpoints `crack-train adapt` starts from "
        "(e.g. models/finetune; kept out of the bundle, which devices do not need)",
    )
    p.add_argument("--crossval", metavar="CROSSVAL_JSON", help="record the thresholds chosen by `crack-train crossval`")
    p.add_argument("--classifier-threshold", type=float, default=None, help="P(crack) threshold of the frame decision")
    p.add_argument("--segmenter-threshold", type=float, default=None, help="per-pixel P(crack) threshold of the mask")
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
