"""Model releases on the device (edge/releases.py, `crackd models ...`).

Real bundle copies run through the real TFLite runtime, real symlinks, real
flock between real processes. Versions come from the shipped bundle plus a
suffix; nothing depends on which bundle is shipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO
from edge.bundle import ChecksumMismatch, NotTFLite, sha256_file
from edge.releases import DeviceBusy, NothingToRollBack, ReleaseNotFound, ReleasePolicy, Releases, VersionConflict
from edge.selftest import GoldenMismatch
from edge.signing import SignatureMissing, UnknownSigner


@pytest.fixture
def state(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def releases(state, signer_keys):
    return Releases(state, ReleasePolicy(require_signature=True, allowed_signers=signer_keys.allowed_signers, keep=2, latency_runs=1))


def crackd(*args, check=False):
    return subprocess.run([sys.executable, "-m", "edge.cli", "models", *args], cwd=REPO, capture_output=True, text=True, check=check)


def version_of(bundle):
    return json.loads((bundle / "manifest.json").read_text())["bundle_version"]


def outcomes(rel):
    return [(r["action"], r["version"], r["outcome"]) for r in rel.history()]


# --------------------------------------------------------------------------- stage


def test_stage_installs_a_fully_checked_release_and_records_it(releases, make_bundle, signer_keys):
    bundle = make_bundle("a", sign=signer_keys.trusted)

    report = releases.stage(bundle, who="alice@laptop")

    v = version_of(bundle)
    assert report.version == v and not report.already_staged
    assert report.signer["principal"] == "trusted@test"
    assert report.golden["ok"] and len(report.golden["samples"]) == len(json.loads((bundle / "manifest.json").read_text())["golden"]["samples"])
    assert report.latency_ms["total_ms_p50"] > 0
    assert (releases.layout.release(v) / "manifest.json").is_file()
    assert not list(releases.layout.releases.glob("*.staging"))
    assert releases.current_version() is None  # staging never changes what is served
    assert outcomes(releases) == [("stage", v, "staged")]
    assert releases.history()[-1]["who"] == "alice@laptop"


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

    with pytest.raises(ChecksumMismatch, match="classifier.tflite"):
        releases.stage(bundle)

    assert releases.list() == []
    assert not list(releases.layout.releases.glob("*"))
    assert outcomes(releases)[-1][2] == "rejected"
    assert "classifier.tflite" in releases.history()[-1]["error"]


def test_a_model_the_runtime_cannot_load_is_refused(releases, make_bundle, signer_keys):
    def truncate_classifier(m, d):
        path = d / "classifier.tflite"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])  # still starts with the TFL3 header
        m["models"]["classifier"]["sha256"] = sha256_file(path)  # checksum right, model broken

    bundle = make_bundle("unloadable", edit=truncate_classifier, sign=signer_keys.trusted)

    with pytest.raises(NotTFLite, match="could not load"):
        releases.stage(bundle)
    assert releases.list() == []


def test_a_bundle_whose_golden_samples_are_not_reproduced_is_refused_naming_the_sample(releases, make_bundle, signer_keys):
    def wrong_expectation(m, d):
        sample = m["golden"]["samples"][1]
        sample["classifier_output"] = (int(sample["classifier_output"]) + 100) % 256

    bundle = make_bundle("golden", edit=wrong_expectation, sign=signer_keys.trusted)
    sample_name = json.loads((bundle / "manifest.json").read_text())["golden"]["samples"][1]["image"]

    with pytest.raises(GoldenMismatch, match=f"golden sample {sample_name}: classifier score"):
        releases.stage(bundle)
    assert releases.list() == []


def test_an_unsigned_bundle_is_refused_when_signatures_are_required(releases, make_bundle):
    with pytest.raises(SignatureMissing):
        releases.stage(make_bundle("unsigned"))
    assert releases.list() == []


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
    assert "no crackd.pid" in second.daemon["message"]

    back = releases.rollback(who="tech", reason="testing")
    assert back.version == version_of(a) and back.from_version == version_of(b)
    assert releases.current_version() == version_of(a) and releases.previous_version() == version_of(b)
    assert outcomes(releases)[-3:] == [("activate", version_of(a), "activated"), ("activate", version_of(b), "activated"),
                                        ("rollback", version_of(a), "rolled back")]
    assert releases.history()[-1]["reason"] == "testing"


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

    installed = {r["version"] for r in releases.list()}
    assert installed == set(versions[-3:])  # current + keep=2 (the previous among them)
    assert releases.current_version() == versions[-1] and releases.previous_version() == versions[-2]


# --------------------------------------------------------------------------- the lock


def test_a_second_operation_fails_clearly_while_another_holds_the_device(state, make_bundle, signer_keys):
    holder = subprocess.Popen([sys.executable, "-m", "edge.cli", "models", "lock", "--state-dir", str(state), "--who", "bob@workshop", "--json"],
                              cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
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
    holder = subprocess.Popen([sys.executable, "-m", "edge.cli", "models", "lock", "--state-dir", str(state), "--json"],
                              cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
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


def test_crackd_models_cli_reports_a_refusal_in_one_line_and_json(state, make_bundle):
    bundle = make_bundle("cli-bad")
    (bundle / "segmenter.tflite").write_bytes(b"not a model")

    r = crackd("stage", str(bundle), "--state-dir", str(state), "--no-require-signature", "--json")

    assert r.returncode == 1
    payload = json.loads(r.stdout)
    assert payload["ok"] is False and payload["kind"] == "ChecksumMismatch"
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("crackd models")]
    assert len(errors) == 1 and "segmenter.tflite" in errors[0]
    assert "Traceback" not in r.stderr


def test_crackd_models_cli_stage_activate_status_list(state, make_bundle):
    bundle = make_bundle("cli-ok")
    v = version_of(bundle)

    assert crackd("stage", str(bundle), "--state-dir", str(state), "--no-require-signature").returncode == 0
    act = json.loads(crackd("activate", v, "--state-dir", str(state), "--no-require-signature", "--json").stdout)
    status = json.loads(crackd("status", "--state-dir", str(state), "--json").stdout)
    listing = json.loads(crackd("list", "--state-dir", str(state), "--json").stdout)

    assert act["ok"] and act["version"] == v
    assert status["current"] == v and status["serving_current"] is False and status["daemon"] is None
    assert [r["version"] for r in listing["releases"] if r["current"]] == [v]


def test_crackd_models_cli_usage_errors_exit_2(tmp_path):
    r = crackd("status", "--state-dir", str(tmp_path / "missing"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_the_self_test_runs_under_memory_deny_write_execute(state, make_bundle):
    """systemd/crackd.service sets MemoryDenyWriteExecute=yes: the inference path (numpy, OpenCV, the TFLite
    runtime with XNNPACK) must never need writable+executable memory. Checked with the kernel's own
    PR_SET_MDWE (Linux >= 6.3), which refuses the same mappings systemd's filter does."""
    bundle = make_bundle("mdwe")
    script = (
        "import ctypes, mmap, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.prctl(65, 1, 0, 0, 0) != 0: sys.exit(77)\n"  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC); sys.exit(78)\n"
        "except OSError: pass\n"
        "from edge.cli import main\n"
        f"sys.exit(main(['models', 'stage', {str(bundle)!r}, '--state-dir', {str(state)!r}, '--no-require-signature']))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    if r.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert r.returncode != 78, "PR_SET_MDWE did not take effect"
    assert r.returncode == 0, r.stderr
    assert "staged release" in r.stdout
