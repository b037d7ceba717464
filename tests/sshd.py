"""Real OpenSSH servers on 127.0.0.1 for the device-farm tests.

Each `SshdHost` is an `sshd -D -e -f <own config>` run as the current user on a free port, with its
own ed25519 host key, an authorized_keys file holding the test's user key, no PAM and no passwords.
It is stopped by pid. `kill()` takes down the listener and every session it forked (the agent
included), the way a host that crashes or drops off the network would.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def sshd_missing() -> str | None:
    """Why real-sshd tests cannot run here, or None."""
    if not os.path.exists(SSHD):
        return "OpenSSH sshd not installed (apt-get install openssh-server)"
    if not os.path.exists(SSH_KEYGEN):
        return "ssh-keygen not installed (apt-get install openssh-client)"
    return None


def keygen(path: Path, comment: str = "hil-test") -> Path:
    """A fresh unencrypted ed25519 key pair at `path` (+ `.pub`)."""
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    """Every descendant of `pid`, found through /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may contain spaces: the ppid follows the last ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in parents.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


@dataclass
class SshdHost:
    """One sshd on loopback, with everything a client needs to reach it."""

    name: str
    root: Path
    user_key: Path
    port: int = 0
    user: str = field(default_factory=getpass.getuser)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.host_key = self.root / "ssh_host_ed25519_key"
        if not self.host_key.exists():
            keygen(self.host_key, f"host-{self.name}")
        self.authorized_keys = self.root / "authorized_keys"
        if not self.authorized_keys.exists():
            self.authorized_keys.write_text(Path(str(self.user_key) + ".pub").read_text())
        self.known_hosts = self.root / "known_hosts"
        self.workdir = self.root / "agent-workdir"
        self.log = self.root / "sshd.log"

    @property
    def host_key_line(self) -> str:
        """This host's known_hosts line."""
        kind, b64 = Path(str(self.host_key) + ".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {b64}\n"

    def trust(self) -> None:
        """Write this host's key into its known_hosts file (what `hil farm trust` does after asking)."""
        self.known_hosts.write_text(self.host_key_line)

    def _config(self) -> Path:
        cfg = self.root / "sshd_config"
        cfg.write_text(
            "\n".join([
                f"Port {self.port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {self.host_key}",
                f"PidFile {self.root / 'sshd.pid'}",
                f"AuthorizedKeysFile {self.authorized_keys}",
                "AuthenticationMethods publickey",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                "AllowTcpForwarding yes",
                "X11Forwarding no",
                "PrintMotd no",
                "MaxStartups 64",
                "MaxSessions 32",
                "LogLevel VERBOSE",
                "Subsystem sftp internal-sftp",
                "",
            ])
        )
        return cfg

    def start(self) -> SshdHost:
        """Start sshd (on a new free port unless one was fixed) and wait until it accepts connections."""
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        for _ in range(5):
            if not self.port:
                self.port = free_port()
            cfg = self._config()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=log)
            if self._wait_ready():
                return self
            self.stop()
            self.port = 0  # taken by someone else meanwhile: try another
        raise RuntimeError(f"sshd {self.name} did not start; log:\n{self.log.read_text()[-2000:]}")

    def _wait_ready(self, timeout_s: float = 10.0) -> bool:
        assert self.proc is not None
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return True
            time.sleep(0.05)
        return False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def kill(self) -> None:
        """Crash the host: SIGKILL the listener and every session and agent it forked."""
        if self.proc is None:
            return
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """Stop the listener and its sessions (by pid), politely first."""
        if self.proc is None:
            return
        kids = _children(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self.proc = None

    def ssh_section(self, python: str, **extra: object) -> dict[str, object]:
        """The inventory's `ssh:` section that reaches this host."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "key_file": str(self.user_key),
            "known_hosts": str(self.known_hosts),
            "python": python,
            "workdir": str(self.workdir),
            "connect_timeout_s": 10,
            "command_timeout_s": 120,
            **extra,
        }


def write_inventory(path: Path, devices: dict[str, dict[str, Any]], local: bool | dict[str, Any] = True) -> Path:
    """An inventory file with the given devices and `local-cpu` (with `local`'s fields; none if False)."""
    extra = local if isinstance(local, dict) else {}
    base = {"local-cpu": {"backend": "torch-cpu", "threads": 1, **extra}} if local is not False else {}
    path.write_text(yaml.safe_dump({"version": 1, "devices": {**base, **devices}}, sort_keys=False))
    return path


SshdFactory = Callable[[str], SshdHost]  # the `sshd_factory` fixture: name -> a started, trusted host
