"""What the model-release tests share: a bundle's version, a device config holding the release policy, and
`crackd models` run as a child process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.helpers.cli import crackd


def version_of(bundle: Path) -> str:
    return json.loads((Path(bundle) / "manifest.json").read_text())["bundle_version"]


def device_config(tmp_path: Path, require_signature=True, allowed_signers=None, name="crackd.yaml") -> Path:
    """A device config file (root-owned like /etc/crackd/crackd.yaml) holding the release policy."""
    path = tmp_path / name
    lines = ["releases:", f"  require_signature: {str(require_signature).lower()}"]
    if allowed_signers is not None:
        lines.append(f"  allowed_signers: {allowed_signers}")
    path.write_text("\n".join(lines) + "\n")
    return path


def crackd_models(*args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    """`crackd models ARGS`."""
    return crackd("models", *args, check=check, timeout=timeout)
