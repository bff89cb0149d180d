"""Bundle signatures: ed25519 via OpenSSH's `ssh-keygen -Y sign/verify`.

The signature covers `manifest.json`, which pins the sha256 of every model file,
so one signature vouches for the whole bundle. OpenSSH signatures reuse the
keys technicians already have (and their ssh-agent or hardware keys), and the
device trusts signers through an `allowed_signers` file (see ssh-keygen(1),
ALLOWED SIGNERS), one line per trusted key:

    alice@factory namespaces="crackd-bundle" ssh-ed25519 AAAAC3Nza...

The namespace `crackd-bundle` keeps a signature made for a bundle from being
valid for anything else (and the other way round).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge.atomic_write import write_bytes_atomic
from edge.engine.bundle import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    SIGNATURE,
    BundleError,
    manifest_sha256,
    member_exists,
    read_member,
)

log = logging.getLogger(__name__)

NAMESPACE = "crackd-bundle"
# Bundles shipped inside crackd releases (models/default), by manifest sha256: trusted like the code they ship
# with, so a device that requires signatures can still install and serve its factory default. The manifest pins
# every file's sha256, so this vouches for the whole bundle. Re-exporting models/default means adding its hash here.
SHIPPED_MANIFESTS = {
    "417ce99aa7528112889142753aea9cf8a275d9dbcb19a9826906512d3b861257": "1.0.0",
    "96a98ff86114597bda7f064e8da3625a572f922b386cd85a00a94a0ab159855b": "1.1.0",
    "849a429979d90574b2853d17693a777ca353f0aba5b589052b73b8bfb5677f50": "1.2.0",
}
# Key types accepted for bundle signatures: ed25519, in software or on a FIDO token.
ACCEPTED_KEY_TYPES = ("ED25519", "ED25519-SK")
_GOOD = re.compile(r'Good "(?P<ns>[^"]+)" signature for (?P<principal>.+) with (?P<type>\S+) key (?P<fp>\S+)')
SSH_KEYGEN_TIMEOUT_S = 60
# What ssh-keygen says when the signature file itself cannot be decoded (as opposed to "no principal matched").
_UNREADABLE = (
    "couldn't parse signature",
    "couldn't verify signature",
    "sshsig_armor",
    "sshsig_dearmor",
    "invalid format",
    "incomplete message",
    "missing header",
)


class SignatureError(BundleError):
    """A bundle signature that is missing, invalid or from a signer the device does not trust."""


class SignatureMissing(SignatureError):
    pass


class SignatureInvalid(SignatureError):
    pass


class UnknownSigner(SignatureError):
    pass


class SigningUnavailable(SignatureError):
    """ssh-keygen is not installed or too old for `-Y` signatures (OpenSSH >= 8.2 is needed)."""


@dataclass(frozen=True)
class SignatureInfo:
    principal: str  # the identity from allowed_signers that the key belongs to
    key_type: str  # e.g. ED25519
    fingerprint: str  # SHA256:...

    def as_dict(self) -> dict:
        return {"principal": self.principal, "key_type": self.key_type, "fingerprint": self.fingerprint}


def _ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        raise SigningUnavailable(
            "ssh-keygen not found; install openssh-client (OpenSSH >= 8.2) to sign or verify bundles"
        )
    return path


def _run(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            args,
            input=stdin if stdin is not None else b"",
            capture_output=True,
            timeout=SSH_KEYGEN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SignatureError(
            f"{' '.join(args[:3])}: no answer after {SSH_KEYGEN_TIMEOUT_S} "
            "s (waiting for a passphrase or a security key touch?)"
        ) from None


def _first_line(data: bytes) -> str:
    """The first line of what ssh-keygen said, for a one-line error: it states the cause, what follows is the
    consequence ("Permissions 0644 for 'key' are too open." before "No private key found"). The "@@@" warning
    banner around it is decoration and skipped."""
    lines = [
        ln.strip()
        for ln in data.decode(errors="replace").splitlines()
        if ln.strip() and not ln.lstrip().startswith("@")
    ]
    return lines[0] if lines else "no output"


def sign_bundle(bundle_dir: str | Path, key_path: str | Path) -> Path:
    """Sign `bundle_dir/manifest.json` with the OpenSSH key at `key_path`; returns the written `manifest.json.sig`.

    `key_path` is a private key, or a public key whose private half is in the
    ssh-agent. The signature is written to a temporary file and renamed into
    place, so a bundle never has a half-written signature.
    """
    bundle_dir = Path(bundle_dir)
    key_path = Path(key_path).expanduser()
    manifest = bundle_dir / MANIFEST
    if not manifest.is_file():
        raise SignatureError(f"{bundle_dir}: no {MANIFEST} to sign; is this a model bundle directory?")
    if not key_path.is_file():
        raise SignatureError(f"{key_path}: signing key not found")
    # Sign stdin so ssh-keygen writes the signature to stdout (signing a file
    # would stop at an "Overwrite (y/n)?" prompt when a signature exists).
    result = _run(
        [_ssh_keygen(), "-q", "-Y", "sign", "-f", str(key_path), "-n", NAMESPACE], stdin=manifest.read_bytes()
    )
    if result.returncode != 0 or b"BEGIN SSH SIGNATURE" not in result.stdout:
        raise SignatureError(f"{key_path}: ssh-keygen could not sign {manifest} ({_first_line(result.stderr)})")
    target = bundle_dir / SIGNATURE
    write_bytes_atomic(target, result.stdout, mode=0o644)
    log.info("signed %s with %s -> %s", manifest, key_path, target)
    return target


def verify_bundle_signature(bundle_dir: str | Path, allowed_signers: str | Path) -> SignatureInfo:
    """Check `manifest.json.sig` against `allowed_signers`; returns
    who signed, or raises SignatureError naming why not."""
    bundle_dir = Path(bundle_dir)
    allowed_signers = Path(allowed_signers)
    if not member_exists(bundle_dir, SIGNATURE):
        raise SignatureMissing(
            f"{bundle_dir}: not signed (no {SIGNATURE}) and this device requires "
            "signed bundles; sign it with `crack-deploy sign BUNDLE --key KEY`"
        )
    if not allowed_signers.is_file():
        raise UnknownSigner(
            f"{allowed_signers}: allowed_signers file not found; the device trusts no "
            f"signer (add lines 'NAME namespaces=\"{NAMESPACE}\" ssh-ed25519 AAAA...')"
        )
    # Read both once, as plain files of the bundle (no symlink, no FIFO), and verify exactly those bytes.
    manifest_bytes = read_member(bundle_dir, MANIFEST, MAX_MANIFEST_BYTES)
    signature_bytes = read_member(bundle_dir, SIGNATURE, MAX_SIGNATURE_BYTES)
    keygen = _ssh_keygen()
    with tempfile.TemporaryDirectory(prefix="crackd-sig-") as tmp:
        signature = Path(tmp) / SIGNATURE
        signature.write_bytes(signature_bytes)
        return _verify(keygen, bundle_dir, bundle_dir / SIGNATURE, signature, manifest_bytes, allowed_signers)


def _verify(
    keygen: str, bundle_dir: Path, shown: Path, signature: Path, manifest_bytes: bytes, allowed_signers: Path
) -> SignatureInfo:
    found = _run([keygen, "-Y", "find-principals", "-s", str(signature), "-f", str(allowed_signers)])
    principals = [p.strip() for p in found.stdout.decode(errors="replace").splitlines() if p.strip()]
    if found.returncode != 0 or not principals:
        err = found.stderr.decode(errors="replace").lower()
        if any(marker in err for marker in _UNREADABLE):
            raise SignatureInvalid(f"{shown}: not a readable OpenSSH signature (damaged?)")
        raise UnknownSigner(
            f"{shown}: signed by a key that is not in {allowed_signers} (or not for namespace {NAMESPACE!r})"
        )
    errors = []
    for principal in principals:
        result = _run(
            [
                keygen,
                "-Y",
                "verify",
                "-f",
                str(allowed_signers),
                "-I",
                principal,
                "-n",
                NAMESPACE,
                "-s",
                str(signature),
            ],
            stdin=manifest_bytes,
        )
        if result.returncode == 0:
            match = _GOOD.search((result.stdout + result.stderr).decode(errors="replace"))
            if match is None:
                raise SignatureInvalid(
                    f"{shown}: ssh-keygen accepted it but its report was not "
                    f"understood: {_first_line(result.stdout + result.stderr)}"
                )
            info = SignatureInfo(principal=match["principal"], key_type=match["type"], fingerprint=match["fp"])
            if info.key_type.upper() not in ACCEPTED_KEY_TYPES:
                raise SignatureInvalid(
                    f"{shown}: signed with a {info.key_type} key by {info.principal}; crackd accepts ed25519 keys only"
                )
            log.info("bundle %s signed by %s (%s %s)", bundle_dir, info.principal, info.key_type, info.fingerprint)
            return info
        errors.append(_first_line(result.stderr))
    raise SignatureInvalid(f"{shown}: signature does not match {MANIFEST} (altered after signing?): {errors[-1]}")


@dataclass(frozen=True)
class Trust:
    """Why a bundle may be served: who signed it, or that it is the bundle shipped with this crackd."""

    signer: SignatureInfo | None
    shipped: bool = False

    def describe(self) -> str:
        if self.signer:
            return f"signer {self.signer.principal}"
        return (
            "shipped with this crackd (trusted like its code)" if self.shipped else "unsigned (signature not required)"
        )


def check_bundle_trust(
    bundle_dir: str | Path, require_signature: bool, allowed_signers: Path | tuple[Path, ...] | list[Path]
) -> Trust:
    """The one signature rule for every path that installs or serves a bundle (stage, activate, daemon start and reload,
    check-config).

    With `require_signature`, the bundle must carry a signature that verifies against EVERY allowed_signers file
    given (extra files from the command line can only narrow who is trusted), unless it is a bundle shipped with
    crackd (`SHIPPED_MANIFESTS`). Without it, a signature that is present is still checked where trusted signers
    are configured, so a damaged or foreign signature never passes silently. Reads only the manifest and signature.
    """
    files = [Path(allowed_signers)] if isinstance(allowed_signers, (str, Path)) else [Path(f) for f in allowed_signers]
    if require_signature:
        shipped = SHIPPED_MANIFESTS.get(manifest_sha256(bundle_dir))
        if shipped:  # the manifest is byte for byte the one shipped with crackd: a signature adds nothing
            log.info("bundle %s is the default bundle %s shipped with crackd", bundle_dir, shipped)
            return Trust(None, shipped=True)
        infos = [verify_bundle_signature(bundle_dir, f) for f in files]
        return Trust(infos[0] if infos else None)
    present = [f for f in files if f.is_file()]
    if member_exists(bundle_dir, SIGNATURE) and present:
        infos = [verify_bundle_signature(bundle_dir, f) for f in present]
        return Trust(infos[0])
    return Trust(None)
