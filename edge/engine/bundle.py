"""The model bundle: the one definition of what a valid bundle is.

A bundle is a directory with `manifest.json`, `classifier.tflite`,
`segmenter.tflite`, `golden/` sample images with the outputs recorded at export,
and optionally `manifest.json.sig` and `reference/` (FP32 models for
comparison). The trainer writes it, the deploy tool checks it before copying,
the device checks it before serving: all through this module.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge import __version__

if TYPE_CHECKING:
    from edge.engine.runtime import TFLiteModel

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
MODEL_ROLES = ("classifier", "segmenter")
TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier at bytes 4..8 of every .tflite file
FULL_INTEGER_DTYPES = {"uint8", "int8"}
# Caps on what is read before (or without) a size in the manifest: a manifest or signature is a few KB.
MAX_MANIFEST_BYTES = 4 << 20
MAX_SIGNATURE_BYTES = 64 << 10
MAX_UNDECLARED_FILE_BYTES = 64 << 20  # golden samples carry no size in older manifests
MAX_NAME_LENGTH = 255


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


class UnsafePath(BundleError):
    """A manifest name or bundle member that is not a plain file
    inside the bundle (absolute, `..`, symlink, FIFO ...)."""


# --------------------------------------------------------------------------- members: plain files inside the bundle


def check_member_name(name: object, where: str) -> str:
    """The one rule for names in a manifest: a plain relative name inside the bundle.

    Components separated by `/`, none empty, `.` or `..`; no backslash or NUL;
    not absolute. The trainer writes only such names, the deploy tool and the
    device refuse anything else before reading a single listed file.
    """
    if not (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME_LENGTH
        and not name.startswith("/")
        and "\\" not in name
        and "\0" not in name
        and all(part not in ("", ".", "..") for part in name.split("/"))
    ):
        raise UnsafePath(f"{where}: {name!r} is not a plain relative name inside the bundle")
    return name


def open_member(bundle_dir: str | Path, name: str) -> int:
    """Open bundle member `name` read-only without following any symlink on the way; returns the fd.

    Only regular files are opened (a FIFO or device is refused without blocking).
    Raises ModelFileMissing when absent and UnsafePath for symlinks or special files.
    """
    where = Path(bundle_dir) / name
    check_member_name(name, str(where))
    parts = name.split("/")
    try:
        dir_fd = os.open(bundle_dir, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise BundleNotFound(f"{bundle_dir}: no such bundle directory") from None
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            except FileNotFoundError:
                raise ModelFileMissing(f"{where}: missing") from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(
                        f"{where}: {part} is not a plain directory (symbolic link?); bundles hold plain files only"
                    ) from None
                raise
            os.close(dir_fd)
            dir_fd = next_fd
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            raise ModelFileMissing(f"{where}: missing") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(f"{where}: a symbolic link; bundles hold plain files only") from None
            raise
    finally:
        os.close(dir_fd)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise UnsafePath(f"{where}: not a regular file ({kind}); bundles hold plain files only")
    os.set_blocking(fd, True)
    return fd


def read_member(bundle_dir: str | Path, name: str, limit: int) -> bytes:
    """The whole content of a small member (manifest, signature), refused beyond `limit` bytes."""
    fd = open_member(bundle_dir, name)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UnsafePath(f"{Path(bundle_dir) / name}: larger than {limit} bytes; not a crackd {name}")
    return data


def member_exists(bundle_dir: str | Path, name: str) -> bool:
    """Whether `name` is present in the bundle at all (a symlink or FIFO counts: opening it is refused later)."""
    return os.path.lexists(Path(bundle_dir) / name)


@dataclass(frozen=True)
class MemberFile:
    """A file the manifest lists, with the checksum and (where the manifest says) the size it must have."""

    name: str
    sha256: str | None
    size: int | None
    what: str  # "classifier model", "golden sample" ...


def _hash_fd(fd: int, where: Path, size: int | None, sink=None) -> str:
    """sha256 of an open member, refusing a size other than the manifest's (checked before reading) or above the cap."""
    st_size = os.fstat(fd).st_size
    if size is not None and st_size != size:
        raise ChecksumMismatch(f"{where}: {st_size} bytes, the manifest says {size} (corrupted or altered copy)")
    limit = size if size is not None else MAX_UNDECLARED_FILE_BYTES
    if st_size > limit:
        raise UnsafePath(
            f"{where}: {st_size} bytes, more than the {limit} bytes "
            "a bundle file may have without a size in the manifest"
        )
    h = hashlib.sha256()
    seen = 0
    with os.fdopen(fd, "rb", closefd=False) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            seen += len(block)
            if seen > limit:
                raise ChecksumMismatch(f"{where}: grew past {limit} bytes while being read")
            h.update(block)
            if sink is not None:
                sink(block)
    return h.hexdigest()


