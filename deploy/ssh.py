"""OpenSSH transport for crack-deploy: run commands and copy directories on a device.

Everything goes through the system `ssh`/`rsync`/`scp`, so the technician's
`~/.ssh/config` (host aliases, users, ports, jump hosts, keys, agent) applies
unchanged; `-F FILE` and `-o OPTION` are passed through when given. BatchMode
is on: a deploy never stops at a password prompt in the middle of a rollout.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class RemoteError(Exception):
    """A remote command or copy failed; the message names the host and what failed."""

    def __init__(self, host: str, message: str, payload: dict | None = None):
        super().__init__(f"{host}: {message}")
        self.host = host
        self.payload = payload or {}


class SSHUnreachable(RemoteError):
    """ssh itself failed (exit 255): name resolution, refused connection, authentication."""


@dataclass(frozen=True)
class SSHOptions:
    config_file: Path | None = None  # -F
    options: tuple[str, ...] = ()  # -o KEY=VALUE ...
    connect_timeout_s: int = 10
    batch_mode: bool = True
    # Directory for connection-sharing sockets: one SSH connection per device carries all of a
    # deployment's commands and copies (one handshake instead of a dozen over a Pi's WiFi).
    control_dir: Path | None = None

    def argv(self) -> list[str]:
        """ssh arguments before the destination (also used as rsync's -e command)."""
        args = []
        if self.config_file is not None:
            args += ["-F", str(self.config_file)]
        if self.batch_mode:
            args += ["-o", "BatchMode=yes"]
        args += [
            "-o",
            f"ConnectTimeout={self.connect_timeout_s}",
            "-o",
            "ServerAliveInterval=10",
            "-o",
            "ServerAliveCountMax=3",
        ]
        if self.control_dir is not None:
            args += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_dir}/%C", "-o", "ControlPersist=60"]
        for opt in self.options:
            args += ["-o", opt]
        return args


