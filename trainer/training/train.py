"""Training loops for the classifier and the segmenter (Keras `fit` with the usual safety nets).

Each run directory holds: `best.keras` (best validation checkpoint), `last.keras`,
`backup/` (resume state: an interrupted run continues from its last finished
epoch when started again with the same run directory), `log.csv`, `tensorboard/`
and `history.json`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
from keras import ops


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 2e-3
    patience: int = 5  # early stopping on the validation loss
    seed: int = 0
    steps_per_epoch: int | None = None  # None: one pass over the training set
    crop: int | None = (
        None  # segmenter: train on random square crops of this size (fully convolutional; ~3x cheaper at 128)
    )
    verbose: int = 1  # Keras progress bar
    progress_bar: bool = False  # one bar over the whole run (tqdm) instead of Keras's output per epoch
    workers: int = 1  # threads preparing batches (augmentation); more on a many-core accelerator host
    time_budget_min: float | None = None  # stop after the epoch that would overrun it (the best epoch is kept)

    def as_dict(self) -> dict:
        return asdict(self)


def _photometric(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per image: brightness +-30 and contrast 0.7-1.3 about its mean; float pixels in [0, 255] (N x H x W x C)."""
    n = len(images)
    brightness = rng.uniform(-30.0, 30.0, (n, 1, 1, 1)).astype(np.float32)
    contrast = rng.uniform(0.7, 1.3, (n, 1, 1, 1)).astype(np.float32)
    mean = images.mean(axis=(1, 2, 3), keepdims=True) + brightness
    return np.clip((images + brightness - mean) * contrast + mean, 0.0, 255.0)


def _geometric(image: np.ndarray, target: np.ndarray | None, rng: np.random.Generator):
    """The same random flip / 90-degree rotation for an image and (optionally) its mask."""
    k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
    image = np.rot90(image, k)
    image = image[:, ::-1] if flip else image
    if target is not None:
        target = np.rot90(target, k)
        target = target[:, ::-1] if flip else target
    return image, target


def _random_crop(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator):
    """The same random `size` x `size` window of an image and its mask."""
    y = int(rng.integers(0, image.shape[0] - size + 1))
    x = int(rng.integers(0, image.shape[1] - size + 1))
    return image[y : y + size, x : x + size], mask[y : y + size, x : x + size]


