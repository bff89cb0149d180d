"""The models the daemon serves: a bundle loaded, verified and wrapped in its cascade, swapped as one on reload.

Built beside the running engine (at start, and by the reload thread), so a bundle that fails any
check (signature policy, checksums, golden samples, a smoke run of the interpreters) never
replaces the one serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.config import Config
from edge.engine.bundle import LoadedBundle, load_bundle
from edge.events.decision import DecisionParams
from edge.releases.signing import check_bundle_trust

if TYPE_CHECKING:
    from edge.engine.cascade import Cascade


@dataclass
class Engine:
    """A loaded bundle and the cascade running it (swapped as one on reload)."""

    bundle: LoadedBundle
    cascade: Cascade
    path: Path


def build_engine(cfg: Config, bundle_dir: Path | None = None, verify_golden: bool = False) -> Engine:
    """Load + verify a bundle completely and build its cascade; raises BundleError/RuntimeUnavailable."""
    from edge.engine.cascade import Cascade, TilingConfig

    # Resolve `models/current` once, so every file is read from the same release even if it is switched meanwhile.
    bundle_dir = Path(bundle_dir or cfg.bundle_dir()).resolve()
    # The device's signature policy, the same rule `crackd models stage/activate` apply, before any model file is read.
    check_bundle_trust(bundle_dir, cfg.releases.require_signature, Path(cfg.releases.allowed_signers))
    bundle = load_bundle(bundle_dir, runtime=cfg.model.runtime, threads=cfg.model.threads)
    if verify_golden and (bundle.manifest.golden or {}).get("samples"):
        from edge.engine.selftest import run_golden

        report = run_golden(bundle)
        if not report.ok:
            report.raise_for_failures()
    t = cfg.model.tiling
    cascade = Cascade(
        bundle,
        segment=cfg.model.segment,
        threshold=cfg.decision.threshold,
        mm_per_pixel=cfg.model.mm_per_pixel,
        cracks=cfg.model.cracks,
        tiling=TilingConfig(tile=t.tile, overlap=t.overlap) if t.enabled else None,
    )
    h, w = bundle.classifier.input_hw
    cascade.process(np.full((h, w, 3), 128, np.uint8))  # smoke run: the interpreters really execute
    return Engine(bundle, cascade, bundle_dir)


def decision_params(cfg: Config, engine: Engine) -> DecisionParams:
    """Debounce settings; the gate threshold is the cascade's, so a frame's `crack` flag and the events agree
    (both apply edge.engine.verdict)."""
    d = cfg.decision
    return DecisionParams(engine.cascade.threshold, d.hysteresis, d.start_k, d.start_n, d.end_m, d.update_interval_s)
