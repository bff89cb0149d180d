"""A well-known model to state crackd's speed against: INT8 MobileNetV2, made the same way every time.

Milliseconds measured on one machine say little about another (the same bench
gives 4.5 ms on one 2-core host and 10-17 ms on another). A frame's cost as a
multiple of a standard model timed in the same process, same runtime and same
threads (`crackd bench --reference`) carries over, and published figures for
that standard model convert it to a Pi 4 or Pi 5.

The reference is Keras' MobileNetV2 (alpha 1.0, 224x224, 1000 classes), the
graph of the published `mobilenet_v2_1.0_224_quant` benchmarks, with random
weights from a fixed seed (nothing is downloaded: the weights' values do not
change the arithmetic) and full-integer INT8 conversion with uint8 input and
output, calibrated on procedurally generated frames from a fixed seed.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("crack-train.reference")

DEFAULT_ALPHA = 1.0
DEFAULT_SIZE = 224
DEFAULT_SEED = 0
CALIBRATION_FRAMES = 8


def calibration_frames(size: int, n: int, seed: int) -> np.ndarray:
    """`n` synthetic crack scenes at `size`x`size` through the device preprocessing, plus a black and a white frame.

    The black and white frames pin the input range to 0..255, so the uint8 input
    quantization is the identity, as in crackd's own models.
    """
    from edge.engine.preprocess import model_input
    from edge.sources.synth import generate
    from trainer.export.convert import with_range_pins

    rng = np.random.default_rng(seed)
    frames = [model_input(generate(rng, 2 * size, 2 * size, crack_probability=0.5).image, size, size) for _ in range(n)]
    return with_range_pins(frames, size)


def build_reference(alpha: float = DEFAULT_ALPHA, size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED):
    """Keras MobileNetV2 with random weights drawn from `seed` (same seed, same weights)."""
    import tensorflow as tf

    tf.keras.backend.clear_session()  # layer names (which end up in the file) restart from the same counters
    tf.keras.utils.set_random_seed(seed)
    return tf.keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=alpha, weights=None, classes=1000, classifier_activation="softmax"
    )


def reference_tflite(
    alpha: float = DEFAULT_ALPHA,
    size: int = DEFAULT_SIZE,
    seed: int = DEFAULT_SEED,
    calibration: int = CALIBRATION_FRAMES,
) -> bytes:
    """The full-integer INT8 reference model (uint8 in, uint8 out) as TFLite bytes."""
    from trainer.export.convert import convert_int8

    model = build_reference(alpha, size, seed)
    log.info(
        "converting MobileNetV2 alpha %s at %dx%d (%d parameters) to INT8", alpha, size, size, model.count_params()
    )
    return convert_int8(model, calibration_frames(size, calibration, seed))
