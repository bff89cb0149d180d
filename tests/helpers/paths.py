"""Where things are in the checkout: the repository root, the shipped bundle, the checked-in test bundle.

Tests run code as child processes from the repository root (`cwd=REPO`), read documents (docs/, config/) and copy
bundles; one definition keeps them independent of how deep a test file sits under tests/.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = REPO / "models" / "default"
# The "darkness" test bundle, checked in (15 KB) so the device tests need no TensorFlow: made once by
# tools/make_test_bundle.py from tests/helpers/bundle_factory.py with the trainer's own INT8 exporter.
TEST_BUNDLE = REPO / "tests" / "data" / "darkness-bundle"
SCHEMAS = REPO / "docs" / "schemas"
