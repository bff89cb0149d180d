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
# Interpolation is part of the contract. Downscaling halves with cv2.INTER_AREA (2x2 box average:
# anti-aliased, so thin cracks survive, and fast) while the image is at least twice the target, then
# finishes with cv2.INTER_LINEAR (less than 2x left). The halvings of one frame are shared by both
# models. A plain INTER_AREA to an arbitrary size would cost ~10x more.
PREPROCESSING = {
    "color": COLOR_ORDER,
    "resize": "cv2.INTER_AREA halvings while >= 2x the target, then cv2.INTER_LINEAR",
    "dtype": "uint8",
    "range": [0, 255],
}


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
    if image.shape[:2] == (height, width):
        return image
    out = np.empty((height, width, *image.shape[2:]), image.dtype)
    return resize_into(image, out)


def _halvings(image: np.ndarray, height: int, width: int, cache: dict | None) -> np.ndarray:
    """Halve `image` (2x2 box average) while it stays at least twice (height, width); reuse `cache` levels."""
    while image.shape[0] >= 2 * height and image.shape[1] >= 2 * width:
        key = (image.shape[0] // 2, image.shape[1] // 2)
        half = cache.get(key) if cache is not None else None
        if half is None:
            half = cv2.resize(image, (key[1], key[0]), interpolation=cv2.INTER_AREA)
            if cache is not None:
                cache[key] = half
        image = half
    return image


def resize_into(image: np.ndarray, out: np.ndarray, cache: dict | None = None) -> np.ndarray:
    """Resize `image` into the preallocated `out` (e.g. a model's input tensor view): no extra copy.

    This is the single place where the contract's resize happens, for the device and the trainer alike.
    `cache` (a dict per frame) lets several models share the frame's halvings; results are identical.
    """
    out_h, out_w = out.shape[:2]
    image = _halvings(image, out_h, out_w, cache)
    if image.shape[:2] == (out_h, out_w):
        np.copyto(out, image.reshape(out.shape))
        return out
    result = cv2.resize(image, (out_w, out_h), dst=out, interpolation=cv2.INTER_LINEAR)
    if result is not out and not np.shares_memory(result, out):  # OpenCV allocated anyway (non-contiguous view)
        np.copyto(out, result.reshape(out.shape))
    return out


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
