"""`crack-train reference-model`: the model `crackd bench
--reference` states speed against is the same on every host."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.engine.runtime import TFLiteModel, float_tensors
from tests.helpers import REPO


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory) -> Path:
    """A small reference (alpha 0.35, 32x32) made by the real
    command: the same graph as the 224x224 one, made faster."""
    out = tmp_path_factory.mktemp("reference") / "ref-0.35-32.tflite"
    subprocess.run(
        [sys.executable, "-m", "trainer.cli", "reference-model", "--out", str(out), "--alpha", "0.35", "--size", "32"],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def test_reference_model_is_full_integer_with_uint8_io(small_reference):
    model = TFLiteModel(small_reference)
    assert model.input.shape == (1, 32, 32, 3) and model.input.dtype == np.uint8
    assert (model.input.scale, model.input.zero_point) == (1.0, 0)  # camera bytes go in unchanged
    assert model.output.shape == (1, 1000) and model.output.dtype == np.uint8
    assert float_tensors(model) == []


def test_reference_model_is_reproduced_byte_for_byte(small_reference):
    pytest.importorskip("tensorflow")  # rebuilding the reference model needs the trainer
    from trainer.export.reference import reference_tflite

    again = reference_tflite(alpha=0.35, size=32)  # in this process, the fixture's in another
    assert hashlib.sha256(again).hexdigest() == hashlib.sha256(small_reference.read_bytes()).hexdigest()
