"""`crack-train`: synthesize data, train, export INT8 bundles, evaluate, sweep."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from trainer.cli.checks import InputError, check_keras_file, check_output_dir, finetune_base

log = logging.getLogger("crack-train")
# What `pip install crackd[train]` adds to a device install (pyproject.toml); a missing one is named, not a traceback.
TRAINING_MODULES = frozenset({"tensorflow", "keras", "tf_keras", "tensorboard", "matplotlib", "tqdm"})


def _progress(iterable, desc: str = ""):
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit="img", leave=False, disable=None)


def cmd_synth(args) -> int:
    from tqdm import tqdm

    from edge.sources.synth import write_dataset

    n = write_dataset(
        args.out,
        args.n,
        seed=args.seed,
        height=args.size,
        width=args.size,
        crack_probability=args.crack_probability,
        progress=lambda it: tqdm(it, desc="synth", unit="img"),
    )
    print(f"wrote {n} image/mask pairs to {args.out}/images and {args.out}/masks (labels in labels.csv)")
    return 0


def _train_config(args):
    from trainer.training.train import TrainConfig

    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        patience=args.patience,
        seed=args.seed,
        steps_per_epoch=args.steps_per_epoch,
        verbose=1 if sys.stdout.isatty() else 2,
        crop=getattr(args, "crop", None),
        progress_bar=getattr(args, "progress_bar", False),
        workers=getattr(args, "workers", 1),
        time_budget_min=getattr(args, "time_budget", None),
    )


def _write_run_meta(run_dir: Path, kind: str, spec, cfg, splits, args) -> None:
    from trainer.data.assemble import write_run_files

    weights = getattr(args, "weights", "none")
    write_run_files(
        run_dir,
        kind,
        spec,
        cfg,
        splits,
        args.data,
        args.synth,
        getattr(args, "holdout", None),
        initial_weights=weights if weights and weights != "none" else None,
    )
    for r in splits.reports:
        print(r.summary())


def cmd_classifier(args) -> int:
    from trainer.data.assemble import classifier_splits

    check_output_dir(Path(args.out), "--out")
    # The data first: a bad folder or image is found before TensorFlow is imported and anything is built.
    splits = classifier_splits(
        args.data,
        args.size,
        args.synth,
        args.seed,
        limit_per_class=args.limit_per_class,
        holdout=args.holdout,
        patches_per_image=args.patches_per_image,
        progress=_progress,
        n_domain=args.domain,
        strict=args.strict_data,
        site_split=args.site_split,
        domain_preset=args.domain_preset,
    )
    from trainer.models.architectures import ClassifierSpec, build_classifier
    from trainer.training.train import train_classifier

    spec = ClassifierSpec(alpha=args.alpha, size=args.size, weights=args.weights)
    cfg = _train_config(args)
    run_dir = Path(args.out)
    _write_run_meta(run_dir, "classifier", spec, cfg, splits, args)
    if args.prepare_only:
        print(f"prepared {run_dir} (no training: --prepare-only)")
        return 0
    model = build_classifier(spec)
    train_classifier(model, splits.stacked("train"), splits.stacked("val"), cfg, run_dir)
    print(f"classifier trained: {run_dir / 'best.keras'}")
    return 0


def cmd_segmenter(args) -> int:
    from trainer.data.assemble import segmenter_splits

    check_output_dir(Path(args.out), "--out")
    if args.weights and args.weights.endswith(".keras"):
        check_keras_file(Path(args.weights), "--weights")
    elif args.weights and not Path(args.weights).is_file():
        raise InputError(f"--weights {args.weights}: no such file")
    # The data first: a bad folder or image is found before TensorFlow is imported and anything is built.
    splits = segmenter_splits(
        args.data,
        args.size,
        args.synth,
        args.seed,
        negatives_per_set=args.negatives,
        progress=_progress,
        holdout=args.holdout,
        n_domain=args.domain,
        strict=args.strict_data,
        domain_preset=args.domain_preset,
    )
    from trainer.models.architectures import SEGMENTER_SIZES, SegmenterSpec, build_segmenter
    from trainer.training.train import train_segmenter

    base = SEGMENTER_SIZES[args.model_size]
    spec = SegmenterSpec(
        size=args.size, base=base.base, depth=base.depth, stem_stride=base.stem_stride, fine_head=base.fine_head
    )
    cfg = _train_config(args)
    run_dir = Path(args.out)
    _write_run_meta(run_dir, "segmenter", spec, cfg, splits, args)
    if args.prepare_only:
        print(f"prepared {run_dir} (no training: --prepare-only)")
        return 0
    # Crops need a size-free model for training; the exported one has the device's fixed input size.
    model = build_segmenter(spec, size=None if cfg.crop else spec.size)
    if args.weights:
        model.load_weights(args.weights)  # fine-tune from an earlier run (same architecture)
    train_segmenter(model, splits.stacked("train"), splits.stacked("val"), cfg, run_dir, loss=args.loss)
    if cfg.crop:  # keep best.keras at the device's input size, as every reader of a finished run expects
        from trainer.export.convert import load_checkpoint

        load_checkpoint(run_dir).save(run_dir / "best.keras")
    print(f"segmenter trained: {run_dir / 'best.keras'}")
    return 0


def cmd_crossval(args) -> int:
    from trainer.evaluation.crossval import run_crossval

    if not args.segmenter_runs and not args.classifier_runs:
        raise ValueError(
            "nothing to score: give --segmenter-runs and/or --classifier-runs (runs trained with --holdout); "
            "a bundle alone on the procedural test suites: crack-train suites BUNDLE"
        )
    if not 0.0 < args.gate_recall <= 1.0:
        raise ValueError(f"--gate-recall {args.gate_recall}: expected a share of cracked samples between 0 and 1")
    if args.bundle and args.suite_frames:  # a bad suite option costs a second, not a cross-validation
        from trainer.cli.evaluate import suite_config

        suite_config(args, Path(args.bundle))
    report = run_crossval(
        [Path(r) for r in args.segmenter_runs],
        [Path(r) for r in args.classifier_runs],
        Path(args.out),
        classifier_tflite=Path(args.classifier_tflite) if args.classifier_tflite else None,
        gate_recall=args.gate_recall,
        previous=Path(args.compare_with) if args.compare_with else None,
    )
    if args.bundle and args.suite_frames:  # beside leave-one-out: the bundle on the procedural test suites
        from trainer.cli.evaluate import suites_section
        from trainer.reports.suites import add_to_crossval

        add_to_crossval(Path(args.out), suites_section(args, Path(args.bundle), Path(args.out)))
    print((Path(args.out) / "CROSSVAL.md").read_text())
    return 0 if report else 1


def cmd_adapt(args) -> int:
    """Fine-tune a shipped model on a few labelled images of one
    site (a preset of `segmenter`/`classifier --weights`)."""
    base = Path(args.base)
    meta = finetune_base(base)  # before the data and TensorFlow: a bad checkpoint costs a second, not a training
    if args.forgetting_images < 1:
        raise InputError(f"--forgetting-images {args.forgetting_images}: expected a whole number of images, 1 or more")
    if args.forgetting_set:
        from trainer.data.datasets import segmentation_pairs

        for folder in args.forgetting_set:  # likewise: a mistyped folder is named before the training
            segmentation_pairs(folder)
    spec = meta["spec"]
    common = [
        "--data",
        *args.data,
        "--out",
        args.out,
        "--epochs",
        str(args.epochs),
        "--lr",
        str(args.lr),
        "--patience",
        str(args.patience),
        "--seed",
        str(args.seed),
        "--weights",
        str(base),
        "--domain",
        str(args.domain),
        "--batch-size",
        str(args.batch_size),
        "--strict-data",  # a site's few labelled images: each one matters, none is skipped quietly
    ]
    if args.steps_per_epoch:
        common += ["--steps-per-epoch", str(args.steps_per_epoch)]
    if meta["kind"] == "segmenter":
        argv = [
            "segmenter",
            *common,
            "--model-size",
            meta["model_size"],
            "--size",
            str(spec["size"]),
            "--negatives",
            "0",
            "--crop",
            str(args.crop),
        ]
    else:
        # --site-split: the classifier holds out the images a segmenter adapted on the same site holds out
        argv = ["classifier", *common, "--alpha", str(spec["alpha"]), "--size", str(spec["size"]), "--site-split"]
    print("crack-train " + shlex.join(argv))
    sub = build_parser().parse_args(argv)
    sub.progress_bar = True  # one bar over the run, then the summary below (not Keras's lines per epoch)
    status = sub.func(sub)
    if status:
        return status
    from trainer.evaluation.adaptation import REPORT_MD, adaptation_report, summary_lines

    site_name = args.site or Path(args.data[0]).resolve().name
    if meta["kind"] == "segmenter":
        report = adaptation_report(
            Path(args.out), base, site_name, [Path(p) for p in args.forgetting_set], args.forgetting_images
        )
        lines = summary_lines(report)
    else:
        from trainer.evaluation.classifier_adaptation import classifier_report, classifier_summary_lines

        cls_report = classifier_report(Path(args.out), base, site_name, sub.patches_per_image)
        if cls_report is None:
            print("no report: the site has no images/ + masks/ folder to hold images out of (labels only)")
            return 0
        lines = classifier_summary_lines(cls_report)
    for line in lines:
        print(line)
    print(f"report: {Path(args.out) / REPORT_MD}")
    return 0


def cmd_reference_model(args) -> int:
    from trainer.export.reference import reference_tflite

    content = reference_tflite(alpha=args.alpha, size=args.size, seed=args.seed, calibration=args.calibration)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(content)
    print(
        f"wrote {out} ({len(content)} bytes): INT8 MobileNetV2 alpha "
        f"{args.alpha}, {args.size}x{args.size}, seed {args.seed}"
    )
    return 0


def _add_training_args(p, epochs: int, batch: int, lr: float) -> None:
    p.add_argument(
        "--data", nargs="+", default=[], metavar="DIR", help="dataset folders (classification or images/+masks/)"
    )
    p.add_argument("--synth", type=int, default=0, metavar="N", help="add N procedurally generated samples (default 0)")
    p.add_argument(
        "--out", required=True, metavar="RUN_DIR", help="run directory (checkpoints, logs); re-run to resume"
    )
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=batch)
    p.add_argument("--lr", type=float, default=lr, help="initial learning rate (cosine decay)")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs")
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--holdout",
        nargs="*",
        default=[],
        metavar="NAME",
        help="data folders kept entirely out of training: the cross-surface (leave-one-dataset-out) test",
    )
    p.add_argument(
        "--strict-data",
        action="store_true",
        help="stop at the first image or mask that cannot be used (default: skip it and list it in the summary)",
    )
    p.add_argument(
        "--domain",
        type=int,
        default=0,
        metavar="N",
        help="add N domain-randomised samples made from the training files: rescaled photographs, procedural "
        "cracks 1-30 px wide on real crack-free backgrounds, procedural surfaces, hard negatives (default 0)",
    )
    p.add_argument(
        "--domain-preset",
        choices=("default", "hard"),
        default="default",
        help="the mix of --domain samples: default (bundle 1.1's), or hard: more manufactured parts and tile gaps, "
        "hairlines and look-alikes (markings, joints, sealed cracks), for a fine-tuning pass",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="threads preparing training batches (default 1; 2-4 keep an accelerator busy)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="MIN",
        help="stop after the epoch that would end later than MIN minutes after the start (the best epoch is kept)",
    )
    p.add_argument(
        "--prepare-only",
        action="store_true",
        help="load and split the data and write run.json, splits.json and heldout.npz, then stop: checks the data "
        "before a long run, and recreates those files beside a checkpoint trained on another host (same options)",
    )


def build_parser() -> argparse.ArgumentParser:
    from trainer.evaluation.sweep import SEGMENTER_NAMES  # no Keras import: `--help` stays fast

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
    p.add_argument("--limit-per-class", type=int, default=None, help="read at most N images per class per folder")
    p.add_argument(
        "--patches-per-image",
        type=int,
        default=8,
        help="patches cut from each segmentation image (half crack, half clean)",
    )
    p.add_argument(
        "--site-split",
        action="store_true",
        help="split each images/ + masks/ folder by image as the segmenter does (10 %% validation, 15 %% test), "
        "every patch with its image (crack-train adapt: classifier and segmenter hold out the same site images)",
    )
    p.set_defaults(func=cmd_classifier)

    p = sub.add_parser("segmenter", help="train the U-Net crack segmenter")
    _add_training_args(p, epochs=40, batch=16, lr=3e-3)
    p.add_argument(
        "--model-size",
        choices=SEGMENTER_NAMES,
        default="fast",
        help="U-Net size: fast / fast-wide (half-resolution decoder, bundle 1.1) or tiny / small / medium (bundle 1.0)",
    )
    p.add_argument(
        "--loss",
        choices=["bce_dice", "bce_tversky"],
        default="bce_dice",
        help=(
            "bce_dice, or bce_tversky (Tversky alpha 0.3 / beta 0.7: a missed crack pixel costs more than a false one)"
        ),
    )
    p.add_argument("--size", type=int, default=224)
    p.add_argument(
        "--crop",
        type=int,
        default=None,
        metavar="PX",
        help="train on random PX x PX crops (a multiple of 32; the model is exported at --size)",
    )
    p.add_argument("--negatives", type=int, default=150, help="crack-free images taken per classification folder")
    p.add_argument(
        "--weights",
        default=None,
        metavar="PATH",
        help="start from these weights (.keras or .weights.h5 of the same architecture)",
    )
    p.set_defaults(func=cmd_segmenter)

    p = sub.add_parser(
        "adapt",
        help="fine-tune a shipped model on a few labelled images of one site",
        description="Starts from a published fine-tuning checkpoint (models/finetune/segmenter.keras or "
        "classifier.keras) and trains briefly on the site's images: masks (images/ + masks/) for the "
        "segmenter, labels (positive/negative folders, labels.csv or a `crackd events export` CSV) for "
        "the classifier. A segmenter's site images are split: most train, the rest (at least 2) are held out; "
        "on them the pixel threshold is chosen and base and adapted model are scored (RUN_DIR/ADAPT.md, "
        "adapt.json, overlays). A classifier adapted on images/ + masks/ holds out the same images (same --seed) and "
        "chooses its gate threshold on their samples (recall >= 0.98 of the cracked ones, as crossval does), which "
        "export writes as the bundle's gate_threshold. Export the run with `crack-train export --keep-from "
        "BASE_BUNDLE`: it keeps the other model, writes the site's threshold and refuses a bundle worse than the "
        "base on the held-out images.",
    )
    p.add_argument("--base", required=True, metavar="CHECKPOINT", help="e.g. models/finetune/segmenter.keras")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR", help="the site's labelled images")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument(
        "--site", metavar="NAME", help="the site's name, recorded in the report and the bundle (default: the folder's)"
    )
    # Measured on two unseen surfaces (20 labelled images each): 20 x 50 steps beat 8 x 25 on both (tolerant F1
    # +0.25 / +0.12 over the base vs +0.17 / +0.04) and its best epoch was 18-19 of 20 every time, so the cosine
    # schedule runs to its end (patience = epochs) and the best validation epoch is kept: 5-6 CPU minutes.
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4, help="a fraction of the training rate: adapt, do not forget")
    p.add_argument("--patience", type=int, default=20, help="early-stopping patience (default: the whole run)")
    p.add_argument(
        "--domain", type=int, default=400, metavar="N", help="randomised samples made from the site's images"
    )
    p.add_argument("--crop", type=int, default=128, help="segmenter training crop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--forgetting-set",
        action="append",
        default=[],
        metavar="DIR",
        help="labelled images (images/ + masks/) the site never saw, e.g. a leave-one-out source: base and adapted "
        "segmenter are scored on them too, a tolerant-F1 drop over 0.02 is flagged (repeatable; default: none)",
    )
    p.add_argument(
        "--forgetting-images",
        type=int,
        default=40,
        metavar="N",
        help="images per forgetting set, evenly spaced over its sorted files (default: 40)",
    )
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser(
        "crossval",
        help="score leave-one-dataset-out runs on their held-out source; choose the thresholds there",
        description="Converts each run (trained with --holdout SOURCE) to INT8 and scores it on every image of the "
        "held-out source: tolerant F1 (2 px) and Dice of the segmenter at thresholds 0.10-0.97 and at two "
        "scales, F1 and balanced accuracy of the classifier. Writes crossval.json, CROSSVAL.md and plots.",
    )
    p.add_argument("--segmenter-runs", nargs="*", default=[], metavar="RUN_DIR")
    p.add_argument("--classifier-runs", nargs="*", default=[], metavar="RUN_DIR")
    p.add_argument(
        "--classifier-tflite",
        metavar="MODEL.tflite",
        help="score this INT8 classifier on the classifier runs' held-out "
        "sets instead of their checkpoints (a model trained with the same held-out source and seed)",
    )
    p.add_argument(
        "--gate-recall",
        type=float,
        default=0.98,
        help="the classifier gate threshold is the highest that passes at least this share of the cracked samples "
        "of every held-out source (crossval.json's classifier_gate_threshold, read by export --crossval)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="where to write (e.g. the bundle directory)")
    p.add_argument(
        "--bundle",
        default=None,
        metavar="BUNDLE",
        help="also score this bundle on the procedural test suites (part edges, hairlines, markings)",
    )
    from trainer.cli.evaluate import add_suite_args

    add_suite_args(p, 120)
    p.set_defaults(func=cmd_crossval)

    p = sub.add_parser("reference-model", help="write the INT8 MobileNetV2 that `crackd bench --reference` times")
    p.add_argument("--out", required=True, metavar="FILE.tflite")
    p.add_argument("--alpha", type=float, default=1.0, help="width multiplier (default 1.0, the published reference)")
    p.add_argument("--size", type=int, default=224, help="square input size (default 224, the published reference)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and calibration frames (default 0)")
    p.add_argument("--calibration", type=int, default=8, metavar="N", help="synthetic calibration frames (default 8)")
    p.set_defaults(func=cmd_reference_model)

    from trainer.cli import evaluate as evaluate_cli
    from trainer.cli import export as cli_export
    from trainer.cli import label as label_cli
    from trainer.cli import site as site_cli

    cli_export.register(sub)
    evaluate_cli.register(sub)
    label_cli.register(sub)
    site_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from edge.cli.common import EXIT_USAGE, fail
    from edge.engine.bundle import BundleError
    from trainer.data.datasets import DatasetError
    from trainer.export.convert import ExportError

    prog = f"crack-train {args.command}"
    try:
        return args.func(args)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAINING_MODULES:
            raise
        return fail(
            f"{exc.name} is not installed: crack-train needs the training extra: pip install 'crackd[train]' "
            "(in a clone: pip install -e '.[train]')",
            EXIT_USAGE,
            prog,
        )
    except (DatasetError, ExportError, InputError, BundleError, ValueError) as exc:
        return fail(f"error: {exc}", EXIT_USAGE, prog)
    except OSError as exc:  # a file that cannot be read or written: name it, without the errno noise
        where = f"{exc.filename}: " if exc.filename else ""
        return fail(f"error: {where}{exc.strerror or exc}", EXIT_USAGE, prog)
