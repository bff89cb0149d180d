"""Model releases on the device (edge/releases/manager.py, `crackd models ...`).

Real bundle copies run through the real TFLite runtime, real symlinks, real
flock between real processes. Versions come from the shipped bundle plus a
suffix; nothing depends on which bundle is shipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from edge.engine.bundle import ChecksumMismatch, NotTFLite, UnsafePath, sha256_file
from edge.engine.selftest import GoldenMismatch
from edge.releases.lock import DeviceBusy
from edge.releases.manager import NothingToRollBack, ReleaseNotFound, ReleasePolicy, Releases, VersionConflict
from edge.releases.signing import SignatureMissing, UnknownSigner
from tests.helpers import REPO, wait_until
from tests.helpers.cli import crackd
from tests.helpers.releases import crackd_models, device_config, version_of


@pytest.fixture
def releases(state, signer_keys):
    return Releases(
        state,
        ReleasePolicy(require_signature=True, allowed_signers=signer_keys.allowed_signers, keep=2, latency_runs=1),
    )


def outcomes(rel):
    return [(r.action, r.version, r.outcome) for r in rel.history()]


# --------------------------------------------------------------------------- stage


def test_stage_installs_a_fully_checked_release_and_records_it(releases, make_bundle, signer_keys):
    bundle = make_bundle("a", sign=signer_keys.trusted)

    report = releases.stage(bundle, who="alice@laptop")

    v = version_of(bundle)
    assert report.version == v and not report.already_staged
    assert report.signer.principal == "trusted@test"
    assert report.golden["ok"] and len(report.golden["samples"]) == len(
        json.loads((bundle / "manifest.json").read_text())["golden"]["samples"]
    )
    assert report.latency_ms.total_ms_p50 > 0
    assert (releases.layout.release(v) / "manifest.json").is_file()
    assert not list(releases.layout.releases.glob("*.staging"))
    assert releases.current_version() is None  # staging never changes what is served
    assert outcomes(releases) == [("stage", v, "staged")]
    assert releases.history()[-1].who == "alice@laptop"


def test_staging_the_same_bundle_twice_is_harmless(releases, make_bundle, signer_keys):
    bundle = make_bundle("twice", sign=signer_keys.trusted)
    releases.stage(bundle)

    assert releases.stage(bundle).already_staged


def test_a_different_bundle_under_an_installed_version_is_refused(releases, make_bundle, signer_keys):
    releases.stage(make_bundle("same", sign=signer_keys.trusted))

    def lower_threshold(m, d):
        m["models"]["classifier"]["threshold"] = 0.3

    other = make_bundle("same", edit=lower_threshold, sign=signer_keys.trusted)
    with pytest.raises(VersionConflict, match="already installed with different content"):
        releases.stage(other)


def test_a_model_that_does_not_match_its_checksum_is_never_installed(releases, make_bundle, signer_keys):
    bundle = make_bundle("corrupt", sign=signer_keys.trusted)
    data = bytearray((bundle / "classifier.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "classifier.tflite").write_bytes(bytes(data))

    with pytest.raises(ChecksumMismatch, match=r"classifier\.tflite"):
        releases.stage(bundle)

    assert releases.installed() == []
    assert not list(releases.layout.releases.glob("*"))
    assert outcomes(releases)[-1][2] == "rejected"
    assert "classifier.tflite" in releases.history()[-1].error


def test_a_model_the_runtime_cannot_load_is_refused(releases, make_bundle, signer_keys):
    def truncate_classifier(m, d):
        path = d / "classifier.tflite"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])  # still starts with the TFL3 header
        m["models"]["classifier"].update(
            sha256=sha256_file(path), bytes=path.stat().st_size
        )  # checksum right, model broken

    bundle = make_bundle("unloadable", edit=truncate_classifier, sign=signer_keys.trusted)

    with pytest.raises(NotTFLite, match="could not load"):
        releases.stage(bundle)
    assert releases.installed() == []


def test_a_bundle_whose_golden_samples_are_not_reproduced_is_refused_naming_the_sample(
    releases, make_bundle, signer_keys
):
    def wrong_expectation(m, d):
        sample = m["golden"]["samples"][1]
        sample["classifier_output"] = (int(sample["classifier_output"]) + 100) % 256

    bundle = make_bundle("golden", edit=wrong_expectation, sign=signer_keys.trusted)
    sample_name = json.loads((bundle / "manifest.json").read_text())["golden"]["samples"][1]["image"]

    with pytest.raises(GoldenMismatch, match=f"golden sample {sample_name}: classifier score"):
        releases.stage(bundle)
    assert releases.installed() == []


def test_an_unsigned_bundle_is_refused_when_signatures_are_required(releases, make_bundle):
    with pytest.raises(SignatureMissing):
        releases.stage(make_bundle("unsigned"))
    assert releases.installed() == []


def test_a_bundle_signed_by_an_unknown_key_is_refused(releases, make_bundle, signer_keys):
    with pytest.raises(UnknownSigner):
        releases.stage(make_bundle("stranger", sign=signer_keys.stranger))


def test_unsigned_bundles_are_accepted_when_the_device_does_not_require_signatures(state, make_bundle):
    rel = Releases(state, ReleasePolicy(require_signature=False, latency_runs=1))

    assert rel.stage(make_bundle("dev")).signer is None


def test_a_latency_limit_refuses_a_bundle_too_slow_for_this_device(state, make_bundle):
    rel = Releases(state, ReleasePolicy(require_signature=False, max_latency_ms=1e-6, latency_runs=1))

    with pytest.raises(Exception, match=r"ms per frame on this device.*above the limit"):
        rel.stage(make_bundle("slow"))


# --------------------------------------------------------------------------- activate, rollback, keep


def test_activate_switches_current_and_keeps_the_previous_for_rollback(releases, make_bundle, signer_keys):
    a, b = make_bundle("a", sign=signer_keys.trusted), make_bundle("b", sign=signer_keys.trusted)
    releases.stage(a)
    releases.stage(b)

    first = releases.activate(version_of(a), who="tech")
    second = releases.activate(version_of(b), who="tech")

    assert first.from_version is None and second.from_version == version_of(a)
    assert os.readlink(releases.layout.current) == f"releases/{version_of(b)}"
    assert releases.current_version() == version_of(b) and releases.previous_version() == version_of(a)
    assert "no crackd.pid" in second.daemon.message

    back = releases.rollback(who="tech", reason="testing")
    assert back.version == version_of(a) and back.from_version == version_of(b)
    assert releases.current_version() == version_of(a) and releases.previous_version() == version_of(b)
    assert outcomes(releases)[-3:] == [
        ("activate", version_of(a), "activated"),
        ("activate", version_of(b), "activated"),
        ("rollback", version_of(a), "rolled back"),
    ]
    assert releases.history()[-1].reason == "testing"


def test_only_staged_releases_can_be_activated(releases):
    with pytest.raises(ReleaseNotFound, match="not staged"):
        releases.activate("9.9.9-nowhere")


def test_rollback_without_a_previous_release_says_so(releases, make_bundle, signer_keys):
    bundle = make_bundle("only", sign=signer_keys.trusted)
    releases.stage(bundle)
    releases.activate(version_of(bundle))

    with pytest.raises(NothingToRollBack):
        releases.rollback()


def test_a_release_corrupted_after_staging_is_not_activated(releases, make_bundle, signer_keys):
    bundle = make_bundle("rot", sign=signer_keys.trusted)
    releases.stage(bundle)
    (releases.layout.release(version_of(bundle)) / "segmenter.tflite").write_bytes(b"TFL3" * 10)

    with pytest.raises(ChecksumMismatch):
        releases.activate(version_of(bundle))
    assert releases.current_version() is None


def test_old_releases_beyond_keep_are_removed_but_current_and_previous_stay(state, make_bundle):
    releases = Releases(state, ReleasePolicy(require_signature=False, keep=2, latency_runs=1))
    versions = []
    for i in range(4):
        bundle = make_bundle(f"k{i}")
        releases.stage(bundle)
        releases.activate(version_of(bundle))
        versions.append(version_of(bundle))
        time.sleep(0.01)  # distinct install times

    installed = {r.version for r in releases.installed()}
    assert installed == set(versions[-3:])  # current + keep=2 (the previous among them)
    assert releases.current_version() == versions[-1] and releases.previous_version() == versions[-2]


# --------------------------------------------------------------------------- the lock


def test_a_second_operation_fails_clearly_while_another_holds_the_device(state, make_bundle, signer_keys):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "models",
            "lock",
            "--state-dir",
            str(state),
            "--who",
            "bob@workshop",
            "--json",
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert json.loads(holder.stdout.readline())["locked"]
        rel = Releases(state, ReleasePolicy(require_signature=False, latency_runs=1))

        with pytest.raises(DeviceBusy, match="deploy by bob@workshop"):
            rel.stage(make_bundle("busy"))

        holder.stdin.close()  # the deploy session ends
        assert holder.wait(timeout=10) == 0
        assert rel.stage(make_bundle("busy"), wait_s=5).version.endswith("-busy")
    finally:
        if holder.poll() is None:
            holder.kill()


def test_commands_inside_a_deployment_join_its_lock_with_the_token(state, make_bundle):
    holder = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "models", "lock", "--state-dir", str(state), "--json"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        token = json.loads(holder.stdout.readline())["token"]
        rel = Releases(state, ReleasePolicy(require_signature=False, latency_runs=1))
        bundle = make_bundle("token")

        assert rel.stage(bundle, token=token).version == version_of(bundle)
        with pytest.raises(Exception, match="token"):
            rel.activate(version_of(bundle), token="not-the-token")
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


# --------------------------------------------------------------------------- the command line


def test_crackd_models_cli_reports_a_refusal_in_one_line_and_json(state, make_bundle, tmp_path):
    bundle = make_bundle("cli-bad")
    (bundle / "segmenter.tflite").write_bytes(b"not a model")

    r = crackd_models(
        "stage", str(bundle), "--state-dir", str(state), "--config", str(device_config(tmp_path, False)), "--json"
    )

    assert r.returncode == 1
    payload = json.loads(r.stdout)
    assert payload["ok"] is False and payload["kind"] == "ChecksumMismatch"
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("crackd models")]
    assert len(errors) == 1 and "segmenter.tflite" in errors[0]
    assert "Traceback" not in r.stderr


def test_crackd_models_cli_stage_activate_status_list(state, make_bundle, tmp_path):
    bundle = make_bundle("cli-ok")
    v = version_of(bundle)
    config = str(device_config(tmp_path, False))

    assert crackd_models("stage", str(bundle), "--state-dir", str(state), "--config", config).returncode == 0
    act = json.loads(crackd_models("activate", v, "--state-dir", str(state), "--config", config, "--json").stdout)
    status = json.loads(crackd_models("status", "--state-dir", str(state), "--json").stdout)
    listing = json.loads(crackd_models("list", "--state-dir", str(state), "--json").stdout)

    assert act["ok"] and act["version"] == v
    assert status["current"] == v and status["serving_current"] is False and status["daemon"] is None
    assert [r["version"] for r in listing["releases"] if r["current"]] == [v]


def test_crackd_models_status_shows_the_base_and_site_of_a_site_bundle(state, make_bundle, tmp_path):
    """A bundle exported from `crack-train adapt` records its base bundle and site; status shows both (text and
    --json); a generic bundle has no origin (null), so older bundles stay valid."""
    base = {"bundle_version": "1.1.0", "manifest_sha256": "ab" * 32}
    site = {"name": "line-7", "images": 20, "sha256": "cd" * 32, "threshold": 0.35}
    site["files"] = {"line-7/a.png": "ef" * 32}

    def as_site_bundle(manifest, _dir):
        manifest["data"] = {**manifest.get("data", {}), "base": base, "site": site}

    config = str(device_config(tmp_path, False))
    for bundle in (make_bundle("generic"), make_bundle("site", edit=as_site_bundle)):
        assert crackd_models("stage", str(bundle), "--state-dir", str(state), "--config", config).returncode == 0
        v = version_of(bundle)
        assert crackd_models("activate", v, "--state-dir", str(state), "--config", config).returncode == 0
        status = json.loads(crackd_models("status", "--state-dir", str(state), "--json").stdout)
        text = crackd_models("status", "--state-dir", str(state)).stdout
        if v.endswith("-generic"):
            assert status["origin"] is None and "site:" not in text
    assert status["origin"] == {"base": base, "site": {k: v for k, v in site.items() if k != "files"}}
    assert "base:     1.1.0" in text and "site:     line-7, adapted on 20 labelled images" in text


def test_crackd_models_cli_usage_errors_exit_2(tmp_path):
    r = crackd_models("status", "--state-dir", str(tmp_path / "missing"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_the_self_test_runs_under_memory_deny_write_execute(state, make_bundle, tmp_path):
    """systemd/crackd.service sets MemoryDenyWriteExecute=yes: the inference path (numpy, OpenCV, the TFLite
    runtime with XNNPACK) must never need writable+executable memory. Checked with the kernel's own
    PR_SET_MDWE (Linux >= 6.3), which refuses the same mappings systemd's filter does."""
    bundle = make_bundle("mdwe")
    config = str(device_config(tmp_path, False))
    script = (
        "import ctypes, mmap, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.prctl(65, 1, 0, 0, 0) != 0: sys.exit(77)\n"  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC); sys.exit(78)\n"
        "except OSError: pass\n"
        "from edge.cli import main\n"
        f"sys.exit(main(['models', 'stage', {str(bundle)!r}, '--state-dir', {str(state)!r}, '--config', {config!r}]))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    if r.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert r.returncode != 78, "PR_SET_MDWE did not take effect"
    assert r.returncode == 0, r.stderr
    assert "staged release" in r.stdout


