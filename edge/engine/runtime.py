"""One loader for the TFLite runtimes a device may have, and a thin model wrapper.

Preference (`auto`): LiteRT (`ai_edge_litert`), then `tflite_runtime`, then
`tensorflow.lite` (host convenience only; the device never needs TensorFlow).
The interpreter is built once per model, with XNNPACK, and reused every frame.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from edge.vocabulary import RUNTIME_CHOICES, RuntimeName

RUNTIMES: dict[RuntimeName, tuple[str, str]] = {  # name -> (module, attribute holding the Interpreter class)
    "ai-edge-litert": ("ai_edge_litert.interpreter", "Interpreter"),
    "tflite-runtime": ("tflite_runtime.interpreter", "Interpreter"),
    "tensorflow": ("tensorflow", "lite.Interpreter"),
}


# LiteRT and tflite-runtime print this from C++ to the process's stderr the first time a process creates an
# interpreter with XNNPACK: their minimum log level is compiled in at INFO (TF_CPP_MIN_LOG_LEVEL does not reach it),
# so every `crackd` command and every daemon start said it. Only this exact line is dropped (see _without_notice).
XNNPACK_NOTICE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
_notice = {"seen": False}  # printed once per process: after that, nothing is filtered
_notice_lock = threading.Lock()


def _holding_file() -> IO[bytes]:
    """A file in memory (memfd, Linux) where there is one, so a full or read-only disk cannot lose what it holds."""
    if hasattr(os, "memfd_create"):
        return os.fdopen(os.memfd_create("crackd-stderr"), "w+b")
    return tempfile.TemporaryFile()


@contextmanager
def _without_notice(notice: bytes = XNNPACK_NOTICE) -> Iterator[None]:
    """Hold what is written to fd 2 meanwhile, then pass it on without `notice` (errors and warnings get through).

    Other threads' stderr lines written meanwhile are delayed by the model load, not lost.
    """
    with _notice_lock:
        if _notice["seen"]:
            yield
            return
        sys.stderr.flush()
        try:
            held = _holding_file()
        except OSError:  # nowhere to hold it: the notice is printed, nothing is lost
            yield
            return
        with held:
            try:
                saved = os.dup(2)
            except OSError:  # no stderr to filter
                yield
                return
            os.dup2(held.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                held.seek(0)
                text = held.read()
                if notice in text:
                    _notice["seen"] = True
                    text = text.replace(notice, b"", 1)
                if text:
                    os.write(2, text)


class RuntimeUnavailable(RuntimeError):
    """No usable TFLite runtime; the message says what to install."""


def load_interpreter_class(preference: str = "auto") -> tuple[str, type]:
    """Return (runtime name, Interpreter class) for `preference` (`auto` or one of RUNTIMES)."""
    preference = os.environ.get("CRACKD_RUNTIME", preference) if preference == "auto" else preference
    if preference not in RUNTIME_CHOICES:
        raise RuntimeUnavailable(f"unknown runtime {preference!r}; expected one of {', '.join(RUNTIME_CHOICES)}")
    names = list(RUNTIMES) if preference == "auto" else [preference]
    errors = []
    for name in names:
        module_name, attribute = RUNTIMES[name]
        try:
            found: Any = importlib.import_module(module_name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
            continue
        for part in attribute.split("."):
            found = getattr(found, part)
        return name, found
    hint = "pip install ai-edge-litert (or tflite-runtime on Raspberry Pi OS Bookworm with numpy<2)"
    raise RuntimeUnavailable(f"no TFLite runtime could be imported ({'; '.join(errors)}); {hint}")


@dataclass(frozen=True)
class TensorInfo:
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int


class TFLiteModel:
    """A loaded model with one input and one output tensor, run in place.

    `input_view()` gives a writable numpy view of the input tensor so
    preprocessing can resize straight into it (no intermediate copy). The view
    must be released (dropped) before `invoke()`, as the runtimes require.
    """

    def __init__(
        self, path: str | Path | None = None, *, content: bytes | None = None, runtime: str = "auto", threads: int = 1
    ):
        self.runtime, interpreter_cls = load_interpreter_class(runtime)
        self.threads = threads
        kwargs = {"num_threads": threads}
        with _without_notice():
            if content is not None:
                self._interpreter = interpreter_cls(model_content=content, **kwargs)
            else:
                self._interpreter = interpreter_cls(model_path=str(path), **kwargs)
            self._interpreter.allocate_tensors()
        (inp,) = self._interpreter.get_input_details()
        (out,) = self._interpreter.get_output_details()
        self.input = _tensor_info(inp)
        self.output = _tensor_info(out)
        self._input_tensor = self._interpreter.tensor(self.input.index)
        self._output_tensor = self._interpreter.tensor(self.output.index)

    @property
    def input_hw(self) -> tuple[int, int]:
        return int(self.input.shape[1]), int(self.input.shape[2])

    def input_view(self) -> np.ndarray:
        """Writable HxWxC view of the input tensor (batch axis dropped)."""
        return self._input_tensor()[0]

    def invoke(self) -> np.ndarray:
        """Run the model on what was written into the input view;
        returns a copy of the raw output (batch axis dropped)."""
        self._interpreter.invoke()
        return self._output_tensor()[0].copy()

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Copy `tensor` (HxWxC, input dtype) in and run."""
        view = self.input_view()
        np.copyto(view, tensor, casting="no")
        del view
        return self.invoke()

    def tensor_details(self) -> list[dict]:
        return self._interpreter.get_tensor_details()


def _tensor_info(d: dict) -> TensorInfo:
    scale, zero_point = d.get("quantization", (0.0, 0))
    return TensorInfo(
        int(d["index"]), tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]), float(scale), int(zero_point)
    )


def float_tensors(model: TFLiteModel) -> list[str]:
    """Names of float32 tensors that carry activations (a full-integer model has none)."""
    return [t["name"] for t in model.tensor_details() if np.dtype(t["dtype"]) == np.float32]
