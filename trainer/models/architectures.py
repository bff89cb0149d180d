"""Keras model builders: a MobileNetV2 classifier and a small U-Net segmenter.

Both take raw uint8 RGB pixels (as float) and normalise inside the graph, so the
device feeds camera bytes straight into the INT8 input tensor. Every layer here
has a full-integer TFLite kernel (no float fallback): ReLU6, depthwise/regular
convolutions, batch norm (folded at export), resize-bilinear, concatenation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import keras
from keras import layers


@dataclass(frozen=True)
class ClassifierSpec:
    alpha: float = 0.35
    size: int = 96
    weights: str = "none"  # none | imagenet | path to a .keras/.weights.h5 file
    dropout: float = 0.2

    def as_dict(self) -> dict:
        return {"architecture": "MobileNetV2", **asdict(self)}


@dataclass(frozen=True)
class SegmenterSpec:
    size: int = 224
    base: int = 8  # filters of the first stage; doubles each stage down
    depth: int = 4  # number of stride-2 stages in the encoder
    # 1: a full-resolution stem and skip (bundle 1.0). 2: a stride-2 stem; the decoder ends at half resolution and the
    # probability map is upsampled bilinearly, so no convolution runs at full resolution (the Pi's memory-bound stage).
    stem_stride: int = 1
    # With stem_stride 2: channels of a light full-resolution head (0: none). The half-resolution decoder's features
    # are upsampled and mixed with a 3x3 full-resolution stem, so a 1-2 px hairline has full-resolution pixels to
    # land on; it costs about 350 multiply-adds per output pixel (at 8 channels), no full-resolution U-Net stage.
    fine_head: int = 0

    def as_dict(self) -> dict:
        if self.stem_stride == 1:
            kind = "full-resolution skip"
        elif self.fine_head:
            kind = f"stride-2 stem, half-resolution decoder, {self.fine_head}-channel full-resolution head"
        else:
            kind = "stride-2 stem, half-resolution decoder, bilinear output"
        return {"architecture": f"U-Net (separable convs, {kind})", **asdict(self)}


# The U-Net sizes of the model-selection sweep (INT8, one core here: about 3, 4.3 and 5.2 ms).
SEGMENTER_SIZES = {
    "tiny": SegmenterSpec(base=8),
    "small": SegmenterSpec(base=12),
    "medium": SegmenterSpec(base=16),
    # Half-resolution decoders (bundle 1.1): wider, and cheaper on the device than "tiny".
    "fast": SegmenterSpec(base=16, stem_stride=2),
    "fast-wide": SegmenterSpec(base=24, stem_stride=2),
    # Bundle 1.2: "fast" with a full-resolution head for hairlines.
    "fast-fine": SegmenterSpec(base=16, stem_stride=2, fine_head=8),
}


def build_classifier(spec: ClassifierSpec) -> keras.Model:
    """MobileNetV2 backbone + global pooling + one sigmoid unit: P(crack)."""
    weights = spec.weights
    if weights not in ("none", "imagenet") and not Path(weights).is_file():
        raise FileNotFoundError(f"--weights {weights!r}: no such file; use none, imagenet or a path to a weights file")
    inputs = keras.Input((spec.size, spec.size, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalise")(inputs)
    backbone = keras.applications.MobileNetV2(
        input_shape=(spec.size, spec.size, 3),
        alpha=spec.alpha,
        include_top=False,
        weights="imagenet" if weights == "imagenet" else None,
        pooling="avg",
    )
    # Trained from scratch, the default BN momentum (0.99) lags the weights for thousands of steps and the
    # moving statistics (used at validation and export) make the model output a constant. 0.9 tracks them.
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = 0.9
    x = backbone(x)
    x = layers.Dropout(spec.dropout)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="crack_probability")(x)
    model = keras.Model(inputs, outputs, name=f"classifier_a{spec.alpha}_{spec.size}")
    if weights not in ("none", "imagenet"):
        model.load_weights(weights)
    return model


BN_MOMENTUM = 0.9


def _conv_bn(x, filters: int, stride: int = 1, separable: bool = True, name: str = ""):
    if separable:
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
        x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    else:
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


def build_segmenter(spec: SegmenterSpec, size: int | str | None = "spec") -> keras.Model:
    """A light U-Net for cracks 1-30 px wide.

    The encoder uses depthwise-separable stages to stay within a few milliseconds in INT8.
    With `stem_stride` 1 the decoder ends with a full-resolution skip from a cheap 3x3 stem;
    with 2 every convolution runs at half resolution or less and only the final
    probability map is resized (the stage the device's memory bandwidth limits).
    `size` overrides the input size, None for any size (the layers are size-independent:
    train on crops, export at the device size). Output: per-pixel P(crack) at the input size.
    """
    size = spec.size if size == "spec" else size
    inputs = keras.Input((size, size, 3), name="image")
    normalised = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalise")(inputs)
    stem = _conv_bn(normalised, spec.base, stride=spec.stem_stride, separable=False, name="stem")
    skips = [stem]
    x = stem
    for level in range(spec.depth):
        filters = spec.base * 2 ** (level + 1)
        x = _conv_bn(x, filters, stride=2, separable=level > 0, name=f"down{level}_a")
        x = _conv_bn(x, filters, name=f"down{level}_b")
        skips.append(x)
    x = skips.pop()
    for level in reversed(range(spec.depth)):
        skip = skips.pop()
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{level}_resize")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skip])
        if level == 0 and spec.stem_stride == 1:
            # Full resolution: a pointwise mix only; the 3x3 context comes from the coarser levels.
            x = layers.Conv2D(spec.base, 1, use_bias=False, name="up0_pw")(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="up0_bn")(x)
            x = layers.ReLU(6.0, name="up0_relu")(x)
        else:
            x = _conv_bn(x, spec.base * 2**level, name=f"up{level}_conv")
    if spec.stem_stride == 1:
        outputs = layers.Conv2D(1, 1, activation="sigmoid", name="crack_mask")(x)
    elif spec.fine_head:
        coarse = layers.Conv2D(spec.fine_head, 1, use_bias=False, name="fine_reduce")(x)
        coarse = layers.BatchNormalization(momentum=BN_MOMENTUM, name="fine_reduce_bn")(coarse)
        coarse = layers.ReLU(6.0, name="fine_reduce_relu")(coarse)
        coarse = layers.UpSampling2D(spec.stem_stride, interpolation="bilinear", name="fine_resize")(coarse)
        full = _conv_bn(normalised, spec.fine_head, separable=False, name="fine_stem")
        x = layers.Concatenate(name="fine_concat")([coarse, full])
        x = layers.Conv2D(spec.fine_head, 1, use_bias=False, name="fine_pw")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="fine_bn")(x)
        x = layers.ReLU(6.0, name="fine_relu")(x)
        outputs = layers.Conv2D(1, 1, activation="sigmoid", name="crack_mask")(x)
    else:
        x = layers.Conv2D(1, 1, activation="sigmoid", name="crack_probability_half")(x)
        outputs = layers.UpSampling2D(spec.stem_stride, interpolation="bilinear", name="crack_mask")(x)
    fine = f"_f{spec.fine_head}" if spec.fine_head else ""
    return keras.Model(
        inputs, outputs, name=f"unet_b{spec.base}_d{spec.depth}_s{spec.stem_stride}{fine}_{size or 'any'}"
    )
