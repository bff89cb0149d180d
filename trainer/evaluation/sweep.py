"""The model-selection sweep: INT8 latency and (short-schedule) validation quality of each candidate configuration.

Candidates: the MobileNetV2 classifier at every alpha x input size, and the U-Net
segmenter at each size of `trainer.models.architectures.SEGMENTER_SIZES`. For each one:

* latency: the model is built (or loaded from a trained run), converted to
  full-integer INT8 with calibration images through the device preprocessing,
  and timed with the edge runtime on one thread. Latency does not depend on the
  weights, so this needs no training;
* quality: the INT8 (and FP32) model's F1 / Dice on the run's validation split.
  The run is reused from `--from-runs DIR/<name>` when it exists, or trained here
  on a SHORTENED schedule (a data subset, a few epochs) unless `latency_only`.

`trainer.reports.sweep` then marks the Pareto front, picks the defaults and writes SWEEP.md.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.engine.preprocess import model_input
from edge.engine.runtime import TFLiteModel
from edge.sources import synth
from edge.sources.images import read_rgb
from trainer.data.assemble import dataset_kind
from trainer.data.datasets import DatasetError, classification_files, segmentation_pairs
from trainer.evaluation.json_safe import dumps
from trainer.evaluation.latency import machine_description, measure_models
from trainer.export.convert import with_range_pins

log = logging.getLogger("crack-train.sweep")

CLASSIFIER_ALPHAS = (0.35, 0.5, 0.75, 1.0)
CLASSIFIER_SIZES = (96, 128, 160, 224)
SEGMENTER_NAMES = (
    "tiny",
    "small",
    "medium",
    "fast",
    "fast-wide",
    "fast-fine",
)  # the keys of trainer.models.architectures.SEGMENTER_SIZES (kept here: no Keras import at CLI start)


@dataclass(frozen=True)
class SweepConfig:
    alphas: tuple[float, ...] = CLASSIFIER_ALPHAS
    sizes: tuple[int, ...] = CLASSIFIER_SIZES
    segmenters: tuple[str, ...] = SEGMENTER_NAMES
    latency_only: bool = False  # train nothing; quality only for runs found in from_runs
    from_runs: str | None = None  # directory of trained runs named cls_a{alpha}_s{size} / seg_{name}
    data: tuple[str, ...] = ()  # dataset folders (training, validation and calibration)
    holdout: tuple[str, ...] = ()  # folders kept out of classifier training
    synth: int = 100  # synthetic samples added to each short training run
    train_images: int = 600  # SHORT schedule: training images per run (a random subset)
    val_images: int = 300  # validation images per run (a random subset of its validation split)
    epochs: int = 2  # SHORT schedule: classifier epochs
    seg_epochs: int = 2  # SHORT schedule: segmenter epochs
    batch_size: int = 32
    seg_batch_size: int = 16
    calibration_images: int = 32
    latency_runs: int = 100
    latency_rounds: int = 3  # interleaved timing rounds over all models; the lowest-median round counts
    timing_priority: str = (
        "normal"  # "realtime": time under SCHED_FIFO so other jobs do not inflate the numbers (needs root)
    )
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Candidate:
    """One configuration of the sweep."""

    role: str  # classifier | segmenter
    alpha: float | None = None
    size: int = 224
    variant: str | None = None  # segmenter size name

    @property
    def name(self) -> str:
        return f"cls_a{self.alpha}_s{self.size}" if self.role == "classifier" else f"seg_{self.variant}"

    def spec(self):
        from trainer.models.architectures import SEGMENTER_SIZES, ClassifierSpec

        if self.role == "classifier":
            if self.alpha is None:
                raise ValueError(f"classifier candidate {self.name}: no alpha given")
            return ClassifierSpec(alpha=self.alpha, size=self.size)
        if self.variant not in SEGMENTER_SIZES:
            raise ValueError(f"unknown U-Net size {self.variant!r}; expected one of {', '.join(SEGMENTER_SIZES)}")
        return SEGMENTER_SIZES[self.variant]

    def build(self):
        from trainer.models.architectures import build_classifier, build_segmenter

        return build_classifier(self.spec()) if self.role == "classifier" else build_segmenter(self.spec())


def candidates(cfg: SweepConfig) -> list[Candidate]:
    from trainer.models.architectures import SEGMENTER_SIZES

    cls = [Candidate("classifier", alpha=float(a), size=int(s)) for a in cfg.alphas for s in cfg.sizes]
    seg = [Candidate("segmenter", size=SEGMENTER_SIZES[v].size, variant=v) for v in cfg.segmenters]
    return cls + seg


@dataclass
class SweepRow:
    name: str
    role: str
    alpha: float | None
    size: int
    variant: str | None
    params: int
    int8_bytes: int
    latency: dict
    quality: dict | None = None  # metric, int8, fp32, val_images, run_dir, schedule, epochs_completed, trained_here
    convert_s: float = 0.0
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- calibration images


def _raw_images(folders: tuple[str, ...], n: int, seed: int) -> list[np.ndarray]:
    """Up to `n` real RGB images drawn evenly from the data folders (native size; resized per candidate)."""
    paths = []
    for folder in folders:
        try:
            if dataset_kind(folder) == "segmentation":
                found = [img for img, _ in segmentation_pairs(folder)]
            else:
                found = [p for p, _ in classification_files(folder)]
        except DatasetError as exc:
            raise DatasetError(f"sweep calibration: {exc}") from None
        rng = np.random.default_rng(seed)
        paths += [found[i] for i in rng.permutation(len(found))[: max(1, n // max(1, len(folders)))]]
    images = [img for img in (read_rgb(Path(p)) for p in paths) if img is not None]
    return images[:n]


def calibration_images(raw: list[np.ndarray], size: int, n: int, seed: int) -> np.ndarray:
    """`n` images at `size` through the device preprocessing
    (synthetic when no real ones), range-pinned as for export."""
    if raw:
        images = [model_input(img, size, size) for img in raw[:n]]
    else:
        rng = np.random.default_rng(seed)
        images = [synth.generate(rng, size, size, 0.5).image for _ in range(n)]
    return with_range_pins(images, size)


# ---------------------------------------------------------------- runs: find, train, score


def finished_run(run_dir: Path) -> bool:
    """A run that can be scored: a best checkpoint and the held-out/validation arrays."""
    return (
        (run_dir / "best.keras").is_file() and (run_dir / "heldout.npz").is_file() and (run_dir / "run.json").is_file()
    )


def epochs_completed(run_dir: Path) -> int | None:
    log_csv = run_dir / "log.csv"
    if not log_csv.is_file():
        return None
    with log_csv.open(newline="") as fh:
        return sum(1 for _ in csv.DictReader(fh))


def _subset(arrays: tuple[np.ndarray, np.ndarray], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = arrays
    if n and len(x) > n:
        keep = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
        return x[keep], y[keep]
    return x, y


def short_splits(c: Candidate, cfg: SweepConfig, cache: dict | None = None, progress=None):
    """The data of a short run: train / val subsets of `cfg.train_images`
    / `cfg.val_images` images at the candidate's size.

    Candidates of the same role and input size share one read of the data (`cache`)."""
    from trainer.data.assemble import classifier_splits, segmenter_splits

    key = (c.role, c.size)
    if cache is not None and key in cache:
        return cache[key]
    if not cfg.data and not cfg.synth:
        raise DatasetError("sweep: training needs --data folders and/or --synth N (or use --latency-only)")
    if c.role == "classifier":
        splits = classifier_splits(
            list(cfg.data),
            c.size,
            cfg.synth,
            cfg.seed,
            limit_per_class=cfg.train_images,
            holdout=list(cfg.holdout),
            progress=progress,
        )
    else:
        splits = segmenter_splits(
            list(cfg.data),
            c.size,
            cfg.synth,
            cfg.seed,
            negatives_per_set=max(1, cfg.train_images // 4),
            progress=progress,
        )
    splits.train = [_subset(splits.stacked("train"), cfg.train_images, cfg.seed)]
    splits.val = [_subset(splits.stacked("val"), cfg.val_images, cfg.seed)]
    if cache is not None:
        cache[key] = splits
    return splits


def train_short(c: Candidate, cfg: SweepConfig, run_dir: Path, cache: dict | None = None, progress=None) -> Path:
    """Train `c` on the SHORT schedule into `run_dir` (run.json,
    splits.json, heldout.npz, best.keras as `crack-train` does)."""
    from trainer.data.assemble import write_run_files
    from trainer.training.train import TrainConfig, train_classifier, train_segmenter

    splits = short_splits(c, cfg, cache, progress)
    if c.role == "classifier":
        tc = TrainConfig(
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            learning_rate=2e-3,
            patience=cfg.epochs,
            seed=cfg.seed,
            verbose=2,
        )
    else:
        tc = TrainConfig(
            epochs=cfg.seg_epochs,
            batch_size=cfg.seg_batch_size,
            learning_rate=3e-3,
            patience=cfg.seg_epochs,
            seed=cfg.seed,
            verbose=2,
        )
    write_run_files(
        run_dir,
        c.role,
        c.spec(),
        tc,
        splits,
        cfg.data,
        cfg.synth,
        cfg.holdout,
        sweep={"shortened": True, "train_images": cfg.train_images, "val_images": cfg.val_images},
    )
    (train,), (val,) = splits.train, splits.val
    model = c.build()
    (train_classifier if c.role == "classifier" else train_segmenter)(model, train, val, tc, run_dir)
    return run_dir


def _run_calibration(run_dir: Path, size: int, n: int, seed: int, val_x: np.ndarray) -> np.ndarray:
    from trainer.export.convert import ExportError, calibration_set

    try:
        return calibration_set(run_dir, size, n, seed)
    except ExportError:  # a run trained on synthetic data only: calibrate on its validation images
        return calibration_images(list(val_x[:n]), size, n, seed)


def score_run(c: Candidate, model, run_dir: Path, int8: bytes, cfg: SweepConfig, trained_here: bool) -> dict:
    """INT8 and FP32 validation quality of a trained run (F1 for the classifier, Dice for the segmenter)."""
    from trainer.data.assemble import load_arrays
    from trainer.export.convert import convert_fp32
    from trainer.export.metrics import role_quality
    from trainer.export.predict import predict

    _, val = load_arrays(run_dir / "heldout.npz")
    x, y = _subset(val, cfg.val_images, cfg.seed)
    x = np.stack([model_input(img, c.size, c.size) for img in x])
    result: dict[str, Any] = {
        "metric": "f1" if c.role == "classifier" else "dice",
        "val_images": int(len(x)),
        "run_dir": str(run_dir),
        "trained_here": trained_here,
        "epochs_completed": epochs_completed(run_dir),
    }
    meta = json.loads((run_dir / "run.json").read_text())
    result["schedule"] = {
        "epochs": meta.get("train", {}).get("epochs"),
        "train_images": meta.get("counts", {}).get("train"),
        "shortened": bool(meta.get("sweep", {}).get("shortened", trained_here)),
    }
    with contextlib.redirect_stdout(io.StringIO()):
        fp32 = convert_fp32(model)
    for variant, content in (("int8", int8), ("fp32", fp32)):
        key, m = role_quality(c.role, y, predict(TFLiteModel(content=content, threads=1), x))
        result[variant] = m[key]
        if c.role == "classifier":
            result[f"{variant}_roc_auc"] = m["roc_auc"]
    return result


# ---------------------------------------------------------------- the sweep


def find_run(
    c: Candidate, cfg: SweepConfig, out_dir: Path, cache: dict | None = None, progress=None
) -> tuple[Path | None, bool, str]:
    """The trained run to score for `c`: from --from-runs, from an earlier invocation of this sweep, or trained now
    (unless latency_only). Returns (run directory or None, trained by this sweep, a note for the table or "").

    A run directory that exists under --from-runs is never trained here, even if it is still training: its current
    best checkpoint is scored (the table says how many epochs it had), or none yet when it has no checkpoint."""
    mine = out_dir / "runs" / c.name
    theirs = Path(cfg.from_runs) / c.name if cfg.from_runs else None
    if theirs is not None and theirs.is_dir():
        if not finished_run(theirs):
            return None, False, f"{theirs} has no checkpoint yet (still training?): quality not measured"
        done = (
            ""
            if (theirs / "history.json").is_file()
            else f"{theirs} was still training: scored its best checkpoint so far"
        )
        return theirs, False, done
    if finished_run(mine) and (mine / "history.json").is_file():
        return mine, True, ""
    if cfg.latency_only:
        return None, False, ""
    log.info("%s: training on the short schedule", c.name)
    return train_short(c, cfg, mine, cache, progress), True, ""


def _conversion_source(run_dir: Path | None, cfg: SweepConfig) -> dict:
    """What an INT8 file was converted from; an unchanged source
    lets a re-run reuse the file instead of converting again."""
    if run_dir is None:
        return {"from": "untrained architecture", "calibration_images": cfg.calibration_images, "data": list(cfg.data)}
    ckpt = run_dir / "best.keras"
    return {
        "from": str(run_dir.resolve()),
        "checkpoint_mtime": ckpt.stat().st_mtime,
        "calibration_images": cfg.calibration_images,
    }


def _load_checkpoint(run_dir: Path, attempts: int = 3):
    """Load run_dir/best.keras from a private copy; a run still training rewrites the file every epoch, so a read
    that meets a half-written file is retried. Returns None when every attempt fails for a run still in progress."""
    import shutil
    import tempfile

    import keras

    error = None
    for attempt in range(attempts):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                copy = Path(shutil.copy2(run_dir / "best.keras", Path(tmp) / "best.keras"))
                return keras.models.load_model(copy, compile=False)
            except (OSError, ValueError) as exc:  # missing or truncated zip while the trainer writes it
                error = exc
        time.sleep(2.0 * (attempt + 1))
    if (run_dir / "history.json").is_file():
        raise DatasetError(f"{run_dir / 'best.keras'}: cannot be loaded ({str(error).splitlines()[0]})")
    log.warning(
        "%s: cannot load its checkpoint while it trains (%s); timing the untrained architecture instead",
        run_dir,
        str(error).splitlines()[0],
    )
    return None


def convert_candidate(
    c: Candidate, cfg: SweepConfig, out_dir: Path, raw: list[np.ndarray], cache: dict | None = None, progress=None
) -> SweepRow:
    """INT8 model of `c` (written to out_dir/models/) and, when a trained run exists or may be trained, its quality.
    Latency is measured afterwards for all candidates together (see run_sweep)."""
    run_dir, trained_here, note = find_run(c, cfg, out_dir, cache, progress)
    source = _conversion_source(run_dir, cfg)
    model_file = out_dir / "models" / f"{c.name}.int8.tflite"
    meta_file = model_file.with_suffix(".json")
    notes = [note] if note else []
    if run_dir is None:
        notes.append("latency from the untrained architecture (same graph as a trained one)")
    if (
        run_dir is None
        and model_file.is_file()
        and meta_file.is_file()
        and json.loads(meta_file.read_text()).get("source") == source
    ):
        meta = json.loads(
            meta_file.read_text()
        )  # converted by an earlier invocation from the same source: re-time only
        return SweepRow(
            c.name,
            c.role,
            c.alpha,
            c.size,
            c.variant,
            meta["params"],
            model_file.stat().st_size,
            {},
            None,
            meta["convert_s"],
            notes + ["INT8 file reused from an earlier run of the sweep"],
        )
    import keras

    from trainer.export.convert import convert_int8

    # imported for their side effect: registering the segmenter's custom objects
    from trainer.training.train import bce_dice_loss, dice_coefficient  # noqa: F401

    model = _load_checkpoint(run_dir) if run_dir is not None else None
    if run_dir is not None and model is None:
        notes = [
            f"{run_dir / 'best.keras'} could not be read (being rewritten by its training?): quality not measured",
            "latency from the untrained architecture (same graph as a trained one)",
        ]
        run_dir, source = None, _conversion_source(None, cfg)
    if run_dir is not None and model is not None:  # (a run whose checkpoint could not be read was dropped above)
        from trainer.data.assemble import load_arrays

        if int(model.input_shape[1]) != c.size:
            raise DatasetError(
                f"{run_dir}: model input is {model.input_shape[1]} px, expected {c.size} px for {c.name}"
            )
        _, (val_x, _) = load_arrays(run_dir / "heldout.npz")
        calib = _run_calibration(run_dir, c.size, cfg.calibration_images, cfg.seed, val_x)
    else:
        model = c.build()
        calib = calibration_images(raw, c.size, cfg.calibration_images, cfg.seed)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its whole signature listing
        int8 = convert_int8(model, calib)
    convert_s = round(time.perf_counter() - start, 1)
    model_file.parent.mkdir(parents=True, exist_ok=True)
    model_file.write_bytes(int8)
    params = int(model.count_params())
    meta_file.write_text(json.dumps({"source": source, "params": params, "convert_s": convert_s}))
    quality = score_run(c, model, run_dir, int8, cfg, trained_here) if run_dir is not None else None
    del model
    keras.backend.clear_session()
    gc.collect()
    return SweepRow(c.name, c.role, c.alpha, c.size, c.variant, params, len(int8), {}, quality, convert_s, notes)


def run_sweep(out_dir: Path, cfg: SweepConfig = SweepConfig(), progress=None) -> dict:
    """Convert (and where possible score) every candidate, then time all INT8 models together in interleaved rounds;
    the models go to `out_dir`, and the result is returned for `trainer.reports.sweep.write` (sweep.json, SWEEP.md,
    plots)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = candidates(cfg)
    if not todo:
        raise ValueError("sweep: no configurations selected (check --alphas/--sizes/--segmenters)")
    raw = _raw_images(cfg.data, cfg.calibration_images, cfg.seed) if cfg.data else []
    rows: list[SweepRow] = []
    data_cache: dict = {}  # (role, size) -> short-run data, read once per input size
    for c in todo if progress is None else progress(todo, desc="sweep"):
        row = convert_candidate(c, cfg, out_dir, raw, data_cache, progress)
        if row.quality:
            log.info(
                "%s: validation %s INT8 %.4f, FP32 %.4f",
                c.name,
                row.quality["metric"],
                row.quality["int8"],
                row.quality["fp32"],
            )
        rows.append(row)
        _write_partial(out_dir, cfg, [asdict(r) for r in rows])
    models = {r.name: TFLiteModel(out_dir / "models" / f"{r.name}.int8.tflite", threads=1) for r in rows}
    timed = measure_models(
        models, cfg.latency_runs, priority=cfg.timing_priority, rounds=cfg.latency_rounds, progress=progress
    )
    for r in rows:
        r.latency = timed[r.name].as_dict()
        log.info("%s: INT8 median %.3f ms (p95 %.3f)", r.name, r.latency["median_ms"], r.latency["p95_ms"])
    return {"config": cfg.as_dict(), "machine": machine_description(), "rows": [asdict(r) for r in rows]}


def _write_partial(out_dir: Path, cfg: SweepConfig, rows: list[dict]) -> None:
    """Progress so far, so a long sweep that is interrupted still leaves its measurements."""
    (out_dir / "sweep.partial.json").write_text(dumps({"config": cfg.as_dict(), "rows": rows}))