class Batches(keras.utils.PyDataset):
    """Batches of (float pixels, float targets[, sample weights]); in training shuffled and augmented.

    Pure numpy, so the same pipeline feeds every Keras backend (TensorFlow here, JAX or PyTorch on an
    accelerator host). `masks`: the targets are HxW masks that follow the image's flips, rotations and crops
    (segmenter); otherwise they are per-image labels (classifier). Augmentation is a function of
    (seed, epoch, batch), so a run is reproducible.
    `class_weights`: {label: weight}, returned as sample weights (the classifier's class balance).
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        batch: int,
        seed: int,
        training: bool,
        masks: bool,
        crop: int | None = None,
        steps: int | None = None,
        class_weights: dict[int, float] | None = None,
        workers: int = 1,
    ):
        # Threads, not processes: the augmentation is numpy, which releases the GIL in its inner loops.
        super().__init__(workers=workers, use_multiprocessing=False)
        self.images = images
        self.targets = targets[..., None].astype(np.float32) if masks else targets.astype(np.float32)[:, None]
        self.batch, self.seed, self.training, self.masks, self.crop = batch, seed, training, masks, crop
        self.class_weights = class_weights
        self.passes = int(np.ceil(len(images) / batch))
        self.steps = steps or self.passes
        self.epoch = 0
        self._order = self._shuffled(0)

    def _shuffled(self, epoch: int) -> np.ndarray:
        if not self.training:
            return np.arange(len(self.images))
        # Enough shuffled passes for a fixed number of steps per epoch (an "epoch" may be shorter than one pass).
        rng = np.random.default_rng([self.seed, epoch])
        n_pass = int(np.ceil(self.steps * self.batch / len(self.images)))
        return np.concatenate([rng.permutation(len(self.images)) for _ in range(n_pass)])

    def __len__(self) -> int:
        return self.steps

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._shuffled(self.epoch)

    def __getitem__(self, index: int):
        picked = self._order[index * self.batch : (index + 1) * self.batch]
        if not self.training:
            return self._with_weights(self.images[picked].astype(np.float32), self.targets[picked])
        # One generator per batch, drawn from (seed, epoch, batch): reproducible, and cheap to make.
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        xs, ys = [], []
        for i in picked:  # flips, rotations and crops are views of the uint8 pixels: copied once, by the stack
            image, target = self.images[i], self.targets[i]
            image, moved = _geometric(image, target if self.masks else None, rng)
            if self.masks:
                target = moved
                if self.crop:
                    image, target = _random_crop(image, target, self.crop, rng)
            xs.append(image)
            ys.append(target)
        return self._with_weights(_photometric(np.stack(xs).astype(np.float32), rng), np.stack(ys))

    def _with_weights(self, x: np.ndarray, y: np.ndarray):
        if self.class_weights is None:
            return x, y
        w = np.where(y[:, 0] > 0.5, self.class_weights[1], self.class_weights[0]).astype(np.float32)
        return x, y, w


def _flat(t):
    return ops.reshape(t, (ops.shape(t)[0], -1))


@keras.saving.register_keras_serializable(package="crackd")
def dice_coefficient(y_true, y_pred, smooth: float = 1.0):
    y_true, y_pred = _flat(y_true), _flat(y_pred)
    inter = ops.sum(y_true * y_pred, axis=1)
    return ops.mean((2.0 * inter + smooth) / (ops.sum(y_true, 1) + ops.sum(y_pred, 1) + smooth))


@keras.saving.register_keras_serializable(package="crackd")
def bce_dice_loss(y_true, y_pred):
    """Binary cross-entropy (pixel-wise calibration) + soft Dice (robust to 1-5 % crack pixels)."""
    bce = keras.losses.binary_crossentropy(y_true, y_pred)
    return ops.mean(bce) + (1.0 - dice_coefficient(y_true, y_pred))


@keras.saving.register_keras_serializable(package="crackd")
def bce_tversky_loss(y_true, y_pred, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0):
    """BCE + Tversky: false negatives weigh `beta`, false positives `alpha` (recall-leaning for thin structures)."""
    t, p = _flat(y_true), _flat(y_pred)
    tp = ops.sum(t * p, 1)
    fn = ops.sum(t * (1 - p), 1)
    fp = ops.sum((1 - t) * p, 1)
    tversky = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return ops.mean(keras.losses.binary_crossentropy(y_true, y_pred)) + (1.0 - ops.mean(tversky))


SEGMENTER_LOSSES = {"bce_dice": bce_dice_loss, "bce_tversky": bce_tversky_loss}


def _callbacks(run_dir: Path, cfg: TrainConfig, monitor: str, mode: str) -> list:
    run_dir.mkdir(parents=True, exist_ok=True)
    return [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.ModelCheckpoint(str(run_dir / "best.keras"), monitor=monitor, mode=mode, save_best_only=True),
        keras.callbacks.ModelCheckpoint(str(run_dir / "last.keras")),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.patience, restore_best_weights=False),
        keras.callbacks.CSVLogger(str(run_dir / "log.csv"), append=True),
        *_tensorboard(run_dir),
    ]


def _tensorboard(run_dir: Path) -> list:
    """TensorBoard logs where TensorFlow is installed (Keras writes them with tf.summary); on a JAX or PyTorch
    training host log.csv and history.json hold the same curves."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        return []
    return [keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False, profile_batch=0)]


class TimeBudget(keras.callbacks.Callback):
    """Stop training, cleanly after an epoch, when another epoch would not end within `minutes` of the start."""

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds = minutes * 60.0
        self.start = self.epoch_start = 0.0
        self.stopped_after: int | None = None

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        # The first epoch's length includes compiling the model, so it does not predict the next one's.
        next_epoch = now - self.epoch_start if epoch > 0 else 0.0
        if now - self.start + next_epoch > self.seconds:
            self.stopped_after = epoch + 1
            self.model.stop_training = True
            print(f"time budget of {self.seconds / 60:.0f} min: stopped after epoch {epoch + 1}", flush=True)


