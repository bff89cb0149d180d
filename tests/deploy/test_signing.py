"""Bundle signatures: OpenSSH ed25519 signatures over manifest.json, checked against allowed_signers.

Real ssh-keygen, real throwaway keys (the `signer_keys` fixture), real bundle copies.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge.releases.signing import (
    NAMESPACE,
    SignatureError,
    SignatureInvalid,
    SignatureMissing,
    UnknownSigner,
    sign_bundle,
    verify_bundle_signature,
)
from tests.helpers import REPO


def test_a_bundle_signed_with_a_trusted_ed25519_key_verifies_and_names_its_signer(make_bundle, signer_keys):
    bundle = make_bundle("signed", sign=signer_keys.trusted)

    info = verify_bundle_signature(bundle, signer_keys.allowed_signers)

    assert info.principal == "trusted@test"
    assert info.key_type == "ED25519"
    assert info.fingerprint.startswith("SHA256:")


def test_signing_again_replaces_the_old_signature(make_bundle, signer_keys):
    bundle = make_bundle("resigned", sign=signer_keys.stranger)
    sign_bundle(bundle, signer_keys.trusted)  # a second signature must not stop at an "Overwrite?" prompt

    assert verify_bundle_signature(bundle, signer_keys.allowed_signers).principal == "trusted@test"


def test_a_manifest_changed_after_signing_is_refused(make_bundle, signer_keys):
    bundle = make_bundle("tampered", sign=signer_keys.trusted)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["models"]["classifier"]["threshold"] = 0.01
    (bundle / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(SignatureInvalid, match=r"does not match manifest\.json"):
        verify_bundle_signature(bundle, signer_keys.allowed_signers)


def test_a_signature_by_a_key_not_in_allowed_signers_is_refused(make_bundle, signer_keys):
    bundle = make_bundle("stranger", sign=signer_keys.stranger)

    with pytest.raises(UnknownSigner, match=r"not in .*allowed_signers"):
        verify_bundle_signature(bundle, signer_keys.allowed_signers)


def test_an_unsigned_bundle_is_refused_with_how_to_sign_it(make_bundle, signer_keys):
    bundle = make_bundle("unsigned")

    with pytest.raises(SignatureMissing, match="crack-deploy sign"):
        verify_bundle_signature(bundle, signer_keys.allowed_signers)


def test_without_an_allowed_signers_file_no_signature_is_trusted(make_bundle, signer_keys, tmp_path):
    bundle = make_bundle("nosigners", sign=signer_keys.trusted)

    with pytest.raises(UnknownSigner, match="allowed_signers file not found"):
        verify_bundle_signature(bundle, tmp_path / "missing_allowed_signers")


def test_a_signature_made_for_another_namespace_is_refused(make_bundle, signer_keys):
    bundle = make_bundle("othernamespace")
    sig = subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-f", str(signer_keys.trusted), "-n", "file"],
        input=(bundle / "manifest.json").read_bytes(),
        capture_output=True,
        check=True,
    ).stdout
    (bundle / "manifest.json.sig").write_bytes(sig)

    with pytest.raises((UnknownSigner, SignatureInvalid)):
        verify_bundle_signature(bundle, signer_keys.allowed_signers)


def test_only_ed25519_keys_are_accepted(make_bundle, signer_keys, tmp_path):
    key = tmp_path / "ecdsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-C", "ecdsa@test", "-f", str(key)], check=True)
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'ecdsa@test namespaces="{NAMESPACE}" {(tmp_path / "ecdsa.pub").read_text().strip()}\n')
    bundle = make_bundle("ecdsa", sign=key)

    with pytest.raises(SignatureInvalid, match="ed25519 keys only"):
        verify_bundle_signature(bundle, allowed)


def test_crack_deploy_sign_signs_a_bundle_and_refuses_a_broken_one(make_bundle, signer_keys):
    bundle = make_bundle("cli")
    ok = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "sign", str(bundle), "--key", str(signer_keys.trusted)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert verify_bundle_signature(bundle, signer_keys.allowed_signers).principal == "trusted@test"

    (bundle / "segmenter.tflite").write_bytes(b"garbage")
    bad = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "sign", str(bundle), "--key", str(signer_keys.trusted)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert "segmenter.tflite" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_damaged_signature_file_is_reported_as_such(make_bundle, signer_keys):
    bundle = make_bundle("damagedsig", sign=signer_keys.trusted)
    sig = (bundle / "manifest.json.sig").read_text().splitlines()
    (bundle / "manifest.json.sig").write_text("\n".join(sig[:2] + sig[-1:]) + "\n")  # armour intact, body cut

    with pytest.raises(SignatureInvalid, match="not a readable OpenSSH signature"):
        verify_bundle_signature(bundle, signer_keys.allowed_signers)


def test_the_shipped_default_bundle_is_pinned_as_trusted():
    """models/default is unsigned and trusted like the code; re-exporting it means adding its manifest sha256 to
    edge.releases.signing.SHIPPED_MANIFESTS (else devices that require signatures could not install or serve it)."""
    from edge.engine.bundle import manifest_sha256, read_manifest
    from edge.releases.signing import SHIPPED_MANIFESTS, check_bundle_trust
    from tests.helpers import DEFAULT_BUNDLE

    sha = manifest_sha256(DEFAULT_BUNDLE)
    assert SHIPPED_MANIFESTS.get(sha) == read_manifest(DEFAULT_BUNDLE).bundle_version, (
        f"add {sha!r} to edge.releases.signing.SHIPPED_MANIFESTS"
    )
    assert check_bundle_trust(DEFAULT_BUNDLE, True, DEFAULT_BUNDLE / "no-such-allowed-signers").shipped


def test_a_signature_file_that_is_a_symlink_is_not_followed(make_bundle, signer_keys, tmp_path):
    from edge.engine.bundle import UnsafePath

    bundle = make_bundle("sig-link", sign=signer_keys.trusted)
    real = tmp_path / "real.sig"
    (bundle / "manifest.json.sig").rename(real)
    (bundle / "manifest.json.sig").symlink_to(real)
    with pytest.raises(UnsafePath, match=r"manifest\.json\.sig: a symbolic link"):
        verify_bundle_signature(bundle, signer_keys.allowed_signers)


def test_a_key_ssh_keygen_refuses_is_named_with_the_cause_it_gave_first(make_bundle, signer_keys, tmp_path):
    # ssh-keygen explains an unusable private key over several lines: the cause first (permissions too open),
    # then the consequence ("No private key found"); the one-line error carries the cause.
    key = tmp_path / "open_key"
    key.write_bytes(signer_keys.trusted.read_bytes())
    key.chmod(0o644)
    bundle = make_bundle("open-key")

    with pytest.raises(
        SignatureError, match=r"ssh-keygen could not sign .*\(Permissions 0644 for '.*open_key' are too open\.\)$"
    ):
        sign_bundle(bundle, key)
