"""How strict staging is on this device, and how many releases it keeps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.layout import DEFAULT_ALLOWED_SIGNERS


@dataclass(frozen=True)
class ReleasePolicy:
    """From the daemon config's `releases` section or CLI flags (edge.cli.models)."""

    require_signature: bool = True
    allowed_signers: Path = DEFAULT_ALLOWED_SIGNERS
    extra_allowed_signers: tuple[Path, ...] = ()  # from the command line: a signature must verify against these too
    keep: int = 3  # releases kept besides the current one (the previous is always among them)
    runtime: str = "auto"
    threads: int = 1
    max_latency_ms: float | None = None  # None: measure and report only
    latency_runs: int = 5
