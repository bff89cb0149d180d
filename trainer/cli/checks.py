"""Cheap checks of the files a `crack-train` command is given, made before TensorFlow is imported.

A training or an export takes minutes to hours and starts with a ten-second TensorFlow import; a checkpoint that is
not a checkpoint, a run directory without its files or a bundle without its manifest should cost a second and one
line naming the file (InputError, which the command line prints as it prints every other refusal), not a traceback
from deep inside Keras after the import.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from edge.engine.bundle import BundleError, read_manifest

# What `crack-train classifier|segmenter` leaves in a run directory and `crack-train export` reads.
RUN_FILES = ("best.keras", "run.json", "splits.json", "heldout.npz")


class InputError(ValueError):
    """A file or folder given on the command line that cannot be used; the message names it and says why."""


def read_json(path: Path, what: str) -> Any:
    """The JSON document in `path` (`what` it should be, for the message)."""
    if not path.is_file():
        raise InputError(f"{path}: no such file ({what})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); expected {what}") from None


def check_keras_file(path: Path, option: str) -> None:
    """A Keras checkpoint (`.keras`: a zip archive holding the model's config)."""
    if not path.is_file():
        raise InputError(f"{option} {path}: no such file (expected a Keras checkpoint, NAME.keras)")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{option} {path}: not a Keras checkpoint (a .keras file is a zip archive; truncated?)")
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise InputError(f"{option} {path}: not a Keras checkpoint (no config.json inside)")


def finetune_base(base: Path) -> dict:
    """The description (NAME.json) of a fine-tuning checkpoint (NAME.keras), as `crack-train export --finetune-dir`
    publishes them; InputError naming the file when either is missing or not what adapt needs."""
    meta_path = base.with_suffix(".json")
    if not base.is_file() or not meta_path.is_file():
        raise InputError(
            f"--base {base}: expected a fine-tuning checkpoint (NAME.keras) with its NAME.json beside it, "
            "as published in models/finetune/"
        )
    check_keras_file(base, "--base")
    meta = read_json(meta_path, "the checkpoint's description written by crack-train export --finetune-dir")
    spec = meta.get("spec") if isinstance(meta, dict) else None
    kind = meta.get("kind") if isinstance(meta, dict) else None
    needed = {"segmenter": ("size",), "classifier": ("size", "alpha")}.get(str(kind))
    if needed is None or not isinstance(spec, dict) or any(k not in spec for k in needed):
        raise InputError(
            f"{meta_path}: expected {{'kind': 'segmenter' or 'classifier', 'spec': {{...}}}} as crack-train export "
            "--finetune-dir writes it"
        )
    if kind == "segmenter" and not meta.get("model_size"):
        raise InputError(f"{meta_path}: no model_size (a segmenter checkpoint names its size: fast, tiny, ...)")
    return meta


def check_run_dir(run_dir: Path, option: str) -> None:
    """A finished `crack-train classifier|segmenter` run: its checkpoint and the files export reads beside it."""
    if not run_dir.is_dir():
        raise InputError(f"{option} {run_dir}: no such run directory")
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        raise InputError(
            f"{option} {run_dir}: not a finished training run (missing {', '.join(missing)}; "
            f"crack-train classifier|segmenter --out writes them)"
        )
    check_keras_file(run_dir / "best.keras", option)
    for name in ("run.json", "splits.json"):
        read_json(run_dir / name, f"the {name} of a training run")


def check_bundle(bundle_dir: Path, roles: list[str]) -> None:
    """A bundle to keep models from (`--keep-from`): a valid manifest, and each kept role's files present."""
    try:
        manifest = read_manifest(bundle_dir)
    except BundleError as exc:
        raise InputError(f"--keep-from: {exc}") from None
    for role in roles:
        entry = manifest.models[role]
        reference = entry.raw.get("reference")
        for name in (entry.file, reference.get("file") if isinstance(reference, dict) else None):
            if name is None:
                raise InputError(f"--keep-from {bundle_dir}: the {role} has no FP32 reference model to keep")
            if not (bundle_dir / name).is_file():
                raise InputError(f"--keep-from {bundle_dir}: {name} is missing")


def check_output_dir(path: Path, option: str) -> None:
    """Where a command writes a directory: absent (it is made) or a directory already."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: exists and is not a directory")


def check_threshold(value: float, what: str) -> float:
    if not 0.0 < value < 1.0:
        raise InputError(f"{what} {value}: expected a probability between 0 and 1 (exclusive)")
    return value
