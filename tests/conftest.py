"""Session-wide set-up and the fixtures more than one area uses; each area's own fixtures are in its conftest.py.

Keep fixtures real (real files, real processes); the plain helpers behind them are in tests/helpers/.
"""

from __future__ import annotations

import os

import pytest

from tests.helpers.bundles import copy_default_bundle, make_signer_keys
from tests.helpers.mqtt import Broker

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

if os.environ.get("CRACKD_TEST_WITHOUT_TENSORFLOW"):
    # Run the suite as on a device-only install (`pip install .[edge]`): TensorFlow and Keras cannot be
    # imported, and the tests that need them are skipped by their own importorskip.
    from tests.helpers.without_tensorflow import block

    block()


# ------------------------------------------------------------------------ MQTT (edge outputs and daemon, the installer)


@pytest.fixture
def mosquitto(tmp_path):
    """A running plain-TCP, anonymous mosquitto; `.port`, `.stop()`, `.kill()`, `.start()`."""
    broker = Broker(tmp_path / "broker").start()
    yield broker
    broker.kill()


# --------------------------------------------------------------------------- model releases, signing, deploy
# (edge/releases/manager.py, edge/releases/signing.py, deploy/): throwaway OpenSSH keys and modified copies of the
# shipped bundle.


@pytest.fixture(scope="session")
def signer_keys(tmp_path_factory):
    """Two throwaway ed25519 keys: `trusted` is listed in `allowed_signers`, `stranger` is not."""
    return make_signer_keys(tmp_path_factory.mktemp("signers"))


@pytest.fixture
def make_bundle(tmp_path):
    """Factory: make_bundle(suffix, edit=None, sign=None) -> a
    changed copy of the shipped bundle (see copy_default_bundle).

    Versions are the shipped bundle's version plus `-suffix`, so nothing depends on which bundle is shipped.
    """
    made = []

    def make(suffix: str, edit=None, sign=None):
        made.append(suffix)
        return copy_default_bundle(tmp_path / f"bundle-{suffix}-{len(made)}", suffix, edit, sign)

    return make
