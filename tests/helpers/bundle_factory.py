"""Real INT8 bundles with known behaviour, for tests that need exact answers.

"Darkness" models: the classifier says crack when any pixel is much darker than
mid-grey; the segmenter marks exactly the dark pixels. They are genuine Keras
models converted by the trainer's own INT8 exporter and run by the edge
runtime, so tests can assert where a drawn crack must appear.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def darkness_models(cls_size: int = 32, seg_size: int = 64):
    import keras
    from keras import layers

    def darkness(x):  # 1 - mean(rgb)/255 per pixel, as a fixed 1x1 convolution
        x = layers.Rescaling(-1.0 / 255.0, offset=1.0)(x)
        conv = layers.Conv2D(1, 1, use_bias=False, trainable=False)
        y = conv(x)
        conv.set_weights([np.full((1, 1, 3, 1), 1.0 / 3.0, np.float32)])
        return y

    inp = keras.Input((cls_size, cls_size, 3))
    m = layers.GlobalMaxPooling2D()(darkness(inp))
    dense = layers.Dense(1, activation="sigmoid")
    out = dense(m)
    dense.set_weights([np.array([[20.0]], np.float32), np.array([-8.0], np.float32)])
    classifier = keras.Model(inp, out, name="darkness_classifier")

    inp = keras.Input((seg_size, seg_size, 3))
    conv = layers.Conv2D(1, 1, activation="sigmoid")
    out = conv(darkness(inp))
    conv.set_weights([np.array([[[[20.0]]]], np.float32), np.array([-12.0], np.float32)])
    segmenter = keras.Model(inp, out, name="darkness_segmenter")
    return classifier, segmenter


def calibration_images(size: int, n: int = 24, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        img = np.full((size, size, 3), int(rng.integers(120, 230)), np.uint8)
        if i % 2:
            p0 = tuple(int(v) for v in rng.integers(0, size, 2))
            p1 = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.line(img, p0, p1, (10, 10, 10), max(1, size // 16))
        images.append(img)
    images += [np.zeros((size, size, 3), np.uint8), np.full((size, size, 3), 255, np.uint8)]
    return np.stack(images)


def build_darkness_bundle(out_dir: Path, version: str = "1.0.0-test") -> Path:
    from trainer.export.convert import RoleExport, convert_fp32, convert_int8, write_bundle

    classifier, segmenter = darkness_models()
    roles = {}
    for role, model in (("classifier", classifier), ("segmenter", segmenter)):
        size = int(model.input_shape[1])
        roles[role] = RoleExport(
            convert_int8(model, calibration_images(size)),
            convert_fp32(model),
            {"architecture": f"darkness test {role}"},
            {},
            {},
        )
    golden = calibration_images(64, n=4, seed=1)[:4]
    return write_bundle(Path(out_dir), version, roles, golden, {"sources": [{"folder": "synthetic test images"}]})
