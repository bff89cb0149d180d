"""Where the default model bundle shipped with crackd is: one definition for every command.

An installed wheel carries it as package data (edge/bundled/default, put there by
setup.py's build hook) and importlib.resources finds it wherever site-packages is.
A source checkout or editable install has it at models/default beside the package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

REPOSITORY_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "default"


def _shipped_bundle() -> Path:
    packaged = Path(str(resources.files("edge").joinpath("bundled", "default")))
    return packaged if (packaged / "manifest.json").is_file() else REPOSITORY_BUNDLE


SHIPPED_BUNDLE = _shipped_bundle()
