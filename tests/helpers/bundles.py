"""Changed copies of the shipped model bundle, and the throwaway OpenSSH keys that sign them.

Releases, self-test, signing and deploy tests need bundles that differ from the shipped one in one known way (a
version suffix, an edited manifest, a signature by a trusted or a stranger's key). Versions are the shipped bundle's
version plus `-suffix`, so nothing depends on which bundle is shipped. Real INT8 models with exact answers are made
by tests/helpers/bundle_factory.py (TensorFlow) and checked in as tests/data/darkness-bundle.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

from tests.helpers.paths import DEFAULT_BUNDLE


def make_signer_keys(d: Path) -> SimpleNamespace:
    """Two throwaway ed25519 keys in `d`: `trusted` is listed in `allowed_signers`, `stranger` is not."""
    from edge.releases.signing import NAMESPACE

    keys = {}
    for name in ("trusted", "stranger"):
        key = d / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(key)], check=True
        )
        keys[name] = key
    allowed = d / "allowed_signers"
    allowed.write_text(f'trusted@test namespaces="{NAMESPACE}" {(d / "trusted.pub").read_text().strip()}\n')
    return SimpleNamespace(trusted=keys["trusted"], stranger=keys["stranger"], allowed_signers=allowed, dir=d)


def copy_default_bundle(dst: Path, suffix: str, edit=None, sign=None) -> Path:
    """A copy of the shipped default bundle at `dst` with bundle_version `<shipped version>-<suffix>`.

    `edit(manifest_dict, bundle_dir)` may change the manifest and files before it is written; `sign`
    is an OpenSSH key to sign the result with. The FP32 reference models are left out (not needed).
    """
    from edge.releases.signing import sign_bundle

    shutil.copytree(DEFAULT_BUNDLE, dst, ignore=shutil.ignore_patterns("reference", "manifest.json.sig"))
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["bundle_version"] = f"{manifest['bundle_version']}-{suffix}"
    if edit is not None:
        edit(manifest, dst)
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if sign is not None:
        sign_bundle(dst, sign)
    return dst


def swap_golden_segmenter_outputs(manifest: dict) -> None:
    """Give each golden sample the recorded segmenter map of the next one: checksums and sizes stay consistent,
    the expectations are wrong (a self-test must catch it by comparing maps, not files)."""
    keys = ("segmenter_output", "segmenter_output_sha256", "segmenter_output_bytes")
    samples = manifest["golden"]["samples"]
    outs = [tuple(s.get(k) for k in keys) for s in samples]
    for s, out in zip(samples, outs[1:] + outs[:1]):
        s.update({k: v for k, v in zip(keys, out) if v is not None})
