"""A real OpenSSH server on a free loopback port, for deploying to a "device" that is this machine.

`start_sshd(d)` writes a host key, a throwaway user key authorised for root, an sshd_config and a client
ssh_config in which `pi-under-test` and `pi-twin` reach the server and `pi-unreachable` names a closed port.
sshd runs as root (privilege separation); the deploy tests are skipped without root and OpenSSH.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.ports import free_port
from tests.helpers.waiting import wait_until

SSHD = Path("/usr/sbin/sshd")
HOST = "pi-under-test"  # alias in the generated ssh_config


@dataclass
class Sshd:
    """A running sshd: `port`, the client `config` (ssh -F) and its working directory `dir`."""

    port: int
    config: Path
    dir: Path
    proc: subprocess.Popen
    log: object

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def start_sshd(d: Path, extra_config: str = "") -> Sshd:
    """Start sshd on 127.0.0.1:<free port> with its keys and configs in `d`; returns once it accepts connections.

    `extra_config`: more sshd_config lines (e.g. `SetEnv CRACKD_STATE_DIR=...`: a second "device" with its own state).
    """
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPermitRootLogin yes\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "Subsystem sftp internal-sftp\nMaxStartups 50:30:100\nMaxSessions 50\nLogLevel ERROR\nPrintMotd no\n"
        + extra_config
    )
    (d / "ssh_config").write_text(
        f"Host {HOST} pi-twin\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {d / 'user_key'}\n"
        f"  IdentitiesOnly yes\n  UserKnownHostsFile {d / 'known_hosts'}\n  StrictHostKeyChecking accept-new\n"
        f"  LogLevel ERROR\nHost pi-unreachable\n  HostName 127.0.0.1\n  Port {free_port()}\n  User root\n"
        f"  IdentityFile {d / 'user_key'}\n  UserKnownHostsFile {d / 'known_hosts'}\n"
        "  StrictHostKeyChecking accept-new\n  LogLevel ERROR\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    log = open(d / "sshd.log", "w")  # noqa: SIM115 (open while sshd runs; Sshd.stop closes it)
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)

    def accepting():
        if proc.poll() is not None:
            raise AssertionError(f"sshd exited: {(d / 'sshd.log').read_text()}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(accepting, 10, "sshd to listen", interval=0.1)
    return Sshd(port=port, config=d / "ssh_config", dir=d, proc=proc, log=log)
