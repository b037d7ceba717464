"""SSH transport to a device: paramiko, keys only, strict host-key checking, optional jump host.

- Authentication: the inventory's `key_file`, or the ssh-agent's keys when it names none. Never a
  password.
- Host keys: checked against the inventory's `known_hosts` file (default `~/.ssh/known_hosts`). An
  unknown or changed key is refused with its fingerprint; `hil farm trust DEVICE` records one, only
  after showing it (see `scan_host_key` and `record_host_key`).
- TCP_NODELAY is set on the socket before SSH starts: without it every request/reply exchange of the
  agent protocol waits for Nagle's algorithm and delayed ACKs (~40 ms).
- Timeouts: `connect_timeout_s` covers TCP connect, banner, key exchange, authentication and opening
  channels; the agent client applies `command_timeout_s` and `idle_timeout_s`.

Every failure becomes a DeviceError that names the device and the endpoint.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from hil.errors import ConfigError, DeviceError
from hil.inventory import SshConfig, remote_path_problem

# Remote paths that reach a command line (the Python interpreter, the agent's directory) must match
# this, and are quoted all the same. Nothing else is ever put on a command line.


class DeviceConfigError(DeviceError, ConfigError):
    """A device refuses us for a reason only a change of configuration fixes (host key, user key, the
    target's runtime): a build does not retry it."""


class HostKeyError(DeviceConfigError):
    """The server's host key is not the one known_hosts vouches for."""

    def __init__(
        self, device: str, message: str, entry: str, offered: paramiko.PKey, known_hosts: Path, known: tuple[str, ...]
    ) -> None:
        self.entry = entry
        self.offered = offered
        self.known_hosts = known_hosts
        self.known = known  # descriptions of the keys known_hosts holds for the entry
        super().__init__(device, message)


class HostKeyUnknownError(HostKeyError):
    pass


class HostKeyChangedError(HostKeyError):
    pass


def known_hosts_path(cfg: SshConfig) -> Path:
    return Path(os.path.expanduser(cfg.known_hosts or "~/.ssh/known_hosts"))


def host_entry(cfg: SshConfig) -> str:
    """The host's name in known_hosts, as OpenSSH writes it: `host`, or `[host]:port` off port 22."""
    return cfg.host if cfg.port == 22 else f"[{cfg.host}]:{cfg.port}"


def key_fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's `SHA256:...` fingerprint (what `ssh-keygen -lf` prints)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def describe_key(key: paramiko.PKey) -> str:
    return f"{key.get_name()} key {key_fingerprint(key)}"


def load_known_hosts(device: str, cfg: SshConfig) -> paramiko.HostKeys:
    path = known_hosts_path(cfg)
    keys = paramiko.HostKeys()
    if path.exists():
        try:
            keys.load(str(path))
        except (OSError, paramiko.SSHException) as e:
            raise DeviceError(device, f"cannot read known_hosts {path}: {e}") from None
    return keys


def known_keys(device: str, cfg: SshConfig) -> dict[str, paramiko.PKey]:
    """Key type -> key that known_hosts holds for this host (empty when unknown)."""
    found = load_known_hosts(device, cfg).lookup(host_entry(cfg))
    return {t: found[t] for t in found} if found else {}


def _verify_host_key(device: str, cfg: SshConfig, offered: paramiko.PKey, label: str) -> None:
    known = known_keys(device, cfg)
    path = known_hosts_path(cfg)
    entry = host_entry(cfg)
    if not known:
        raise HostKeyUnknownError(
            device,
            f"{label} {entry} is not in {path}; it offers {describe_key(offered)}. "
            f"Check that fingerprint with the host's owner, then run: hil farm trust {device}",
            entry, offered, path, (),
        )
    if any(k.asbytes() == offered.asbytes() for k in known.values()):
        return
    was = ", ".join(describe_key(k) for k in known.values())
    raise HostKeyChangedError(
        device,
        f"HOST KEY CHANGED for {label} {entry}: it offers {describe_key(offered)}, but {path} has {was}. "
        "Someone may be intercepting the connection, or the host was reinstalled; if the change is "
        f"expected, remove the old entry (ssh-keygen -R '{entry}' -f {path}) and run: hil farm trust {device}",
        entry, offered, path, tuple(describe_key(k) for k in known.values()),
    )


def _preferred_key_types(transport: paramiko.Transport, known: dict[str, paramiko.PKey]) -> None:
    """Ask for the host key type we already know, so a host with several keys shows the one we can check."""
    if not known:
        return
    opts = transport.get_security_options()
    want: list[str] = []
    for t in known:
        want += ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if t == "ssh-rsa" else [t]
    first = [t for t in want if t in opts.key_types]
    if first:
        opts.key_types = tuple(first + [t for t in opts.key_types if t not in first])


def user_keys(device: str, cfg: SshConfig) -> list[paramiko.PKey]:
    """The key file's key, or the ssh-agent's keys. Passphrase-protected files belong in the agent."""
    if cfg.key_file:
        path = Path(os.path.expanduser(cfg.key_file))
        try:
            return [paramiko.PKey.from_path(path)]
        except FileNotFoundError:
            raise DeviceConfigError(device, f"key file {path} not found") from None
        except paramiko.PasswordRequiredException:
            raise DeviceConfigError(
                device, f"key file {path} is passphrase-protected: load it into ssh-agent (ssh-add {path}) "
                "and remove key_file from the inventory",
            ) from None
        except (OSError, paramiko.SSHException, ValueError) as e:
            raise DeviceConfigError(device, f"key file {path}: not a usable private key ({e})") from None
    try:
        keys = list(paramiko.Agent().get_keys())
    except paramiko.SSHException as e:
        raise DeviceConfigError(device, f"cannot talk to the ssh-agent: {e}") from None
    if not keys:
        raise DeviceConfigError(
            device, "no ssh.key_file in the inventory and no keys in an ssh-agent "
            "(SSH_AUTH_SOCK unset, or `ssh-add` not run)",
        )
    return keys


@dataclass
class SshConnection:
    """An authenticated transport to a device, and the jump-host transports it runs through."""

    device: str
    cfg: SshConfig
    transport: paramiko.Transport
    jumps: list[paramiko.Transport] = field(default_factory=list)
    host_key: paramiko.PKey | None = None
    _home: str | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.cfg.user}@{self.cfg.host}:{self.cfg.port}"

    def alive(self) -> bool:
        return self.transport.is_active()

    def open_session(self) -> paramiko.Channel:
        try:
            return self.transport.open_session(timeout=self.cfg.connect_timeout_s)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise DeviceError(self.device, f"cannot open an SSH session on {self.endpoint}: {e or 'closed'}") from None

    def sftp(self) -> paramiko.SFTPClient:
        try:
            client = paramiko.SFTPClient.from_transport(self.transport)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise DeviceError(self.device, f"SFTP unavailable on {self.endpoint}: {e or 'closed'}") from None
        if client is None:
            raise DeviceError(self.device, f"SFTP unavailable on {self.endpoint}")
        client.get_channel().settimeout(self.cfg.command_timeout_s)
        return client

    def home(self, sftp: paramiko.SFTPClient) -> str:
        """The remote user's home directory (where the SFTP server starts)."""
        if self._home is None:
            self._home = sftp.normalize(".")
        return self._home

    def remote_path(self, sftp: paramiko.SFTPClient, path: str, what: str) -> str:
        """An absolute remote path: `~/x` and relative paths are under the home directory."""
        if path == "~":
            path = self.home(sftp)
        elif path.startswith("~/"):
            path = self.home(sftp).rstrip("/") + path[1:]
        elif not path.startswith("/"):
            path = self.home(sftp).rstrip("/") + "/" + path
        return safe_remote_path(self.device, what, path)

    def close(self) -> None:
        for t in [self.transport, *reversed(self.jumps)]:
            with contextlib.suppress(Exception):
                t.close()


