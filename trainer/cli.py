"""`crack-train`: synthesize data, train, export INT8 bundles, evaluate, sweep."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
log = logging.getLogger("crack-train")


def _progress(iterable, desc: str = ""):
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit="img", leave=False, disable=None)


def cmd_synth(args) -> int:
    from edge.synth import write_dataset
    from tqdm import tqdm

    n = write_dataset(args.out, args.n, seed=args.seed, height=args.size, width=args.size,
                      crack_probability=args.crack_probability, progress=lambda it: tqdm(it, desc="synth", unit="img"))
    print(f"wrote {n} image/mask pairs to {args.out}/images and {args.out}/masks (labels in labels.csv)")
    return 0


def _train_config(args):
    from trainer.train import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, patience=args.patience,
                       seed=args.seed, steps_per_epoch=args.steps_per_epoch, verbose=1 if sys.stdout.isatty() else 2)


def _write_run_meta(run_dir: Path, kind: str, spec, cfg, splits, args) -> None:
    from trainer.assemble import write_run_files

    weights = getattr(args, "weights", "none")
    write_run_files(run_dir, kind, spec, cfg, splits, args.data, args.synth, getattr(args, "holdout", None),
                    initial_weights=weights if weights and weights != "none" else None)
    for r in splits.reports:
        print(r.summary())


def cmd_classifier(args) -> int:
    from trainer.assemble import classifier_splits
    from trainer.models import ClassifierSpec, build_classifier
    from trainer.train import train_classifier

    spec = ClassifierSpec(alpha=args.alpha, size=args.size, weights=args.weights)
    cfg = _train_config(args)
    splits = classifier_splits(args.data, args.size, args.synth, args.seed, limit_per_class=args.limit_per_class,
                               holdout=args.holdout, patches_per_image=args.patches_per_image, progress=_progress)
    run_dir = Path(args.out)
    _write_run_meta(run_dir, "classifier", spec, cfg, splits, args)
    model = build_classifier(spec)
    train_classifier(model, splits.stacked("train"), splits.stacked("val"), cfg, run_dir)
    print(f"classifier trained: {run_dir / 'best.keras'}")
    return 0


def cmd_segmenter(args) -> int:
    from trainer.assemble import segmenter_splits
    from trainer.models import SEGMENTER_SIZES, SegmenterSpec, build_segmenter
    from trainer.train import train_segmenter

    base = SEGMENTER_SIZES[args.model_size]
    spec = SegmenterSpec(size=args.size, base=base.base, depth=base.depth)
    cfg = _train_config(args)
    splits = segmenter_splits(args.data, args.size, args.synth, args.seed, negatives_per_set=args.negatives, progress=_progress)
    run_dir = Path(args.out)
    _write_run_meta(run_dir, "segmenter", spec, cfg, splits, args)
    model = build_segmenter(spec)
    if args.weights:
        model.load_weights(args.weights)  # fine-tune from an earlier run (same architecture)
    train_segmenter(model, splits.stacked("train"), splits.stacked("val"), cfg, run_dir)
    print(f"segmenter trained: {run_dir / 'best.keras'}")
    return 0


def cmd_reference_model(args) -> int:
    from trainer.reference_model import reference_tflite

    content = reference_tflite(alpha=args.alpha, size=args.size, seed=args.seed, calibration=args.calibration)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(content)
    print(f"wrote {out} ({len(content)} bytes): INT8 MobileNetV2 alpha {args.alpha}, {args.size}x{args.size}, seed {args.seed}")
    return 0


def _add_training_args(p, epochs: int, batch: int, lr: float) -> None:
    p.add_argument("--data", nargs="+", default=[], metavar="DIR", help="dataset folders (classification or images/+masks/)")
    p.add_argument("--synth", type=int, default=0, metavar="N", help="add N procedurally generated samples (default 0)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (checkpoints, logs); re-run to resume")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=batch)
    p.add_argument("--lr", type=float, default=lr, help="initial learning rate (cosine decay)")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs")
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crack-train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write procedurally generated crack images and masks")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--n", type=int, required=True, metavar="N")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crack-probability", type=float, default=0.5)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("classifier", help="train the MobileNetV2 crack/no-crack classifier")
    _add_training_args(p, epochs=15, batch=32, lr=2e-3)
    p.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width multiplier")
    p.add_argument("--size", type=int, default=96, help="square input size in pixels")
    p.add_argument("--weights", default="none", help="none (default, offline) | imagenet | PATH")
    p.add_argument("--holdout", nargs="*", default=[], metavar="NAME", help="data folders kept out of training (cross-surface test)")
    p.add_argument("--limit-per-class", type=int, default=None, help="read at most N images per class per folder")
    p.add_argument("--patches-per-image", type=int, default=8, help="patches cut from each segmentation image (half crack, half clean)")
    p.set_defaults(func=cmd_classifier)

    p = sub.add_parser("segmenter", help="train the U-Net crack segmenter")
    _add_training_args(p, epochs=40, batch=16, lr=3e-3)
    p.add_argument("--model-size", choices=["tiny", "small", "medium"], default="tiny")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--negatives", type=int, default=150, help="crack-free images taken per classification folder")
    p.add_argument("--weights", default=None, metavar="PATH", help="start from these weights (.keras or .weights.h5 of the same architecture)")
    p.set_defaults(func=cmd_segmenter)

    p = sub.add_parser("reference-model", help="write the INT8 MobileNetV2 that `crackd bench --reference` times")
    p.add_argument("--out", required=True, metavar="FILE.tflite")
    p.add_argument("--alpha", type=float, default=1.0, help="width multiplier (default 1.0, the published reference)")
    p.add_argument("--size", type=int, default=224, help="square input size (default 224, the published reference)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and calibration frames (default 0)")
    p.add_argument("--calibration", type=int, default=8, metavar="N", help="synthetic calibration frames (default 8)")
    p.set_defaults(func=cmd_reference_model)

    from trainer import cli_export, evaluate_cli

    cli_export.register(sub)
    evaluate_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from trainer.datasets import DatasetError
    from trainer.export import ExportError

    try:
        return args.func(args)
    except (DatasetError, ExportError, FileNotFoundError, ValueError) as exc:
        print(f"crack-train {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
