"""Staging: copy a bundle in as releases/<version>, only after checking everything on this device.

Checksums, signature, both models loaded with this device's runtime, golden samples reproduced, latency measured.
The copy is made under releases/<version>.staging and renamed into place, so a release directory only ever holds
a bundle that passed; a copy left by a killed stage is removed by the next command.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

from edge.atomic_write import fsync_dir
from edge.engine.bundle import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    SIGNATURE,
    BundleError,
    Manifest,
    MemberFile,
    check_member,
    check_model_headers,
    listed_files,
    load_verified,
    manifest_sha256,
    member_exists,
    read_manifest,
    read_member,
    verify_files,
)
from edge.layout import StateLayout
from edge.releases.answers import Latency, StageReport
from edge.releases.errors import ReleaseError
from edge.releases.inventory import STAGING_SUFFIX, InvalidVersion
from edge.releases.policy import ReleasePolicy
from edge.releases.signing import Trust, check_bundle_trust

log = logging.getLogger(__name__)


class VersionConflict(ReleaseError):
    pass


class LatencyTooHigh(BundleError):
    pass


def check_trust(bundle_dir: Path, policy: ReleasePolicy) -> Trust:
    """This device's signature policy (edge.releases.signing.check_bundle_trust, the rule the daemon applies too)."""
    return check_bundle_trust(
        bundle_dir,
        policy.require_signature,
        (Path(policy.allowed_signers), *map(Path, policy.extra_allowed_signers)),
    )


def remove_leftovers(layout: StateLayout) -> None:
    """Working copies left by a command that was killed (SIGKILL, power cut): staging copies and releases that
    were being pruned. Call with the lock held."""
    if not layout.releases.is_dir():
        return
    for path in [*layout.releases.glob(f"*{STAGING_SUFFIX}"), *layout.releases.glob(".*.removing")]:
        log.warning("removing %s, left by an interrupted command", path)
        shutil.rmtree(path, ignore_errors=True)


def _copy_member(source: Path, staging: Path, member: MemberFile, limit: int | None = None) -> None:
    """Copy one file of `source` into `staging`: no symlink followed, regular files only, the size checked before
    reading (against the manifest, or `limit` for the manifest and signature), hashed and compared while copied."""
    dst = staging / member.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = read_member(source, member.name, limit) if limit is not None else None
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        if data is not None:
            out.write(data)
        else:
            check_member(source, member, sink=out.write)


def stage_locked(layout: StateLayout, policy: ReleasePolicy, source: Path, version: str) -> StageReport:
    """Copy in only what the manifest lists, after the signature and manifest passed; verify; rename into place.

    Order matters: the manifest and signature (small, capped) are copied and checked first, and nothing else of
    the source is opened until they pass. Then each listed file is opened without following symlinks, its size
    compared with the manifest, and copied while it is hashed. Files the manifest does not list are never read.
    Any failure, or an interruption, leaves no staging copy behind (`remove_leftovers` takes what a kill left).
    """
    target = layout.release(version)
    if target.exists():
        if manifest_sha256(target) != manifest_sha256(source):
            raise VersionConflict(
                f"release {version} is already installed with different content (manifest "
                f"sha256 {manifest_sha256(target)[:12]}... vs "
                f"{manifest_sha256(source)[:12]}...); give the new bundle a new bundle_version"
            )
        trust = check_trust(target, policy)
        verify_files(read_manifest(target))
        return StageReport(
            version,
            str(target),
            manifest_sha256(target),
            trust.signer,
            {},
            None,
            already_staged=True,
            trust=trust.describe(),
        )
    layout.releases.mkdir(parents=True, exist_ok=True)
    staging = layout.releases / f"{version}{STAGING_SUFFIX}"
    try:
        staging.mkdir(mode=0o755)
        _copy_member(source, staging, MemberFile(MANIFEST, None, None, "manifest"), MAX_MANIFEST_BYTES)
        if member_exists(source, SIGNATURE):
            _copy_member(source, staging, MemberFile(SIGNATURE, None, None, "signature"), MAX_SIGNATURE_BYTES)
        manifest = read_manifest(staging)  # names confined to the bundle, version as read before
        if manifest.bundle_version != version:
            raise InvalidVersion(
                f"{source}: bundle_version changed during the copy ({version} -> {manifest.bundle_version})"
            )
        trust = check_trust(staging, policy)
        for member in listed_files(manifest):
            _copy_member(source, staging, member)
        check_model_headers(manifest)
        report = _verify(policy, staging, version, manifest, trust)
        os.rename(staging, target)
        fsync_dir(layout.releases)
    except (BundleError, ReleaseError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        # Name the bundle, not the private staging copy, in what the technician reads.
        raise type(exc)(str(exc).replace(str(staging), f"bundle {version}")) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("staged release %s (%s)", version, report.sha256[:12])
    return replace(report, path=str(target))


def _verify(policy: ReleasePolicy, staging: Path, version: str, manifest: Manifest, trust: Trust) -> StageReport:
    """Load both models with this device's runtime, reproduce the golden samples, measure latency."""
    from edge.engine.selftest import measure_bundle_latency, run_cascade, run_golden  # OpenCV: only needed here

    loaded = load_verified(manifest, runtime=policy.runtime, threads=policy.threads)
    golden = run_golden(loaded)
    golden.raise_for_failures()
    run_cascade(loaded)
    latency = measure_bundle_latency(loaded, runs=policy.latency_runs)
    limit = policy.max_latency_ms
    if limit is not None and latency.total_ms_p50 > limit:
        raise LatencyTooHigh(
            f"bundle {version}: classifier + segmenter take {latency.total_ms_p50:.1f} ms per "
            f"frame on this device (median of {latency.runs}), above the limit of {limit:g} ms"
        )
    return StageReport(
        version,
        str(staging),
        loaded.sha256,
        trust.signer,
        golden.as_dict(),
        Latency(**latency.as_dict()),
        runtime=loaded.classifier.runtime,
        trust=trust.describe(),
    )
