"""Training loops for the classifier and the segmenter (Keras `fit` with the usual safety nets).

Each run directory holds: `best.keras` (best validation checkpoint), `last.keras`,
`backup/` (resume state: an interrupted run continues from its last finished
epoch when started again with the same run directory), `log.csv`, `tensorboard/`
and `history.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


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

    def as_dict(self) -> dict:
        return asdict(self)


def _augment_image(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Photometric augmentation on float pixels in [0, 255]."""
    s = tf.random.experimental.stateless_split(seed, 2)
    image = tf.image.stateless_random_brightness(image, 30.0, s[0])
    image = tf.image.stateless_random_contrast(image, 0.7, 1.3, s[1])
    return tf.clip_by_value(image, 0.0, 255.0)


def _geometric(image: tf.Tensor, mask: tf.Tensor | None, seed: tf.Tensor):
    """The same random flip / 90-degree rotation for an image and (optionally) its mask."""
    s = tf.random.experimental.stateless_split(seed, 3)
    k = tf.random.stateless_uniform([], s[0], 0, 4, dtype=tf.int32)
    flip = tf.random.stateless_uniform([], s[1], 0, 2, dtype=tf.int32)
    image = tf.image.rot90(image, k)
    image = tf.cond(flip > 0, lambda: tf.image.flip_left_right(image), lambda: image)
    if mask is not None:
        mask = tf.image.rot90(mask, k)
        mask = tf.cond(flip > 0, lambda: tf.image.flip_left_right(mask), lambda: mask)
    return image, mask, s[2]


def _random_crop(image: tf.Tensor, mask: tf.Tensor, size: int, seed: tf.Tensor):
    """The same random `size` x `size` window of an image and its mask."""
    both = tf.concat([image, tf.cast(mask, image.dtype)], axis=-1)
    both = tf.image.stateless_random_crop(both, [size, size, 4], seed)
    return both[..., :3], tf.cast(both[..., 3:], mask.dtype)


def make_dataset(
    images: np.ndarray, targets: np.ndarray, batch: int, seed: int, training: bool, masks: bool, crop: int | None = None
) -> tf.data.Dataset:
    """Batches of (float pixels, float targets); in training shuffled and augmented.

    `masks`: the targets are HxW masks that must follow the image's flips and rotations
    (segmenter); otherwise they are per-image labels (classifier).
    """
    targets = targets[..., None].astype(np.float32) if masks else targets.astype(np.float32)[:, None]
    ds = tf.data.Dataset.from_tensor_slices((images, targets))
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        counter = tf.data.Dataset.counter().map(lambda i: tf.stack([tf.cast(i, tf.int32), seed]))
        ds = tf.data.Dataset.zip((ds, counter))

        def augment(pair, sample_seed):
            image, target = pair
            image, moved, photometric_seed = _geometric(
                tf.cast(image, tf.float32), target if masks else None, sample_seed
            )
            if crop:
                image, moved = _random_crop(image, moved, crop, photometric_seed)
            return _augment_image(image, photometric_seed), moved if masks else target

        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda image, target: (tf.cast(image, tf.float32), target))
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


@keras.saving.register_keras_serializable(package="crackd")
def dice_coefficient(y_true, y_pred, smooth: float = 1.0):
    y_true = tf.reshape(y_true, [tf.shape(y_true)[0], -1])
    y_pred = tf.reshape(y_pred, [tf.shape(y_pred)[0], -1])
    inter = tf.reduce_sum(y_true * y_pred, axis=1)
    return tf.reduce_mean((2.0 * inter + smooth) / (tf.reduce_sum(y_true, 1) + tf.reduce_sum(y_pred, 1) + smooth))


@keras.saving.register_keras_serializable(package="crackd")
def bce_dice_loss(y_true, y_pred):
    """Binary cross-entropy (pixel-wise calibration) + soft Dice (robust to 1-5 % crack pixels)."""
    bce = keras.losses.binary_crossentropy(y_true, y_pred)
    return tf.reduce_mean(bce) + (1.0 - dice_coefficient(y_true, y_pred))


@keras.saving.register_keras_serializable(package="crackd")
def bce_tversky_loss(y_true, y_pred, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0):
    """BCE + Tversky: false negatives weigh `beta`, false positives `alpha` (recall-leaning for thin structures)."""
    t = tf.reshape(y_true, [tf.shape(y_true)[0], -1])
    p = tf.reshape(y_pred, [tf.shape(y_pred)[0], -1])
    tp = tf.reduce_sum(t * p, 1)
    fn = tf.reduce_sum(t * (1 - p), 1)
    fp = tf.reduce_sum((1 - t) * p, 1)
    tversky = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return tf.reduce_mean(keras.losses.binary_crossentropy(y_true, y_pred)) + (1.0 - tf.reduce_mean(tversky))


SEGMENTER_LOSSES = {"bce_dice": bce_dice_loss, "bce_tversky": bce_tversky_loss}


def _callbacks(run_dir: Path, cfg: TrainConfig, monitor: str, mode: str) -> list:
    run_dir.mkdir(parents=True, exist_ok=True)
    return [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.ModelCheckpoint(str(run_dir / "best.keras"), monitor=monitor, mode=mode, save_best_only=True),
        keras.callbacks.ModelCheckpoint(str(run_dir / "last.keras")),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.patience, restore_best_weights=False),
        keras.callbacks.CSVLogger(str(run_dir / "log.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False, profile_batch=0),
    ]


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
    history = model.fit(
        train_ds.repeat() if cfg.steps_per_epoch else train_ds,
        validation_data=val_ds,
        epochs=cfg.epochs,
        steps_per_epoch=cfg.steps_per_epoch,
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
    train_ds = make_dataset(x, y, cfg.batch_size, cfg.seed, training=True, masks=False)
    val_ds = make_dataset(*val, cfg.batch_size, cfg.seed, training=False, masks=False)
    # Keras `class_weight` does not combine with repeated datasets of unknown length, so weight via the loss:
    weights = {0: len(y) / (2.0 * neg), 1: len(y) / (2.0 * pos)}
    train_ds = train_ds.map(lambda img, lab: (img, lab, tf.where(lab[:, 0] > 0.5, weights[1], weights[0])))
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
    train_ds = make_dataset(x, m, cfg.batch_size, cfg.seed, training=True, masks=True, crop=cfg.crop)
    val_ds = make_dataset(*val, cfg.batch_size, cfg.seed, training=False, masks=True)
    return _fit(model, train_ds, val_ds, cfg, run_dir, steps, "val_dice_coefficient", "max", extra_callbacks)
