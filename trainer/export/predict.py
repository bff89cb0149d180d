"""Run a TFLite model on images exactly as the device feeds it, and return float outputs.

Shared by export (INT8 vs FP32 validation), the sweep and the evaluation report, so the three
measure the same thing the device computes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from edge.engine.preprocess import dequantize, model_input, quantize
from edge.engine.runtime import TFLiteModel


def model_outputs(
    model: TFLiteModel, images: Iterable[np.ndarray], progress=None, desc: str = ""
) -> Iterator[np.ndarray]:
    """Yield each image's float output (batch axis dropped); `progress` wraps the iteration (e.g. tqdm)."""
    h, w = model.input_hw
    info = model.input
    for image in images if progress is None else progress(images, desc=desc):
        x = model_input(image, h, w)
        if info.dtype == np.float32:
            x = x.astype(np.float32)
        elif info.dtype != np.uint8 or (info.scale, info.zero_point) not in ((1.0, 0), (0.0, 0)):
            x = quantize(x.astype(np.float32), info.scale, info.zero_point, info.dtype)
        raw = model.run(x)
        out = model.output
        yield raw.astype(np.float32) if out.dtype == np.float32 else dequantize(raw, out.scale, out.zero_point)


def predict(model: TFLiteModel, images: Iterable[np.ndarray]) -> np.ndarray:
    """All outputs stacked: N x (output shape without the batch axis)."""
    return np.stack(list(model_outputs(model, images)))
