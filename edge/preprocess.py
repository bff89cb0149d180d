"""The one image preprocessing shared by the device and the trainer.

Every model in a bundle takes a uint8 RGB tensor of the model's input size. The
Keras graphs carry their own normalisation (a Rescaling layer), so the bytes the
camera gives, resized, are exactly the bytes the model was calibrated on: no
float conversion happens on the device. Calibration, evaluation and inference
all call these functions, so trainer and device cannot drift apart.
"""

from __future__ import annotations

import cv2
import numpy as np

# Colour order of every array that crosses a module boundary in crackd.
COLOR_ORDER = "RGB"
# Interpolation is part of the contract: INTER_AREA averages pixels on downscale
# (no aliasing of thin cracks), INTER_LINEAR is used when enlarging.
PREPROCESSING = {"color": COLOR_ORDER, "resize": "cv2.INTER_AREA down / cv2.INTER_LINEAR up", "dtype": "uint8", "range": [0, 255]}


def ensure_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Return `image` as a contiguous HxWx3 uint8 RGB array (grey and RGBA are converted)."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")


def resize_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize with the interpolation of the preprocessing contract; no-op when already that size."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    shrinking = height * width < h * w
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def model_input(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """The HxWx3 uint8 tensor (without batch axis) a model of input size (height, width) takes."""
    return resize_to(ensure_rgb_uint8(rgb), height, width)


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Affine-quantize float values into `dtype` (used only for models whose input is not raw pixels)."""
    info = np.iinfo(dtype)
    q = np.round(values / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Map quantized integers back to float32 values."""
    return (values.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def mask_to_binary(mask: np.ndarray) -> np.ndarray:
    """Normalise a ground-truth mask (0/255, 0/1, grey or 3-channel) to a uint8 0/1 array."""
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    top = int(mask.max()) if mask.size else 0
    threshold = 0 if top <= 1 else 127
    return (mask > threshold).astype(np.uint8)


def resize_mask(mask01: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a 0/1 mask keeping thin structures: area-average then any-coverage >= 25 % is crack."""
    h, w = mask01.shape[:2]
    if (h, w) == (height, width):
        return mask01
    if height * width < h * w:
        frac = cv2.resize(mask01.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
        return (frac >= 0.25).astype(np.uint8)
    return cv2.resize(mask01, (width, height), interpolation=cv2.INTER_NEAREST)
