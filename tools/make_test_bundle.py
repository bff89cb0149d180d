#!/usr/bin/env python3
"""Build the checked-in test bundle tests/data/darkness-bundle (needs TensorFlow; run once, commit the result).

The "darkness" models of tests/helpers/bundle_factory.py (a dark pixel is a crack) converted to INT8 TFLite by the
trainer's own exporter. The bundle is committed (a few KB) so the device tests run on a device-only
install, without TensorFlow, and without rebuilding it at every test session:

    .venv/bin/python tools/make_test_bundle.py            # rewrites tests/data/darkness-bundle
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as `python tools/make_test_bundle.py`: put the repository root on sys.path so `edge`, `trainer` and
# `tests.helpers` import.
sys.path.insert(0, str(REPO))

OUT = REPO / "tests" / "data" / "darkness-bundle"


def main() -> int:
    from edge.engine.bundle import load_bundle
    from tests.helpers.bundle_factory import build_darkness_bundle

    tmp = OUT.with_name(OUT.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    build_darkness_bundle(tmp)
    load_bundle(tmp)  # the device's own loader accepts it
    shutil.rmtree(OUT, ignore_errors=True)
    tmp.rename(OUT)
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT.relative_to(REPO)} ({size / 1024:.1f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