# -------------------------------------------------------- hostile bundles (staging copies only what the manifest lists)


def listed_names(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    names = {"manifest.json"} | {e["file"] for e in m["models"].values()}
    for s in m["golden"]["samples"]:
        names |= {s["image"], s["segmenter_output"]}
    return names


def tree(path):
    return {str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir() or p.is_symlink()}


def test_stage_copies_only_the_files_the_manifest_lists(releases, make_bundle, signer_keys, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root:$6$not-for-the-daemon-user\n")
    big_tree = tmp_path / "big-tree"
    (big_tree / "deep").mkdir(parents=True)
    (big_tree / "deep" / "file").write_text("x" * 1000)

    def extras(m, d):
        (d / "shadow").symlink_to(secret)  # a symlink to a file no signature covers
        (d / "tree").symlink_to(big_tree, target_is_directory=True)  # a symlink to a directory
        (d / "notes.txt").write_text("not in the manifest")
        (d / "golden" / "extra.png").write_bytes(b"unlisted")

    bundle = make_bundle("extras", edit=extras, sign=signer_keys.trusted)

    report = releases.stage(bundle)

    installed = releases.layout.release(report.version)
    assert tree(installed) == listed_names(bundle) | {"manifest.json.sig"}
    assert not any(p.is_symlink() for p in installed.rglob("*"))


def test_a_listed_file_that_is_a_symlink_is_refused_and_its_target_never_hashed(
    releases, make_bundle, signer_keys, tmp_path
):
    outside = tmp_path / "outside.tflite"

    def symlinked_model(m, d):
        shutil.move(d / "classifier.tflite", outside)
        (d / "classifier.tflite").symlink_to(outside)  # same bytes, so the checksum alone would pass

    bundle = make_bundle("symlinked", edit=symlinked_model, sign=signer_keys.trusted)

    with pytest.raises(UnsafePath, match=r"classifier\.tflite: a symbolic link") as info:
        releases.stage(bundle)
    assert sha256_file(outside)[:12] not in str(info.value)
    assert releases.installed() == [] and not list(releases.layout.releases.glob("*"))


def test_a_listed_file_that_is_a_fifo_is_refused_without_reading_it(state, make_bundle, signer_keys, tmp_path):
    def fifo(m, d):
        (d / "golden" / "00.png").unlink()
        os.mkfifo(d / "golden" / "00.png")  # reading it would block forever

    bundle = make_bundle("fifo", edit=fifo, sign=signer_keys.trusted)
    config = device_config(tmp_path, True, signer_keys.allowed_signers)

    r = crackd_models("stage", str(bundle), "--state-dir", str(state), "--config", str(config), timeout=60)

    assert r.returncode == 1, r.stderr
    assert "golden/00.png: not a regular file" in r.stderr
    assert not list((state / "models" / "releases").glob("*"))


def test_an_unsigned_bundle_is_refused_before_any_other_file_is_read_or_copied(
    state, make_bundle, signer_keys, tmp_path
):
    def hostile(m, d):
        (d / "classifier.tflite").unlink()
        os.mkfifo(d / "classifier.tflite")  # copying or hashing it would block: proves nothing but the manifest is read
        with open(d / "huge.bin", "wb") as fh:  # a 1 GiB sparse file
            fh.truncate(1 << 30)

    bundle = make_bundle("unsigned-hostile", edit=hostile)
    config = device_config(tmp_path, True, signer_keys.allowed_signers)

    r = crackd_models("stage", str(bundle), "--state-dir", str(state), "--config", str(config), timeout=60)

    assert r.returncode == 1
    assert "not signed" in r.stderr and "Traceback" not in r.stderr
    assert not list((state / "models" / "releases").glob("*"))


def test_sizes_are_checked_against_the_manifest_before_copying(releases, make_bundle, signer_keys):
    bundle = make_bundle("grown", sign=signer_keys.trusted)
    declared = json.loads((bundle / "manifest.json").read_text())["models"]["segmenter"]["bytes"]
    with open(bundle / "segmenter.tflite", "r+b") as fh:  # grown to 1 GiB after signing (sparse)
        fh.truncate(1 << 30)

    with pytest.raises(ChecksumMismatch, match=f"segmenter.tflite: {1 << 30} bytes, the manifest says {declared}"):
        releases.stage(bundle)
    assert not list(releases.layout.releases.glob("*"))


def test_a_stale_staging_copy_left_by_an_interrupted_stage_is_removed_by_the_next_one(
    releases, make_bundle, signer_keys
):
    stale = releases.layout.releases / "9.9.9-interrupted.staging"
    (stale / "golden").mkdir(parents=True)
    (stale / "classifier.tflite").write_bytes(b"half a copy")

    releases.stage(make_bundle("after", sign=signer_keys.trusted))

    assert not stale.exists()
    assert not list(releases.layout.releases.glob("*.staging"))


@pytest.mark.parametrize(
    "key, value",
    [
        ("classifier", "/etc/passwd"),
        ("classifier", "../outside/classifier.tflite"),
        ("segmenter", "golden/../../segmenter.tflite"),
        ("segmenter", "./segmenter.tflite"),
        ("golden", "/etc/hostname"),
    ],
)
def test_manifest_paths_outside_the_bundle_are_refused_before_anything_is_copied(
    releases, make_bundle, signer_keys, key, value
):
    def escape(m, d):
        if key == "golden":
            m["golden"]["samples"][0]["image"] = value
        else:
            m["models"][key]["file"] = value

    bundle = make_bundle("escape", edit=escape, sign=signer_keys.trusted)

    with pytest.raises(UnsafePath, match="not a plain relative name inside the bundle"):
        releases.stage(bundle)
    assert not list(releases.layout.releases.glob("*"))


# ----------------------------------------------------------------- one signature policy, decided by the device's config


def test_command_line_options_cannot_weaken_the_configured_signature_policy(state, make_bundle, signer_keys, tmp_path):
    config = device_config(tmp_path, True, signer_keys.allowed_signers)
    stranger_signers = tmp_path / "stranger_signers"
    stranger_signers.write_text(
        f'stranger@test namespaces="crackd-bundle" {signer_keys.stranger.with_suffix(".pub").read_text().strip()}\n'
    )

    unsigned = crackd_models(
        "stage",
        str(make_bundle("unsigned")),
        "--state-dir",
        str(state),
        "--config",
        str(config),
        "--no-require-signature",
    )
    other_keys = crackd_models(
        "stage",
        str(make_bundle("stranger", sign=signer_keys.stranger)),
        "--state-dir",
        str(state),
        "--config",
        str(config),
        "--allowed-signers",
        str(stranger_signers),
    )

    assert unsigned.returncode == 2 and "may only make it stricter" in unsigned.stderr
    assert other_keys.returncode == 1 and "stranger_signers" not in other_keys.stderr.split(":")[0]
    assert "not in" in other_keys.stderr and str(signer_keys.allowed_signers) in other_keys.stderr
    assert not list((state / "models" / "releases").glob("*"))


def test_without_a_device_config_the_default_policy_requires_signatures(state, make_bundle):
    r = crackd_models("stage", str(make_bundle("no-config")), "--state-dir", str(state), "--no-require-signature")

    assert r.returncode == 2 and "may only make it stricter" in r.stderr


def test_command_line_options_can_make_the_policy_stricter(state, make_bundle, signer_keys, tmp_path):
    config = device_config(tmp_path, False)
    r = crackd_models(
        "stage",
        str(make_bundle("stricter")),
        "--state-dir",
        str(state),
        "--config",
        str(config),
        "--require-signature",
        "--allowed-signers",
        str(signer_keys.allowed_signers),
    )

    assert r.returncode == 1 and "not signed" in r.stderr


def test_a_policy_config_that_others_can_write_is_not_trusted(state, make_bundle, tmp_path):
    config = device_config(tmp_path, False)
    os.chmod(config, 0o666)

    r = crackd_models("stage", str(make_bundle("writable")), "--state-dir", str(state), "--config", str(config))

    assert r.returncode == 2 and "writable by others" in r.stderr and str(config) in r.stderr


def test_the_shipped_default_bundle_is_trusted_like_the_code_it_ships_with(state, signer_keys, tmp_path):
    config = device_config(tmp_path, True, signer_keys.allowed_signers)

    r = crackd_models("stage", str(REPO / "models" / "default"), "--state-dir", str(state), "--config", str(config))

    assert r.returncode == 0, r.stderr
    assert "shipped with this crackd" in r.stdout


def _daemon_config(tmp_path, bundle, signer_keys, require=True):
    path = tmp_path / "daemon.yaml"
    path.write_text(
        f"source:\n  type: synthetic\nmodel:\n  bundle: {bundle}\nstorage:\n  state_dir: {tmp_path / 'dstate'}\n"
        f"mqtt:\n  enabled: false\nlogging:\n  journald: false\n"
        f"releases:\n  require_signature: {str(require).lower()}\n  allowed_signers: {signer_keys.allowed_signers}\n"
    )
    return path


def test_a_configured_model_bundle_obeys_the_same_signature_policy(make_bundle, signer_keys, tmp_path):
    unsigned = _daemon_config(tmp_path, make_bundle("configured"), signer_keys)

    check = crackd("check-config", str(unsigned))
    run = crackd("run", "--config", str(unsigned))

    assert check.returncode == 2 and "model.bundle" in check.stderr and "not signed" in check.stderr
    assert run.returncode == 2 and "not signed" in run.stderr and "Traceback" not in run.stderr
    signed = _daemon_config(tmp_path, make_bundle("configured-signed", sign=signer_keys.trusted), signer_keys)
    ok = crackd("check-config", str(signed))
    assert ok.returncode == 0, ok.stderr


def test_a_stage_stopped_by_sigterm_removes_its_staging_copy_and_says_so(state, make_bundle, tmp_path):
    bundle = make_bundle("sigterm")
    config = device_config(tmp_path, False)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "models",
            "stage",
            str(bundle),
            "--state-dir",
            str(state),
            "--config",
            str(config),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    staging = state / "models" / "releases" / f"{version_of(bundle)}.staging"
    try:
        wait_until(lambda: (staging / "manifest.json").exists(), 60, "the stage to begin its copy", interval=0.005)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert proc.returncode == 1, out + err
    assert "interrupted by SIGTERM" in err and "Traceback" not in err
    assert not list((state / "models" / "releases").glob("*"))
    assert Releases(state).history()[-1].outcome == "rejected"


def test_another_config_cannot_lower_the_installed_devices_policy(
    state, make_bundle, signer_keys, tmp_path, monkeypatch, capsys
):
    """Where the device's own config exists, a --config (root-owned, so accepted as a policy source) that switches
    signatures off is not enough: the device's config stays the floor. (Run in-process with the device config's
    location pointed at a file in tmp, since the test must not write /etc/crackd.)"""
    from edge import layout
    from edge.cli import main

    device = device_config(tmp_path, True, signer_keys.allowed_signers, name="device.yaml")
    lax = device_config(tmp_path, False, name="lax.yaml")
    monkeypatch.setattr(layout, "DEFAULT_CONFIG", device)

    code = main(["models", "stage", str(make_bundle("lax")), "--state-dir", str(state), "--config", str(lax)])

    assert code == 1 and "not signed" in capsys.readouterr().err
    assert not list((state / "models" / "releases").glob("*"))
    monkeypatch.setattr(layout, "DEFAULT_CONFIG", tmp_path / "absent.yaml")
    assert main(["models", "stage", str(make_bundle("lax2")), "--state-dir", str(state), "--config", str(lax)]) == 0