@dataclass
class Remote:
    """One device reached over SSH. `destination` is anything ssh takes: alias, user@host, ssh://user@host:port."""

    destination: str
    ssh: SSHOptions = field(default_factory=SSHOptions)

    def command(self, remote_cmd: str) -> list[str]:
        return ["ssh", *self.ssh.argv(), self.destination, remote_cmd]

    def run(
        self, remote_cmd: str, timeout_s: float, input_text: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run a shell command line on the device; raises RemoteError on ssh failure or (with check) a non-zero exit."""
        argv = self.command(remote_cmd)
        log.debug("%s$ %s", self.destination, remote_cmd)
        try:
            result = subprocess.run(
                argv,
                input=input_text if input_text is not None else "",
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise RemoteError(self.destination, f"no answer within {timeout_s:.0f} s running: {remote_cmd}") from None
        except FileNotFoundError:
            raise RemoteError(self.destination, "ssh not found; install the OpenSSH client") from None
        if result.returncode == 255:
            raise SSHUnreachable(self.destination, f"ssh failed: {_last_line(result.stderr) or 'exit 255'}")
        if check and result.returncode != 0:
            raise RemoteError(
                self.destination,
                f"`{remote_cmd}` exited {result.returncode}: {_last_line(result.stderr) or _last_line(result.stdout)}",
            )
        return result

    def run_json(self, remote_cmd: str, timeout_s: float) -> dict:
        """Run a `crackd ... --json` command; returns its JSON,
        raises RemoteError with the device's own error message."""
        result = self.run(remote_cmd, timeout_s, check=False)
        payload = _last_json(result.stdout)
        if payload is None:
            detail = _last_line(result.stderr) or _last_line(result.stdout) or f"exit {result.returncode}"
            raise RemoteError(self.destination, f"`{remote_cmd}` gave no JSON answer: {detail}")
        if result.returncode != 0 or payload.get("ok") is False:
            raise RemoteError(self.destination, str(payload.get("error") or _last_line(result.stderr)), payload)
        return payload

    def read_bytes(self, remote_cmd: str, timeout_s: float) -> bytes:
        """Run a command that writes binary data (a tar) on stdout; RemoteError on ssh failure or a non-zero exit."""
        log.debug("%s$ %s", self.destination, remote_cmd)
        try:
            result = subprocess.run(self.command(remote_cmd), input=b"", capture_output=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RemoteError(self.destination, f"no answer within {timeout_s:.0f} s running: {remote_cmd}") from None
        except FileNotFoundError:
            raise RemoteError(self.destination, "ssh not found; install the OpenSSH client") from None
        stderr = result.stderr.decode(errors="replace")
        if result.returncode == 255:
            raise SSHUnreachable(self.destination, f"ssh failed: {_last_line(stderr) or 'exit 255'}")
        if result.returncode != 0:
            raise RemoteError(self.destination, f"`{remote_cmd}` exited {result.returncode}: {_last_line(stderr)}")
        return result.stdout

    def open(self, remote_cmd: str) -> subprocess.Popen:
        """Start a long-running remote command with pipes (the deployment lock session)."""
        return subprocess.Popen(
            self.command(remote_cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def close_shared_connection(self) -> None:
        """End the shared connection (ControlMaster) to this device, if one was opened."""
        if self.ssh.control_dir is not None:
            subprocess.run(["ssh", *self.ssh.argv(), "-O", "exit", self.destination], capture_output=True, timeout=15)

    def upload_dir(self, local: Path, remote_dir: str, timeout_s: float) -> str:
        """Copy directory `local` to `remote_dir` (created; its parent must exist). Returns the tool used.

        rsync when this machine has it, falling back to scp when the device lacks it (rsync exits 12 or
        127 when the remote end cannot be started).
        """
        local = Path(local)
        if shutil.which("rsync"):
            port = self._uri_port()
            ssh_cmd = shlex.join(["ssh", *self.ssh.argv(), *(["-p", port] if port else [])])
            result = self._copy(
                [
                    "rsync",
                    "-rtL",
                    "--chmod=D755,F644",
                    "-e",
                    ssh_cmd,
                    f"{local}/",
                    f"{self._host_for_copy()}:{remote_dir}/",
                ],
                local,
                timeout_s,
            )
            if result.returncode == 0:
                return "rsync"
            if result.returncode == 255 or (
                result.returncode not in (12, 127) and "command not found" not in result.stderr
            ):
                raise self._copy_error("rsync", local, result)
            log.info("%s: no rsync on the device, copying with scp", self.destination)
        result = self._copy(
            ["scp", "-q", "-r", *self._scp_args(), str(local), f"{self._host_for_copy()}:{remote_dir}"],
            local,
            timeout_s,
        )
        if result.returncode != 0:
            raise self._copy_error("scp", local, result)
        return "scp"

    def _copy(self, argv: list[str], local: Path, timeout_s: float) -> subprocess.CompletedProcess:
        log.debug("%s", shlex.join(argv))
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RemoteError(self.destination, f"copying {local} took longer than {timeout_s:.0f} s") from None

    def _copy_error(self, tool: str, local: Path, result: subprocess.CompletedProcess) -> RemoteError:
        cls = SSHUnreachable if result.returncode == 255 else RemoteError
        return cls(
            self.destination, f"{tool} of {local} failed: {_last_line(result.stderr) or f'exit {result.returncode}'}"
        )

    def _host_for_copy(self) -> str:
        """rsync and scp take [user@]host, not ssh:// URIs; a port in the URI goes to -p/-P instead."""
        dest = self.destination
        if dest.startswith("ssh://"):
            dest = dest[len("ssh://") :]
            if ":" in dest.rsplit("@", 1)[-1]:
                dest = dest.rsplit(":", 1)[0]
        return dest

    def _uri_port(self) -> str | None:
        dest = self.destination
        if dest.startswith("ssh://") and ":" in dest.rsplit("@", 1)[-1]:
            return dest.rsplit(":", 1)[1]
        return None

    def _scp_args(self) -> list[str]:
        args = self.ssh.argv()
        port = self._uri_port()
        return args + (["-P", port] if port else [])


def remote_join(prefix: str, args: list[str]) -> str:
    """A remote shell command line: `prefix` (e.g. `sudo -n
    /opt/crackd/venv/bin/crackd`) verbatim, then quoted arguments."""
    return f"{prefix} {shlex.join(args)}" if args else prefix


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _last_json(text: str) -> dict | None:
    for line in reversed((text or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None
