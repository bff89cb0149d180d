"""Shared fixtures. Each area appends its own below; keep fixtures real (real files, real processes)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_BUNDLE = REPO / "models" / "default"


@pytest.fixture(scope="session")
def darkness_bundle(tmp_path_factory) -> Path:
    """A real INT8 bundle whose models flag dark pixels (see tests/bundle_factory.py)."""
    from bundle_factory import build_darkness_bundle

    return build_darkness_bundle(tmp_path_factory.mktemp("bundles") / "darkness")


@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    """A private copy of the shipped default bundle that a test may damage."""
    dst = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, dst)
    return dst



# --------------------------------------------------------------------------- model releases, signing, deploy
# (edge/releases.py, edge/signing.py, deploy/): throwaway OpenSSH keys and modified copies of the shipped bundle.


@pytest.fixture(scope="session")
def signer_keys(tmp_path_factory):
    """Two throwaway ed25519 keys: `trusted` is listed in `allowed_signers`, `stranger` is not."""
    import subprocess
    from types import SimpleNamespace

    from edge.signing import NAMESPACE

    d = tmp_path_factory.mktemp("signers")
    keys = {}
    for name in ("trusted", "stranger"):
        key = d / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(key)], check=True)
        keys[name] = key
    allowed = d / "allowed_signers"
    allowed.write_text(f'trusted@test namespaces="{NAMESPACE}" {(d / "trusted.pub").read_text().strip()}\n')
    return SimpleNamespace(trusted=keys["trusted"], stranger=keys["stranger"], allowed_signers=allowed, dir=d)


def copy_default_bundle(dst: Path, suffix: str, edit=None, sign=None) -> Path:
    """A copy of the shipped default bundle at `dst` with bundle_version `<shipped version>-<suffix>`.

    `edit(manifest_dict, bundle_dir)` may change the manifest and files before it is written; `sign`
    is an OpenSSH key to sign the result with. The FP32 reference models are left out (not needed).
    """
    import json

    from edge.signing import sign_bundle

    shutil.copytree(DEFAULT_BUNDLE, dst, ignore=shutil.ignore_patterns("reference", "manifest.json.sig"))
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["bundle_version"] = f"{manifest['bundle_version']}-{suffix}"
    if edit is not None:
        edit(manifest, dst)
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if sign is not None:
        sign_bundle(dst, sign)
    return dst


@pytest.fixture
def make_bundle(tmp_path):
    """Factory: make_bundle(suffix, edit=None, sign=None) -> a changed copy of the shipped bundle (see copy_default_bundle).

    Versions are the shipped bundle's version plus `-suffix`, so nothing depends on which bundle is shipped.
    """
    made = []

    def make(suffix: str, edit=None, sign=None) -> Path:
        made.append(suffix)
        return copy_default_bundle(tmp_path / f"bundle-{suffix}-{len(made)}", suffix, edit, sign)

    return make