def check_member(bundle_dir: str | Path, member: MemberFile, sink=None) -> None:
    """Open a listed file safely, check its size, hash it (feeding `sink` each block, e.g. a copy) and compare."""
    where = Path(bundle_dir) / member.name
    fd = open_member(bundle_dir, member.name)
    try:
        actual = _hash_fd(fd, where, member.size, sink)
    finally:
        os.close(fd)
    if member.sha256 is not None and actual != member.sha256:
        # The file's own hash is not printed: it says nothing useful and could describe a file that is not ours.
        raise ChecksumMismatch(
            f"{where}: sha256 does not match the manifest's {member.sha256[:12]}... (corrupted or altered copy)"
        )


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
    def from_dict(cls, d: dict, where: str) -> TensorSpec:
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

    @property
    def gate_threshold(self) -> float:
        """The classifier score at which a frame is segmented (and can be a crack, once the segmenter confirms):
        the classifier's `gate_threshold`, a high-recall threshold bundles may set apart from the one chosen for
        the classifier alone; bundles without one (1.0.0, 1.1.0) gate at their classifier `threshold`."""
        gate = self.classifier.raw.get("gate_threshold")
        return self.classifier.threshold if gate is None else float(gate)


def _require(d: dict, key: str, where: str, kind=None):
    if key not in d:
        raise ManifestInvalid(f"{where}: missing key {key!r}")
    value = d[key]
    if kind is not None and not isinstance(value, kind):
        raise ManifestInvalid(
            f"{where}.{key}: expected {kind.__name__ if isinstance(kind, type) else kind}, got {type(value).__name__}"
        )
    return value


