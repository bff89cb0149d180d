"""`sudo crackd models ...` on an installed device leaves everything it makes to the service user.

The installer's layout (deploy/install.sh): the state directory belongs to the service user and its group, mode 0750;
root runs `crackd models stage/activate/rollback` (crack-deploy over SSH with sudo, or install.sh itself). Here the
service user is a throwaway uid with no passwd entry, and the state directory lives outside pytest's root-only temp
directory so that uid can reach it, as it reaches /var/lib/crackd.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.helpers.releases import crackd_models, device_config, version_of

SERVICE_UID = SERVICE_GID = 54_321

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="running crackd models as root needs root")


@pytest.fixture
def device_dir():
    """A world-traversable directory (like /var/lib) for the state directory and the uploaded bundles."""
    d = Path(tempfile.mkdtemp(prefix="crackd-owner-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def installed_state(device_dir: Path) -> Path:
    """`install -d -m 0750 -o crackd -g crackd /var/lib/crackd`."""
    state = device_dir / "state"
    state.mkdir(mode=0o750)
    os.chown(state, SERVICE_UID, SERVICE_GID)
    return state


def upload(bundle: Path, device_dir: Path) -> Path:
    """What crack-deploy's rsync --chmod=D755,F644 leaves in /tmp."""
    dst = device_dir / f"upload-{bundle.name}"
    shutil.copytree(bundle, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def not_the_owners(state: Path) -> list[str]:
    return [
        f"{p.relative_to(state)} uid {p.lstat().st_uid} gid {p.lstat().st_gid}"
        for p in [state, *state.rglob("*")]
        if (p.lstat().st_uid, p.lstat().st_gid) != (SERVICE_UID, SERVICE_GID)
    ]


def test_root_run_models_commands_leave_every_file_to_the_state_directorys_owner(device_dir, make_bundle, tmp_path):
    state = installed_state(device_dir)
    config = str(device_config(tmp_path, False))  # root-owned policy file, read before crackd drops to the owner
    a, b = (upload(make_bundle(s), device_dir) for s in ("own-a", "own-b"))

    for args in (
        ("stage", str(a)),
        ("activate", version_of(a)),
        ("stage", str(b)),
        ("activate", version_of(b)),
        ("rollback",),
        ("confirm", version_of(a)),
    ):
        r = crackd_models(*args, "--state-dir", str(state), "--config", config, "--json")
        assert r.returncode == 0, f"{args}: {r.stderr}"

    models = state / "models"
    assert {p.name for p in models.iterdir()} >= {"releases", "current", "previous", ".lock", "deployments.jsonl"}
    assert not_the_owners(state) == []
    assert os.readlink(models / "current") == f"releases/{version_of(a)}"


def test_root_owned_files_left_by_an_older_crackd_are_given_to_the_owner(device_dir, make_bundle, tmp_path):
    state = installed_state(device_dir)
    models = state / "models"
    models.mkdir()  # as root, the way crackd used to leave them
    (models / ".lock").touch()
    (models / "deployments.jsonl").write_text(json.dumps({"action": "stage", "outcome": "staged"}) + "\n")
    bundle = upload(make_bundle("own-old"), device_dir)

    r = crackd_models("stage", str(bundle), "--state-dir", str(state), "--config", str(device_config(tmp_path, False)))

    assert r.returncode == 0, r.stderr
    assert not_the_owners(state) == []
    assert len((models / "deployments.jsonl").read_text().splitlines()) == 2


def test_a_bundle_the_owner_cannot_read_is_refused_naming_the_file(device_dir, make_bundle, tmp_path):
    state = installed_state(device_dir)
    bundle = upload(make_bundle("own-private"), device_dir)
    (bundle / "manifest.json").chmod(0o600)

    r = crackd_models("stage", str(bundle), "--state-dir", str(state), "--config", str(device_config(tmp_path, False)))

    assert r.returncode == 1 and "manifest.json" in r.stderr and "Traceback" not in r.stderr
    assert not_the_owners(state) == []
