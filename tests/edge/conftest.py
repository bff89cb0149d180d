"""Fixtures of the device tests: the darkness test bundle, a TLS broker, a recording MQTT subscriber, the payload
schemas and a small real file system to fill. Nothing here imports TensorFlow (a device-only install runs these)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers.disk import mount_tmpfs, unmount
from tests.helpers.mqtt import Broker, Subscriber, make_test_ca
from tests.helpers.paths import DEFAULT_BUNDLE, SCHEMAS, TEST_BUNDLE


@pytest.fixture(scope="session")
def darkness_bundle(tmp_path_factory) -> Path:
    """A real INT8 bundle whose models flag dark pixels (tests/data/darkness-bundle; a private copy per session)."""
    dst = tmp_path_factory.mktemp("bundles") / "darkness"
    shutil.copytree(TEST_BUNDLE, dst)
    return dst


@pytest.fixture
def state(tmp_path) -> Path:
    """An empty device state directory."""
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    """A private copy of the shipped default bundle that a test may damage."""
    dst = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, dst)
    return dst


# --------------------------------------------------------------------------- MQTT with TLS, and what arrives


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    """A throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate (openssl, EC P-256)."""
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def tls_broker(tmp_path, test_ca):
    """mosquitto requiring TLS with a client certificate from the test CA and user `crackd` / password `s3cret`."""
    broker = Broker(tmp_path / "tls-broker", tls=test_ca, password=("crackd", "s3cret")).start()
    broker.user, broker.password = "crackd", "s3cret"
    yield broker
    broker.kill()


@pytest.fixture
def subscriber_factory():
    """Factory: subscriber_factory(port, topic=..., tls=...,
    auth=...) -> a connected Subscriber, closed after the test."""
    made = []

    def make(port, **kwargs) -> Subscriber:
        sub = Subscriber(port, **kwargs)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


@pytest.fixture(scope="session")
def schemas():
    """The MQTT payload JSON Schemas from docs/schemas, by topic name."""
    return {p.name.split(".")[0]: json.loads(p.read_text()) for p in SCHEMAS.glob("*.schema.json")}


# --------------------------------------------------------------------------- full and read-only disks


@pytest.fixture
def small_fs(tmp_path):
    """An 8 MB tmpfs mounted under tmp_path (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    mount_tmpfs(mnt, "8m")
    try:
        yield mnt
    finally:
        unmount(mnt)
