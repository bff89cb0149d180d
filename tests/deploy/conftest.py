"""Fixtures of the deploy tests: a real sshd on loopback, standing in for a Raspberry Pi reached over SSH."""

from __future__ import annotations

import pytest

from tests.helpers.sshd import start_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1:<free port>, root login with a
    throwaway key; a client ssh_config naming it `pi-under-test`."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
