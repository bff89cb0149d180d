"""Bundle verification: every way a bundle can be unfit to serve gives its own one-line error."""

import json
import shutil

import numpy as np
import pytest

from edge import bundle as B
from edge.runtime import RuntimeUnavailable, load_interpreter_class


def edit_manifest(bundle_dir, change):
    path = bundle_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_shipped_default_bundle_loads_and_is_full_integer():
    loaded = B.load_bundle(B.Path(__file__).resolve().parent.parent / "models" / "default")
    for model in (loaded.classifier, loaded.segmenter):
        assert model.input.dtype == np.uint8 and model.output.dtype == np.uint8
    assert len(loaded.sha256) == 64


def test_missing_bundle_directory(tmp_path):
    with pytest.raises(B.BundleNotFound, match="no such bundle directory"):
        B.load_bundle(tmp_path / "nope")


def test_missing_model_file(bundle_copy):
    (bundle_copy / "segmenter.tflite").unlink()
    with pytest.raises(B.ModelFileMissing, match="segmenter model file is missing"):
        B.load_bundle(bundle_copy)


def test_checksum_mismatch(bundle_copy):
    path = bundle_copy / "classifier.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(B.ChecksumMismatch, match="does not match the manifest"):
        B.load_bundle(bundle_copy)


def _replace_model(bundle_dir, role, content: bytes):
    (bundle_dir / f"{role}.tflite").write_bytes(content)
    edit_manifest(bundle_dir, lambda m: m["models"][role].update(sha256=B.sha256_file(bundle_dir / f"{role}.tflite")))


def test_non_tflite_file(bundle_copy):
    _replace_model(bundle_copy, "classifier", b"this is a JPEG, honest" * 10)
    with pytest.raises(B.NotTFLite, match="not a TFLite model"):
        B.load_bundle(bundle_copy)


def test_truncated_tflite_file(bundle_copy):
    content = (bundle_copy / "segmenter.tflite").read_bytes()
    _replace_model(bundle_copy, "segmenter", content[: len(content) // 3])
    with pytest.raises(B.NotTFLite, match="could not load"):
        B.load_bundle(bundle_copy)


def test_wrong_input_shape_in_manifest(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m["models"]["classifier"]["input"].update(shape=[1, 7, 7, 3]))
    with pytest.raises(B.TensorMismatch, match=r"input shape .* != manifest \[1, 7, 7, 3\]"):
        B.load_bundle(bundle_copy)


def test_float_model_is_refused(bundle_copy):
    fp32 = (bundle_copy / "reference" / "classifier.fp32.tflite").read_bytes()
    _replace_model(bundle_copy, "classifier", fp32)
    edit_manifest(bundle_copy, lambda m: m["models"]["classifier"]["input"].update(dtype="float32", scale=0.0, zero_point=0))
    edit_manifest(bundle_copy, lambda m: m["models"]["classifier"]["output"].update(dtype="float32", scale=0.0, zero_point=0))
    with pytest.raises(B.NotFullInteger, match="full-integer"):
        B.load_bundle(bundle_copy)


def test_unknown_schema_version(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m.update(schema_version=99))
    with pytest.raises(B.UnsupportedSchema, match="schema_version 99 is not supported"):
        B.load_bundle(bundle_copy)


def test_bundle_needing_newer_crackd(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m.update(min_crackd_version="99.0.0"))
    with pytest.raises(B.NeedsNewerCrackd, match="needs crackd >= 99.0.0"):
        B.load_bundle(bundle_copy)


def test_manifest_that_is_not_json(bundle_copy):
    (bundle_copy / "manifest.json").write_text("{ not json")
    with pytest.raises(B.ManifestInvalid, match="not valid JSON"):
        B.load_bundle(bundle_copy)


def test_manifest_missing_a_key_names_it(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m["models"]["segmenter"].pop("threshold"))
    with pytest.raises(B.ManifestInvalid, match="models.segmenter: missing key 'threshold'"):
        B.load_bundle(bundle_copy)


def test_missing_golden_file(bundle_copy):
    shutil.rmtree(bundle_copy / "golden")
    with pytest.raises(B.ModelFileMissing, match="golden sample"):
        B.load_bundle(bundle_copy)


def test_runtime_auto_prefers_litert():
    name, cls = load_interpreter_class("auto")
    assert name == "ai-edge-litert" and cls.__name__ == "Interpreter"


def test_runtime_that_is_not_installed_says_what_to_install():
    with pytest.raises(RuntimeUnavailable, match="pip install"):
        load_interpreter_class("tflite-runtime")


def test_runtime_from_environment(monkeypatch):
    pytest.importorskip("tensorflow")  # the runtime named here: absent on a device-only install
    monkeypatch.setenv("CRACKD_RUNTIME", "tensorflow")
    name, _ = load_interpreter_class("auto")
    assert name == "tensorflow"


def test_no_runtime_at_all(monkeypatch):
    """With every runtime module unimportable, loading fails with one clear error."""
    import sys

    for module in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter", "tensorflow"):
        monkeypatch.setitem(sys.modules, module, None)  # None in sys.modules makes `import` raise ImportError
    with pytest.raises(RuntimeUnavailable, match="no TFLite runtime could be imported"):
        load_interpreter_class("auto")


def test_unknown_runtime_name():
    with pytest.raises(RuntimeUnavailable, match="unknown runtime 'onnx'"):
        load_interpreter_class("onnx")
