"""Plain functions and classes the tests (and tools/soak.py) share; fixtures live in the conftest.py files.

    paths           REPO, DEFAULT_BUNDLE (shipped), TEST_BUNDLE (tests/data/darkness-bundle), SCHEMAS
    ports           free_port
    waiting         wait_until
    status          read_status (a daemon's status.json)
    frames          write_frames (folder-camera frames from a pattern: 'C' crack, '.' clear, 'X' corrupt,
                    'G' grey and 'S' speck: classifier-positive, no crack),
                    huge_header_jpeg, damaged_video (files a source must refuse)
    disk            tmpfs mount, remount ro/rw, fill_disk (real ENOSPC / EROFS)
    mqtt            Broker (real mosquitto), Subscriber, make_test_ca
    sshd            start_sshd (real OpenSSH server on loopback), HOST
    bundles         copy_default_bundle, swap_golden_segmenter_outputs, make_signer_keys
    bundle_factory  the "darkness" Keras models behind tests/data/darkness-bundle (needs TensorFlow)
    daemon          daemon_dict, write_config, InProcess (a Supervisor in a thread), BLOCK
    cli             crackd, run_module (a command as a child process, output captured)
    releases        version_of (a bundle's), device_config (the release policy), crackd_models
    sources         wedging_source (a camera whose driver call hangs)

Only the light, dependency-free names are re-exported here; import the others from their module.
"""

from tests.helpers.frames import write_frames
from tests.helpers.paths import DEFAULT_BUNDLE, REPO, SCHEMAS, TEST_BUNDLE
from tests.helpers.ports import free_port
from tests.helpers.status import read_status
from tests.helpers.waiting import wait_until

__all__ = ["DEFAULT_BUNDLE", "REPO", "SCHEMAS", "TEST_BUNDLE", "free_port", "read_status", "wait_until", "write_frames"]
