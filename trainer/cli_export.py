"""`crack-train export`: trained runs -> verified INT8 bundle."""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def cmd_export(args) -> int:
    from trainer.export import ExportConfig, export_bundle

    version = args.version or dt.datetime.now(dt.timezone.utc).strftime("%Y.%m.%d-%H%M%S")
    cfg = ExportConfig(calibration_images=args.calibration_images, tolerance=args.tolerance, golden_samples=args.golden)
    out = export_bundle(Path(args.classifier), Path(args.segmenter), Path(args.out), version, cfg)
    if args.sign:
        from edge.signing import sign_bundle

        sign_bundle(out, Path(args.sign))
        print(f"signed {out}/manifest.json with {args.sign}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="convert trained runs into a full-integer INT8 model bundle")
    p.add_argument("--classifier", required=True, metavar="RUN_DIR", help="run directory of `crack-train classifier`")
    p.add_argument("--segmenter", required=True, metavar="RUN_DIR", help="run directory of `crack-train segmenter`")
    p.add_argument("--out", required=True, metavar="BUNDLE_DIR")
    p.add_argument("--version", default=None, help="bundle version (default: UTC date-time)")
    p.add_argument("--calibration-images", type=int, default=200, help="real training images used to calibrate INT8")
    p.add_argument("--tolerance", type=float, default=0.01, help="largest INT8 drop vs FP32 in F1/Dice before export fails")
    p.add_argument("--golden", type=int, default=4, help="golden self-test samples stored in the bundle")
    p.add_argument("--sign", metavar="KEY", default=None, help="sign the manifest with this OpenSSH ed25519 private key")
    p.set_defaults(func=cmd_export)
