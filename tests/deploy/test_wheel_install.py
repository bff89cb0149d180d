"""A wheel of crackd carries the default bundle: installed outside
the source tree, `crackd infer` and `crackd run --demo` find it.

The wheel is built from exactly what `crack-deploy install` copies to a device and installed
with pip into a fresh virtual environment. crackd's dependencies (numpy, OpenCV, PyYAML,
paho-mqtt, the TFLite runtime) are not downloaded again: a .pth file in the new environment
points at the test interpreter's site-packages, which adds them to sys.path after the new
environment's own site-packages (and does not run that environment's editable-install hooks),
so `edge` and its bundle can only come from the wheel.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from deploy.cli import INSTALL_PAYLOAD
from tests.helpers import REPO, wait_until


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for rel in INSTALL_PAYLOAD:
        if (REPO / rel).is_dir():
            shutil.copytree(
                REPO / rel,
                src / rel,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "reference", "plots", "sweep"),
            )
        else:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(src)],
        check=True,
        timeout=120,
    )
    (wheel,) = (root / "dist").glob("crackd-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], check=True, timeout=120
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_test_dependencies.pth").write_text("".join(f"{d}\n" for d in deps))
    shutil.rmtree(src)  # nothing of the source tree is left to fall back on
    return venv


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CRACKD_BUNDLE", "CRACKD_STATE_DIR")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def test_installed_package_finds_its_bundle_inside_site_packages(wheel_venv, tmp_path):
    out = subprocess.run(
        [
            str(wheel_venv / "bin" / "python"),
            "-c",
            "import edge, edge.shipped as s; print(edge.__file__); print(s.SHIPPED_BUNDLE)",
        ],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    package, bundle = out.stdout.split()
    assert Path(package).is_relative_to(wheel_venv) and Path(bundle).is_relative_to(wheel_venv)
    assert (Path(bundle) / "manifest.json").is_file() and not (Path(bundle) / "reference").exists()


def test_installed_crackd_infers_a_golden_image_with_the_shipped_bundle(wheel_venv, tmp_path):
    manifest = json.loads((REPO / "models" / "default" / "manifest.json").read_text())
    sample = manifest["golden"]["samples"][0]
    image = tmp_path / "golden.png"
    shutil.copy(REPO / "models" / "default" / sample["image"], image)
    out = subprocess.run(
        [str(wheel_venv / "bin" / "crackd"), "infer", "--json", str(image)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    (row,) = [json.loads(line) for line in out.stdout.splitlines()]
    cls = manifest["models"]["classifier"]
    expected_score = (sample["classifier_output"] - cls["output"]["zero_point"]) * cls["output"]["scale"]
    assert row["score"] == pytest.approx(expected_score, abs=0.05)
    assert row["crack"] == (expected_score >= cls["threshold"])


def test_installed_crackd_runs_the_demo_on_the_shipped_bundle(wheel_venv, tmp_path):
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [str(wheel_venv / "bin" / "crackd"), "run", "--demo", "--state-dir", str(state)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def frames_flow():
            try:
                return json.loads((state / "status.json").read_text()).get("frames_processed", 0) > 0
            except (OSError, ValueError):
                return False

        wait_until(frames_flow, timeout=60, what="the installed demo daemon to process frames")
        status = json.loads((state / "status.json").read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert Path(status["bundle_path"]).is_relative_to(wheel_venv.resolve())
    assert (
        status["bundle_version"]
        == json.loads((REPO / "models" / "default" / "manifest.json").read_text())["bundle_version"]
    )
