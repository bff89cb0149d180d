"""Shared fixtures. Each area appends its own below; keep fixtures real (real files, real processes)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_BUNDLE = REPO / "models" / "default"


@pytest.fixture(scope="session")
def darkness_bundle(tmp_path_factory) -> Path:
    """A real INT8 bundle whose models flag dark pixels (see tests/bundle_factory.py)."""
    from bundle_factory import build_darkness_bundle

    return build_darkness_bundle(tmp_path_factory.mktemp("bundles") / "darkness")


@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    """A private copy of the shipped default bundle that a test may damage."""
    dst = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, dst)
    return dst