class RunProgress(keras.callbacks.Callback):
    """One tqdm bar over every step of the run, with the last epoch's validation score beside it."""

    def __init__(self, epochs: int, steps: int, monitor: str):
        super().__init__()
        self.total, self.steps, self.monitor = epochs * steps, steps, monitor
        self.bar = None

    def on_train_begin(self, logs=None):
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, desc="training", unit="step", disable=None)

    def on_epoch_begin(self, epoch, logs=None):
        if self.bar is not None:  # a resumed run starts at its last finished epoch
            self.bar.n = epoch * self.steps
            self.bar.refresh()

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None and logs and self.monitor in logs:
            self.bar.set_postfix_str(f"epoch {epoch + 1}, {self.monitor} {float(logs[self.monitor]):.3f}")

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()


def _schedule(cfg: TrainConfig, steps_per_epoch: int):
    return keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate, decay_steps=max(1, cfg.epochs * steps_per_epoch), alpha=0.02
    )


def _fit(
    model, train_ds, val_ds, cfg: TrainConfig, run_dir: Path, steps: int, monitor: str, mode: str, extra_callbacks=()
):
    bar = [RunProgress(cfg.epochs, steps, monitor)] if cfg.progress_bar else []
    if cfg.time_budget_min:
        bar.append(TimeBudget(cfg.time_budget_min))
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=cfg.epochs,
        callbacks=_callbacks(run_dir, cfg, monitor, mode) + bar + list(extra_callbacks),
        verbose=0 if cfg.progress_bar else cfg.verbose,
    )
    best = run_dir / "best.keras"
    if best.exists():
        model = keras.models.load_model(best, compile=False)
    (run_dir / "history.json").write_text(
        json.dumps({k: [float(v) for v in vals] for k, vals in history.history.items()}, indent=1)
    )
    return model


def _batches(images, targets, cfg: TrainConfig, training: bool, masks: bool, **kwargs) -> Batches:
    steps = cfg.steps_per_epoch if training else None
    return Batches(
        images, targets, cfg.batch_size, cfg.seed, training, masks, steps=steps, workers=cfg.workers, **kwargs
    )


def train_classifier(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: TrainConfig,
    run_dir: Path,
    extra_callbacks=(),
) -> keras.Model:
    """Train P(crack); classes are balanced with weights inverse to their frequency."""
    keras.utils.set_random_seed(cfg.seed)
    x, y = train
    steps = cfg.steps_per_epoch or int(np.ceil(len(x) / cfg.batch_size))
    pos = max(1, int(y.sum()))
    neg = max(1, len(y) - pos)
    model.compile(
        optimizer=keras.optimizers.Adam(_schedule(cfg, steps)),
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
    )
    # Keras `class_weight` does not reach a PyDataset's batches, so the balance travels as sample weights:
    weights = {0: len(y) / (2.0 * neg), 1: len(y) / (2.0 * pos)}
    train_ds = _batches(x, y, cfg, training=True, masks=False, class_weights=weights)
    val_ds = _batches(*val, cfg, training=False, masks=False)
    return _fit(model, train_ds, val_ds, cfg, run_dir, steps, "val_loss", "min", extra_callbacks)


def train_segmenter(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: TrainConfig,
    run_dir: Path,
    extra_callbacks=(),
    loss: str = "bce_dice",
) -> keras.Model:
    """Train the per-pixel crack probability with BCE + Dice (or BCE + Tversky)."""
    keras.utils.set_random_seed(cfg.seed)
    x, m = train
    steps = cfg.steps_per_epoch or int(np.ceil(len(x) / cfg.batch_size))
    model.compile(
        optimizer=keras.optimizers.Adam(_schedule(cfg, steps)), loss=SEGMENTER_LOSSES[loss], metrics=[dice_coefficient]
    )
    train_ds = _batches(x, m, cfg, training=True, masks=True, crop=cfg.crop)
    val_ds = _batches(*val, cfg, training=False, masks=True)
    return _fit(model, train_ds, val_ds, cfg, run_dir, steps, "val_dice_coefficient", "max", extra_callbacks)