def safe_remote_path(device: str, what: str, path: str) -> str:
    """Reject a remote path that could mean anything to a shell (it is also quoted where used)."""
    problem = remote_path_problem(path)
    if problem:
        raise DeviceConfigError(device, f"{what} {path!r} {problem}")
    return path


def _sock_to(
    device: str, cfg: SshConfig, via: paramiko.Transport | None, label: str
) -> socket.socket | paramiko.Channel:
    where = f"{label} {cfg.host}:{cfg.port}"
    if via is not None:
        try:
            return via.open_channel("direct-tcpip", (cfg.host, cfg.port), ("127.0.0.1", 0),
                                    timeout=cfg.connect_timeout_s)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise DeviceError(device, f"the jump host cannot reach {where}: {e or 'refused'}") from None
    try:
        sock = socket.create_connection((cfg.host, cfg.port), timeout=cfg.connect_timeout_s)
    except TimeoutError:
        raise DeviceError(device, f"{where}: no answer within {cfg.connect_timeout_s:g} s") from None
    except ConnectionRefusedError:
        raise DeviceError(device, f"{where}: connection refused (is sshd running there?)") from None
    except OSError as e:
        raise DeviceError(device, f"cannot reach {where}: {e.strerror or e}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _start(
    device: str, cfg: SshConfig, via: paramiko.Transport | None, label: str
) -> paramiko.Transport:
    """TCP (or a channel through the jump host) + SSH key exchange; not yet authenticated."""
    sock = _sock_to(device, cfg, via, label)
    t = paramiko.Transport(sock)
    t.banner_timeout = cfg.connect_timeout_s
    t.handshake_timeout = cfg.connect_timeout_s
    t.auth_timeout = cfg.connect_timeout_s
    _preferred_key_types(t, known_keys(device, cfg))
    try:
        t.start_client(timeout=cfg.connect_timeout_s)
    except (paramiko.SSHException, OSError, EOFError) as e:
        t.close()
        raise DeviceError(device, f"SSH handshake with {label} {cfg.host}:{cfg.port} failed: {e or 'closed'}") from None
    return t


