"""Build hook: ship the default model bundle inside the `edge` package.

The repository keeps the bundle at models/default, where the trainer writes it and
reviewers read it. A wheel (and so every non-editable install) carries the files a
device needs (manifest, models, golden samples, optional signature, report) as
package data at edge/bundled/default, where `edge.shipped` finds them with
importlib.resources. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = Path(__file__).resolve().parent / "models" / "default"
PACKAGE_DIR = ("edge", "bundled", "default")
# The files a device uses; reference/ (FP32), plots/ and sweep/ stay in the repository.
PATTERNS = ("manifest.json", "manifest.json.sig", "*.tflite", "REPORT.md", "golden/*")


class BuildPyWithBundle(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install finds models/default beside the package
        if not (SOURCE / "manifest.json").is_file():
            raise SystemExit(f"{SOURCE}: no default bundle (manifest.json) to ship in the package")
        target = Path(self.build_lib, *PACKAGE_DIR)
        shutil.rmtree(target, ignore_errors=True)
        for pattern in PATTERNS:
            for path in SOURCE.glob(pattern):
                dest = target / path.relative_to(SOURCE)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)


setup(cmdclass={"build_py": BuildPyWithBundle})