def bundle_origin(raw: dict) -> dict | None:
    """Where a site bundle came from: `base` (bundle_version, manifest_sha256) and `site` (name, image count,
    SHA-256 of its labelled images, threshold), as `crack-train export --keep-from` records them for a segmenter
    adapted with `crack-train adapt`; None for bundles without them (generic and older ones)."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return None
    origin = {key: data[key] for key in ("base", "site") if isinstance(data.get(key), dict)}
    if "site" in origin:  # the per-image digests stay in the manifest; the whole-set digest says enough here
        origin["site"] = {k: v for k, v in origin["site"].items() if k != "files"}
    return origin or None


def read_manifest(bundle_dir: str | Path) -> Manifest:
    """Parse and structurally validate `manifest.json` (no file checks)."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST
    if not bundle_dir.is_dir():
        raise BundleNotFound(f"{bundle_dir}: no such bundle directory")
    if not member_exists(bundle_dir, MANIFEST):
        raise BundleNotFound(f"{bundle_dir}: no {MANIFEST}; is this a model bundle directory?")
    try:
        raw = json.loads(read_member(bundle_dir, MANIFEST, MAX_MANIFEST_BYTES))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestInvalid(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ManifestInvalid(f"{path}: expected a JSON object")
    schema = _require(raw, "schema_version", str(path), int)
    if schema != SCHEMA_VERSION:
        raise UnsupportedSchema(
            f"{path}: manifest schema_version {schema} is not supported "
            f"(this crackd {__version__} reads schema {SCHEMA_VERSION})"
        )
    min_version = str(_require(raw, "min_crackd_version", str(path), str))
    if parse_version(min_version) > parse_version(__version__):
        raise NeedsNewerCrackd(
            f"{bundle_dir}: bundle needs crackd >= {min_version}, this is crackd {__version__}; upgrade crackd first"
        )
    models_raw = _require(raw, "models", str(path), dict)
    models = {}
    for role in MODEL_ROLES:
        where = f"{path}: models.{role}"
        entry = models_raw.get(role)
        if not isinstance(entry, dict):
            raise ManifestInvalid(f"{where}: missing or not an object")
        check_member_name(_require(entry, "file", where, str), f"{where}.file")
        reference = entry.get("reference")
        if isinstance(reference, dict) and "file" in reference:
            check_member_name(reference["file"], f"{where}.reference.file")
        if "bytes" in entry and (
            not isinstance(entry["bytes"], int) or isinstance(entry["bytes"], bool) or entry["bytes"] < 0
        ):
            raise ManifestInvalid(f"{where}.bytes: expected a size in bytes, got {entry['bytes']!r}")
        gate = entry.get("gate_threshold")
        if gate is not None and (not isinstance(gate, (int, float)) or isinstance(gate, bool) or not 0 <= gate <= 1):
            raise ManifestInvalid(f"{where}.gate_threshold: expected a score from 0 to 1 (or absent), got {gate!r}")
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
    golden = raw.get("golden", {})
    samples = golden.get("samples", []) if isinstance(golden, dict) else None
    if not isinstance(samples, list) or not all(isinstance(sample, dict) for sample in samples):
        raise ManifestInvalid(f"{path}: golden.samples: expected a list of objects")
    for i, sample in enumerate(samples):
        for key in ("image", "segmenter_output"):
            if sample.get(key) is not None:
                check_member_name(sample[key], f"{path}: golden.samples[{i}].{key}")
    return Manifest(
        path=bundle_dir,
        schema_version=schema,
        bundle_version=str(_require(raw, "bundle_version", str(path), str)),
        created=str(raw.get("created", "")),
        min_crackd_version=min_version,
        models=models,
        golden=golden,
        raw=raw,
    )


def listed_files(manifest: Manifest) -> list[MemberFile]:
    """The files a device needs, as the manifest lists them: both models and the golden samples.

    The FP32 references (`reference/`) are for evaluation on the bench and are not installed on devices.
    """
    out = []
    for entry in manifest.models.values():
        size = entry.raw.get("bytes")
        out.append(MemberFile(entry.file, entry.sha256, size if isinstance(size, int) else None, f"{entry.role} model"))
    for sample in manifest.golden.get("samples", []):
        for key, sha_key, size_key in (
            ("image", "sha256", "bytes"),
            ("segmenter_output", "segmenter_output_sha256", "segmenter_output_bytes"),
        ):
            if sample.get(key) is not None:
                size = sample.get(size_key)
                out.append(
                    MemberFile(
                        sample[key], sample.get(sha_key), size if isinstance(size, int) else None, "golden sample"
                    )
                )
    return out


def check_model_headers(manifest: Manifest) -> None:
    """Each model file starts as a TFLite flatbuffer does (after `verify_files`/a checked copy)."""
    for entry in manifest.models.values():
        fd = open_member(manifest.path, entry.file)
        with os.fdopen(fd, "rb") as fh:
            head = fh.read(8)
        if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
            raise NotTFLite(f"{manifest.path / entry.file}: not a TFLite model (no TFL3 flatbuffer identifier)")


def verify_files(manifest: Manifest) -> None:
    """Check every listed file is a plain file in the bundle with its size and sha256; models are TFLite flatbuffers."""
    for member in listed_files(manifest):
        try:
            check_member(manifest.path, member)
        except ModelFileMissing:
            if member.what == "golden sample":
                raise ModelFileMissing(
                    f"{manifest.path / member.name}: golden sample file listed in the manifest is missing"
                ) from None
            raise ModelFileMissing(
                f"{manifest.path / member.name}: {member.what.replace(' model', '')} model file is missing"
            ) from None
    check_model_headers(manifest)


def manifest_sha256(bundle_dir: str | Path) -> str:
    """The identity of a bundle: the sha256 of its manifest (which pins every file's sha256)."""
    return hashlib.sha256(read_member(bundle_dir, MANIFEST, MAX_MANIFEST_BYTES)).hexdigest()


def check_model_tensors(entry: ModelEntry, model) -> None:
    """Compare a loaded TFLiteModel's I/O with the manifest and require a full-integer graph."""
    from edge.engine.runtime import float_tensors

    for name, spec, actual in (("input", entry.input, model.input), ("output", entry.output, model.output)):
        if tuple(actual.shape) != spec.shape:
            raise TensorMismatch(f"{entry.file}: {name} shape {list(actual.shape)} != manifest {list(spec.shape)}")
        if actual.dtype.name != spec.dtype:
            raise TensorMismatch(f"{entry.file}: {name} dtype {actual.dtype.name} != manifest {spec.dtype}")
        if not np.isclose(actual.scale, spec.scale, rtol=1e-5, atol=1e-9) or actual.zero_point != spec.zero_point:
            raise TensorMismatch(
                f"{entry.file}: {name} quantization ({actual.scale:g}, "
                f"{actual.zero_point}) != manifest ({spec.scale:g}, {spec.zero_point})"
            )
        if actual.dtype.name not in FULL_INTEGER_DTYPES:
            raise NotFullInteger(
                f"{entry.file}: {name} tensor is {actual.dtype.name}; "
                "crackd serves full-integer (uint8/int8) models only"
            )
    floats = float_tensors(model)
    if floats:
        raise NotFullInteger(
            f"{entry.file}: {len(floats)} float32 tensors (e.g. "
            f"{floats[0]!r}); re-export with full-integer INT8 quantization"
        )


@dataclass
class LoadedBundle:
    """A verified bundle with both interpreters built and ready to run."""

    manifest: Manifest
    sha256: str
    classifier: TFLiteModel
    segmenter: TFLiteModel

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
    from edge.engine.runtime import RuntimeUnavailable, TFLiteModel

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