def _authenticate(device: str, cfg: SshConfig, t: paramiko.Transport, label: str) -> None:
    keys = user_keys(device, cfg)
    where = f"{label} {cfg.user}@{cfg.host}:{cfg.port}"
    for key in keys:
        try:
            t.auth_publickey(cfg.user, key)
        except paramiko.AuthenticationException:
            continue
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise DeviceError(device, f"authentication with {where} failed: {e or 'connection closed'}") from None
        if t.is_authenticated():
            return
    source = f"key file {os.path.expanduser(cfg.key_file)}" if cfg.key_file else f"{len(keys)} ssh-agent key(s)"
    raise DeviceConfigError(device, f"{where} refused our user key ({source}); is its public key in authorized_keys?")


def jump_config(cfg: SshConfig) -> SshConfig | None:
    """The jump host's settings; its known_hosts and key_file default to the device's."""
    j = cfg.jump
    if j is None:
        return None
    inherited = {"known_hosts": j.known_hosts or cfg.known_hosts, "key_file": j.key_file or cfg.key_file}
    return j.model_copy(update=inherited)


def _open_chain(device: str, cfg: SshConfig, jumps: list[paramiko.Transport]) -> paramiko.Transport | None:
    """Connect and authenticate the jump hosts in front of `cfg`, outermost first; returns the innermost."""
    j = jump_config(cfg)
    if j is None:
        return None
    via = _open_chain(device, j, jumps)
    t = _start(device, j, via, "jump host")
    jumps.append(t)
    _verify_host_key(device, j, t.get_remote_server_key(), "jump host")
    _authenticate(device, j, t, "jump host")
    return t


def _open_host(device: str, cfg: SshConfig) -> tuple[paramiko.Transport, list[paramiko.Transport], paramiko.PKey]:
    """The transport to the host through its jump chain (every jump host's key checked and its login
    done) and the key the host offers, not yet checked. On failure nothing stays open."""
    jumps: list[paramiko.Transport] = []
    t: paramiko.Transport | None = None
    try:
        via = _open_chain(device, cfg, jumps)
        t = _start(device, cfg, via, "host")
        return t, jumps, t.get_remote_server_key()
    except BaseException:
        _close_all(t, jumps)
        raise


def _close_all(t: paramiko.Transport | None, jumps: list[paramiko.Transport]) -> None:
    if t is not None:
        t.close()
    for j in jumps:
        j.close()


def connect(device: str, cfg: SshConfig) -> SshConnection:
    """An authenticated connection to the device, host key (and every jump host's) checked strictly."""
    t, jumps, key = _open_host(device, cfg)
    try:
        _verify_host_key(device, cfg, key, "host")
        _authenticate(device, cfg, t, "host")
    except BaseException:
        _close_all(t, jumps)
        raise
    # Keepalives let a dead peer (or a NAT that dropped us) show up as an error instead of a hang.
    t.set_keepalive(max(1, int(min(30.0, cfg.idle_timeout_s / 3))))
    return SshConnection(device, cfg, t, jumps, key)


@dataclass(frozen=True)
class ScannedKey:
    """What a host offers, and what known_hosts says about it."""

    entry: str
    key: paramiko.PKey
    known_hosts: Path
    status: str  # "known" | "unknown" | "changed"
    known: tuple[str, ...]  # descriptions of the keys known_hosts holds for the entry

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.key)


def scan_host_key(device: str, cfg: SshConfig) -> ScannedKey:
    """The host key a device offers (jump hosts must already be trusted). Authenticates nothing."""
    t, jumps, key = _open_host(device, cfg)
    _close_all(t, jumps)
    known = known_keys(device, cfg)
    if not known:
        status = "unknown"
    elif any(k.asbytes() == key.asbytes() for k in known.values()):
        status = "known"
    else:
        status = "changed"
    return ScannedKey(host_entry(cfg), key, known_hosts_path(cfg), status,
                      tuple(describe_key(k) for k in known.values()))


def record_host_key(path: Path, entry: str, key: paramiko.PKey) -> None:
    """Append `entry keytype base64` to a known_hosts file (created 0600 with its folder if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        if f.tell() > 0:
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write("\n")
        f.write(f"{entry} {key.get_name()} {key.get_base64()}\n")


def forget_host_key(path: Path, entry: str) -> int:
    """Remove every line of a known_hosts file that names `entry` (plain or hashed); returns how many."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines(keepends=True):
        parsed = None
        if line.strip() and not line.lstrip().startswith("#"):
            with contextlib.suppress(Exception):  # a line paramiko cannot parse is kept as it is
                parsed = paramiko.hostkeys.HostKeyEntry.from_line(line)
        if parsed is not None and any(_names(h, entry) for h in parsed.hostnames):
            dropped += 1
            continue
        kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return dropped


def _names(pattern: str, entry: str) -> bool:
    if pattern.startswith("|1|"):
        salt = pattern.split("|")[2]
        return paramiko.HostKeys.hash_host(entry, salt) == pattern
    return pattern == entry
