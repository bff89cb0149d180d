"""The demo camera: procedurally generated surfaces with cracks at known places (edge.sources.synth)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge.config_fields import option
from edge.sources.base import Frame, Pacer, SourceAdapter

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class SyntheticOptions:
    width: int = option(320, "frame width in pixels", min=16, max=4096)
    height: int = option(240, "frame height in pixels", min=16, max=4096)
    fps: float = option(
        10.0, "frames per second; 0 = as fast as the pipeline takes them (no frame skipped)", min=0, max=1000
    )
    crack_probability: float = option(0.3, "probability that a new scene holds cracks", min=0, max=1)
    hold_frames: int = option(
        5, "frames each generated scene stays in view (a crack passing the camera), jittered", min=1, max=10000
    )
    seed: int | None = option(None, "random seed (null = different scenes every run)")


class SyntheticSource(SourceAdapter):
    """Procedurally generated surfaces with cracks at known places (edge.sources.synth); the demo camera.

    Each generated scene stays in view for `hold_frames` frames, shifted by a few
    pixels each frame like a surface sliding past, so a crack gives one event.
    `last_mask` is the ground truth of the frame just returned.
    """

    name = "synthetic"
    Options = SyntheticOptions
    live = False

    def __init__(self, width=320, height=240, fps=10.0, crack_probability=0.3, hold_frames=5, seed=None, stop=None):
        import numpy as np

        super().__init__()
        self.width, self.height = width, height
        self.crack_probability, self.hold_frames = crack_probability, hold_frames
        self.rng = np.random.default_rng(seed)
        self.pacer = Pacer(fps, stop)
        self.lossless = not fps
        self._scene: Any = None
        self._left = 0
        self.last_mask: np.ndarray | None = None
        self.last_has_crack = False

    @classmethod
    def from_config(
        cls, options: SyntheticOptions, *, read_timeout_s: float, stop: threading.Event | None = None
    ) -> SyntheticSource:
        o = options
        return cls(o.width, o.height, o.fps, o.crack_probability, o.hold_frames, o.seed, stop=stop)

    @classmethod
    def nominal_fps(cls, options: SyntheticOptions) -> float:
        return options.fps

    def open(self) -> None:
        from edge.sources import synth  # noqa: F401  (fail at open, not at the first frame)

    def read(self, timeout: float) -> Frame:
        import numpy as np

        from edge.sources.synth import generate

        self.pacer.wait()
        if self._left <= 0:
            self._scene = generate(self.rng, self.height, self.width, self.crack_probability)
            self._left = self.hold_frames
        k = self.hold_frames - self._left
        self._left -= 1
        shift = int(k * 2)
        rgb = np.roll(self._scene.image, shift, axis=1) if shift else self._scene.image.copy()
        self.last_mask = np.roll(self._scene.mask, shift, axis=1) if shift else self._scene.mask
        self.last_has_crack = self._scene.n_cracks > 0
        return self._frame(rgb, ref=f"synthetic:{self._scene.surface}:{self._scene.n_cracks}")
