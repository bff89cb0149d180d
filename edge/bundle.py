"""The model bundle: the one definition of what a valid bundle is.

A bundle is a directory with `manifest.json`, `classifier.tflite`,
`segmenter.tflite`, `golden/` sample images with the outputs recorded at export,
and optionally `manifest.json.sig` and `reference/` (FP32 models for
comparison). The trainer writes it, the deploy tool checks it before copying,
the device checks it before serving: all through this module.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge import __version__

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
MODEL_ROLES = ("classifier", "segmenter")
TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier at bytes 4..8 of every .tflite file
FULL_INTEGER_DTYPES = {"uint8", "int8"}


class BundleError(Exception):
    """A bundle that must not be served; subclasses say which check failed."""


class BundleNotFound(BundleError):
    pass


class ManifestInvalid(BundleError):
    pass


class UnsupportedSchema(BundleError):
    pass


class NeedsNewerCrackd(BundleError):
    pass


class ModelFileMissing(BundleError):
    pass


class ChecksumMismatch(BundleError):
    pass


class NotTFLite(BundleError):
    pass


class TensorMismatch(BundleError):
    pass


class NotFullInteger(BundleError):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_version(text: str) -> tuple[int, ...]:
    """'0.10.2' -> (0, 10, 2); suffixes such as '-dev' are ignored."""
    parts = re.findall(r"\d+", str(text).split("-")[0].split("+")[0])
    if not parts:
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(p) for p in parts)


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "TensorSpec":
        try:
            return cls(tuple(int(v) for v in d["shape"]), str(d["dtype"]), float(d["scale"]), int(d["zero_point"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestInvalid(f"{where}: expected shape, dtype, scale, zero_point ({exc})") from None

    def as_dict(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype, "scale": self.scale, "zero_point": self.zero_point}


@dataclass(frozen=True)
class ModelEntry:
    role: str
    file: str
    sha256: str
    input: TensorSpec
    output: TensorSpec
    threshold: float
    labels: tuple[str, ...]
    raw: dict  # the manifest entry as written (metrics, architecture, preprocessing ...)


@dataclass(frozen=True)
class Manifest:
    path: Path  # the bundle directory
    schema_version: int
    bundle_version: str
    created: str
    min_crackd_version: str
    models: dict[str, ModelEntry]
    golden: dict
    raw: dict

    @property
    def classifier(self) -> ModelEntry:
        return self.models["classifier"]

    @property
    def segmenter(self) -> ModelEntry:
        return self.models["segmenter"]


def _require(d: dict, key: str, where: str, kind=None):
    if key not in d:
        raise ManifestInvalid(f"{where}: missing key {key!r}")
    value = d[key]
    if kind is not None and not isinstance(value, kind):
        raise ManifestInvalid(f"{where}.{key}: expected {kind.__name__ if isinstance(kind, type) else kind}, got {type(value).__name__}")
    return value


def read_manifest(bundle_dir: str | Path) -> Manifest:
    """Parse and structurally validate `manifest.json` (no file checks)."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST
    if not bundle_dir.is_dir():
        raise BundleNotFound(f"{bundle_dir}: no such bundle directory")
    if not path.is_file():
        raise BundleNotFound(f"{bundle_dir}: no {MANIFEST}; is this a model bundle directory?")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestInvalid(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ManifestInvalid(f"{path}: expected a JSON object")
    schema = _require(raw, "schema_version", str(path), int)
    if schema != SCHEMA_VERSION:
        raise UnsupportedSchema(f"{path}: manifest schema_version {schema} is not supported (this crackd {__version__} reads schema {SCHEMA_VERSION})")
    min_version = str(_require(raw, "min_crackd_version", str(path), str))
    if parse_version(min_version) > parse_version(__version__):
        raise NeedsNewerCrackd(f"{bundle_dir}: bundle needs crackd >= {min_version}, this is crackd {__version__}; upgrade crackd first")
    models_raw = _require(raw, "models", str(path), dict)
    models = {}
    for role in MODEL_ROLES:
        where = f"{path}: models.{role}"
        entry = models_raw.get(role)
        if not isinstance(entry, dict):
            raise ManifestInvalid(f"{where}: missing or not an object")
        models[role] = ModelEntry(
            role=role,
            file=str(_require(entry, "file", where, str)),
            sha256=str(_require(entry, "sha256", where, str)),
            input=TensorSpec.from_dict(_require(entry, "input", where, dict), f"{where}.input"),
            output=TensorSpec.from_dict(_require(entry, "output", where, dict), f"{where}.output"),
            threshold=float(_require(entry, "threshold", where, (int, float))),
            labels=tuple(entry.get("labels", ())),
            raw=entry,
        )
    return Manifest(
        path=bundle_dir,
        schema_version=schema,
        bundle_version=str(_require(raw, "bundle_version", str(path), str)),
        created=str(raw.get("created", "")),
        min_crackd_version=min_version,
        models=models,
        golden=raw.get("golden", {}),
        raw=raw,
    )


def verify_files(manifest: Manifest) -> None:
    """Check every model file exists, matches its sha256 and is a TFLite flatbuffer; likewise golden files."""
    for entry in manifest.models.values():
        path = manifest.path / entry.file
        if not path.is_file():
            raise ModelFileMissing(f"{path}: {entry.role} model file is missing")
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise ChecksumMismatch(f"{path}: sha256 {actual[:12]}... does not match the manifest's {entry.sha256[:12]}... (corrupted or altered copy)")
        with open(path, "rb") as fh:
            head = fh.read(8)
        if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
            raise NotTFLite(f"{path}: not a TFLite model (no TFL3 flatbuffer identifier)")
    for sample in manifest.golden.get("samples", []):
        for key, sha_key in (("image", "sha256"), ("segmenter_output", "segmenter_output_sha256")):
            rel = sample.get(key)
            if rel is None:
                continue
            path = manifest.path / rel
            if not path.is_file():
                raise ModelFileMissing(f"{path}: golden sample file listed in the manifest is missing")
            if sha_key in sample and sha256_file(path) != sample[sha_key]:
                raise ChecksumMismatch(f"{path}: golden sample file does not match its sha256 in the manifest")


def manifest_sha256(bundle_dir: str | Path) -> str:
    """The identity of a bundle: the sha256 of its manifest (which pins every file's sha256)."""
    return sha256_file(Path(bundle_dir) / MANIFEST)


def check_model_tensors(entry: ModelEntry, model) -> None:
    """Compare a loaded TFLiteModel's I/O with the manifest and require a full-integer graph."""
    from edge.runtime import float_tensors

    for name, spec, actual in (("input", entry.input, model.input), ("output", entry.output, model.output)):
        if tuple(actual.shape) != spec.shape:
            raise TensorMismatch(f"{entry.file}: {name} shape {list(actual.shape)} != manifest {list(spec.shape)}")
        if actual.dtype.name != spec.dtype:
            raise TensorMismatch(f"{entry.file}: {name} dtype {actual.dtype.name} != manifest {spec.dtype}")
        if not np.isclose(actual.scale, spec.scale, rtol=1e-5, atol=1e-9) or actual.zero_point != spec.zero_point:
            raise TensorMismatch(
                f"{entry.file}: {name} quantization ({actual.scale:g}, {actual.zero_point}) != manifest ({spec.scale:g}, {spec.zero_point})"
            )
        if actual.dtype.name not in FULL_INTEGER_DTYPES:
            raise NotFullInteger(f"{entry.file}: {name} tensor is {actual.dtype.name}; crackd serves full-integer (uint8/int8) models only")
    floats = float_tensors(model)
    if floats:
        raise NotFullInteger(f"{entry.file}: {len(floats)} float32 tensors (e.g. {floats[0]!r}); re-export with full-integer INT8 quantization")


@dataclass
class LoadedBundle:
    """A verified bundle with both interpreters built and ready to run."""

    manifest: Manifest
    sha256: str
    classifier: object  # edge.runtime.TFLiteModel
    segmenter: object

    @property
    def version(self) -> str:
        return self.manifest.bundle_version


def load_bundle(bundle_dir: str | Path, runtime: str = "auto", threads: int = 1) -> LoadedBundle:
    """Verify a bundle completely (manifest, checksums, tensors, full-integer) and build its interpreters."""
    manifest = read_manifest(bundle_dir)
    verify_files(manifest)
    return load_verified(manifest, runtime, threads)


def load_verified(manifest: Manifest, runtime: str = "auto", threads: int = 1) -> LoadedBundle:
    """Build the interpreters of a bundle whose files `verify_files` has passed, and check their tensors."""
    from edge.runtime import RuntimeUnavailable, TFLiteModel

    models = {}
    for role, entry in manifest.models.items():
        path = manifest.path / entry.file
        try:
            model = TFLiteModel(path, runtime=runtime, threads=threads)
        except RuntimeUnavailable:
            raise
        except (ValueError, RuntimeError) as exc:
            raise NotTFLite(f"{path}: the runtime could not load it ({str(exc).splitlines()[0]})") from None
        check_model_tensors(entry, model)
        models[role] = model
    return LoadedBundle(manifest, manifest_sha256(manifest.path), models["classifier"], models["segmenter"])
