"""Frame sources: one small interface, one adapter per kind of camera, a registry that `source.type` chooses from.

- `base`: the contract. `FrameSource.open() / read(timeout) -> Frame / close()` returning RGB uint8 frames; the
  failures (`SourceTimeout` retried, `SourceError` reconnected, `SourceExhausted` a finite source ended,
  `SourceFailed` never will deliver); `SourceAdapter`, what a camera declares to be chosen by the config.
- `resilient`: `ResilientSource` wraps any adapter with the retry/reconnect policy, the counters and a camera
  state ("ok" | "stalled" | "reconnecting" | "failed" | "finished") reported to a callback.
- one module per camera: `synthetic` (the demo camera), `folder` (image files), `opencv` (V4L2, RTSP/HTTP, video
  files), `picamera2` (the Raspberry Pi camera; picamera2 is imported when it opens: it needs libcamera).
- `registry`: `ADAPTERS`, `adapter_for(type)`, `make_source(source_config)`.
- `images` (image files and decoding) and `synth` (procedural cracks) are shared with the trainer.

Adding a camera type means one new module and one line in `registry.ADAPTERS`. The module defines a frozen
dataclass of its options, declared with `edge.config_fields.option` (edge.config validates them, errors name
`file:line: source.<name>.<key>`, and they must be documented in config/crackd.example.yaml), and a
`SourceAdapter` subclass with `name` (the `source.type` value), `Options`, `live`, `from_config(options, *,
read_timeout_s, stop)`, `nominal_fps(options)`, optionally `option_problems(options)` for rules between its keys,
and `open` / `read` / `close`.

Adapter modules import numpy, OpenCV and camera libraries inside the methods that use them: edge.config imports
every adapter for its options, and reading a config stays as light as it was (no numpy, no OpenCV).
"""

from edge.sources.base import (
    Frame,
    FrameSource,
    SourceAdapter,
    SourceError,
    SourceExhausted,
    SourceFailed,
    SourceHealth,
    SourceTimeout,
)
from edge.sources.folder import FolderOptions, FolderSource
from edge.sources.opencv import OpenCVOptions, OpenCVSource
from edge.sources.picamera2 import Picamera2Options, Picamera2Source, yuv420_to_rgb
from edge.sources.registry import ADAPTERS, adapter_for, make_source
from edge.sources.resilient import ResilientSource
from edge.sources.synthetic import SyntheticOptions, SyntheticSource

__all__ = [
    "ADAPTERS",
    "FolderOptions",
    "FolderSource",
    "Frame",
    "FrameSource",
    "OpenCVOptions",
    "OpenCVSource",
    "Picamera2Options",
    "Picamera2Source",
    "ResilientSource",
    "SourceAdapter",
    "SourceError",
    "SourceExhausted",
    "SourceFailed",
    "SourceHealth",
    "SourceTimeout",
    "SyntheticOptions",
    "SyntheticSource",
    "adapter_for",
    "make_source",
    "yuv420_to_rgb",
]
