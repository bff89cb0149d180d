"""The installer's runtime choice per architecture and Python (deploy/runtime_choice.sh, run for real),
and the `edge` extra in pyproject.toml choosing the same runtime (its markers evaluated for each case)."""

import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement

from tests.helpers import REPO

SCRIPT = REPO / "deploy" / "runtime_choice.sh"


def choose(arch: str, python: str, want: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), arch, python, *([want] if want else [])], capture_output=True, text=True, timeout=10
    )


@pytest.mark.parametrize(
    "arch, python, expected",
    [
        ("aarch64", "3.11", ["ai-edge-litert", "tflite-runtime"]),  # Raspberry Pi OS Bookworm 64-bit
        ("aarch64", "3.13", ["ai-edge-litert"]),  # Trixie 64-bit: tflite-runtime has no wheel
        ("x86_64", "3.11", ["ai-edge-litert", "tflite-runtime"]),
        ("x86_64", "3.12", ["ai-edge-litert"]),
        ("armv7l", "3.11", ["tflite-runtime"]),  # Bookworm 32-bit: no LiteRT wheel
    ],
)
def test_litert_first_wherever_it_has_a_wheel(arch, python, expected):
    out = choose(arch, python)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == expected


@pytest.mark.parametrize("arch, python", [("armv7l", "3.13"), ("riscv64", "3.11"), ("aarch64", "3.10")])
def test_no_runtime_is_one_line_and_exit_1(arch, python):
    out = choose(arch, python)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and python in out.stderr


def test_a_runtime_asked_for_by_name_has_no_fallback():
    assert choose("aarch64", "3.11", "tflite-runtime").stdout.split() == ["tflite-runtime"]
    refused = choose("aarch64", "3.13", "tflite-runtime")
    assert refused.returncode == 1 and "tflite-runtime" in refused.stderr


def test_bad_arguments_are_refused():
    assert choose("aarch64", "eleven").returncode == 1
    assert choose("aarch64", "3.11", "tensorflow").returncode == 1


def _extra_runtimes(extra: str, arch: str, python: str) -> list[str]:
    requirements = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][extra]
    env = {
        "platform_machine": arch,
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
    }
    names = [Requirement(r) for r in requirements]
    return [
        r.name
        for r in names
        if r.name in ("ai-edge-litert", "tflite-runtime") and (r.marker is None or r.marker.evaluate(env))
    ]


@pytest.mark.parametrize(
    "arch, python", [("aarch64", "3.11"), ("aarch64", "3.13"), ("x86_64", "3.12"), ("armv7l", "3.11")]
)
def test_the_edge_extra_installs_the_installers_first_choice(arch, python):
    assert _extra_runtimes("edge", arch, python) == [choose(arch, python).stdout.split()[0]]


def test_the_tflite_extra_pins_numpy_and_opencv_below_their_numpy_2_releases():
    requirements = [
        Requirement(r)
        for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["edge-tflite"]
    ]
    pins = {r.name: r.specifier for r in requirements}
    assert not pins["numpy"].contains("2.0.0") and pins["numpy"].contains("1.24.2")  # Bookworm's numpy
    assert not pins["opencv-python-headless"].contains("4.12.0.88") and pins["opencv-python-headless"].contains(
        "4.11.0.86"
    )
