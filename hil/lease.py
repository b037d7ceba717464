"""Exclusive device leases: two coordinators (two users, two processes) never time on one device at once.

A lease is an `flock` on a lock file, with the holder (user@host, pid, since when) written into it.
The operating system drops the lock when the holding process exits or dies, so a crashed
coordinator never leaves a stale lease behind. Where the lock lives:

- a remote device: in the agent's workdir on the target, held by the agent process
  (`hil.devices.agent.server`), so it is released when the agent exits or its SSH session dies;
- an in-process device (`local-cpu`, `rtl-sim`): a lock file on this host, one per device name, in
  `$HIL_LEASE_DIR` or `~/.cache/hil/leases`.

This module is shipped to targets inside the agent bundle: standard library and hil.errors only.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from hil.errors import DeviceError

LEASE_DIR_ENV = "HIL_LEASE_DIR"
# Who this coordinator is, for leases and the provenance of every record it stores (default
# user@host). Two coordinators on one host are told apart by it.
COORDINATOR_ENV = "HIL_COORDINATOR"

Holder = dict[str, Any]  # {"user", "host", "pid", "since", "coordinator"?, "device"?}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return str(os.getuid())


def coordinator_identity() -> str:
    """This coordinator's name: `$HIL_COORDINATOR`, or user@host."""
    return os.environ.get(COORDINATOR_ENV) or f"{_user()}@{socket.gethostname()}"


def this_holder() -> Holder:
    """Who we are, as written into a lease we take."""
    return {"user": _user(), "host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
            "coordinator": coordinator_identity()}


def describe_holder(h: Holder | None) -> str:
    """`alice@laptop pid 4242 since 12:03:11 (95 s ago)`; robust to partial or foreign records."""
    if not h:
        return "an unknown holder"
    who = f"{h.get('user', '?')}@{h.get('host', '?')} pid {h.get('pid', '?')}"
    coordinator = h.get("coordinator")
    if coordinator and coordinator != f"{h.get('user')}@{h.get('host')}":
        who = f"coordinator {coordinator} ({who})"
    since = h.get("since")
    if isinstance(since, (int, float)):
        ago = max(0.0, time.time() - since)
        who += f" since {time.strftime('%H:%M:%S', time.localtime(since))} ({ago:.0f} s ago)"
    return who


class LeaseBusy(Exception):
    """The lock stayed taken until the timeout; `holder` is what its holder wrote."""

    def __init__(self, holder: Holder | None, waited_s: float) -> None:
        super().__init__(f"held by {describe_holder(holder)}")
        self.holder = holder
        self.waited_s = waited_s


class LeaseBusyError(DeviceError):
    """A device stayed leased by someone else for longer than its lease timeout."""

    def __init__(self, device: str, holder: Holder | None, waited_s: float) -> None:
        self.holder = holder
        super().__init__(
            device,
            f"leased by {describe_holder(holder)}; gave up after waiting {waited_s:.0f} s "
            "(raise the device's lease_timeout_s to wait longer)",
        )


class Lease(Protocol):
    """An exclusive lease on one device: a lock file here (`FileLease`) or one in a shared store."""

    def acquire(self, holder: Holder, timeout_s: float, on_wait: Callable[[Holder | None], None] | None = None,
                poll_s: float = 0.2, heartbeat_s: float = 0.0) -> None:
        """Take the lease, waiting up to `timeout_s`; raises LeaseBusy naming the holder."""
        ...

    def release(self) -> None: ...

    def holder(self) -> Holder | None:
        """Who holds the lease now, or None when it is free."""
        ...


class FileLease:
    """An exclusive, non-reentrant flock on `path`. Polls so the wait can time out and be reported."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)
        with contextlib.suppress(OSError):  # group members share a device: let them take the lock too
            os.fchmod(fd, 0o664)
        return fd

    def acquire(
        self,
        holder: Holder,
        timeout_s: float,
        on_wait: Callable[[Holder | None], None] | None = None,
        poll_s: float = 0.2,
        heartbeat_s: float = 0.0,
    ) -> None:
        """Take the lock, waiting up to `timeout_s`. `on_wait(holder)` is called once when we must wait,
        then every `heartbeat_s` seconds while we still wait (0: only once). Raises LeaseBusy."""
        if self._fd is not None:
            raise RuntimeError(f"lease {self.path} is already held by this object")
        fd = self._open()
        t0 = time.monotonic()
        last_notice: float | None = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now - t0 >= timeout_s:
                    os.close(fd)
                    raise LeaseBusy(self.holder(), now - t0) from None
                due = last_notice is None or (heartbeat_s > 0 and now - last_notice >= heartbeat_s)
                if on_wait is not None and due:
                    h = self.holder()
                    for _ in range(25):  # the holder writes its record just after it takes the lock
                        if h != {}:
                            break
                        time.sleep(0.02)
                        h = self.holder()
                    on_wait(h)
                    last_notice = now
                time.sleep(min(poll_s, max(0.0, timeout_s - (now - t0))))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def holder(self) -> Holder | None:
        """Who holds the lock now (None when free). Takes nothing: probes with a separate descriptor."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # taken: read what the holder wrote
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
            data = os.pread(fd, 4096, 0)
        finally:
            os.close(fd)
        try:
            h = json.loads(data.decode())
        except (UnicodeDecodeError, ValueError):  # being rewritten right now, or not ours
            return {}
        return h if isinstance(h, dict) else {}


@runtime_checkable
class LeasedTarget(Protocol):
    """A target that holds its own lease where the device is (the SSH target: on the remote host)."""

    name: str

    def acquire_lease(self, holder: Holder, timeout_s: float, on_wait: Callable[[Holder | None], None]) -> None:
        """Take the device's lease or raise LeaseBusyError naming the holder."""
        ...

    def release_lease(self) -> None: ...

    def lease_holder(self) -> Holder | None: ...


def local_lease_path(device: str) -> Path:
    """The lock file of an in-process device. Any device name maps to a safe, distinct file name."""
    base = Path(os.environ.get(LEASE_DIR_ENV) or Path.home() / ".cache" / "hil" / "leases")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", device)[:64]
    digest = hashlib.sha256(device.encode()).hexdigest()[:10]
    return base / f"{safe}-{digest}.lock"


def _notice(device: str, timeout_s: float) -> Callable[[Holder | None], None]:
    def say(h: Holder | None) -> None:
        print(f"hil: device {device!r} is leased by {describe_holder(h)}; waiting up to {timeout_s:.0f} s",
              file=sys.stderr, flush=True)

    return say


@contextlib.contextmanager
def hold(
    target: Any,
    timeout_s: float,
    on_wait: Callable[[Holder | None], None] | None = None,
    lease: Lease | None = None,
) -> Iterator[None]:
    """Hold `target`'s device exclusively for the block; wait up to `timeout_s` for another holder.

    Remote targets lease on the device itself; in-process ones take `lease` (a shared store's, so
    coordinators that share only the store exclude each other) or else a lock file on this host.
    The default `on_wait` prints who holds the device to stderr, once, so a waiting user sees why.
    """
    name = target.name
    notice = on_wait or _notice(name, timeout_s)
    me = {**this_holder(), "device": name}
    if isinstance(target, LeasedTarget):
        target.acquire_lease(me, timeout_s, notice)
        try:
            yield
        finally:
            target.release_lease()
        return
    if lease is None:
        lease = FileLease(local_lease_path(name))
    try:
        lease.acquire(me, timeout_s, notice)
    except LeaseBusy as e:
        raise LeaseBusyError(name, e.holder, e.waited_s) from None
    try:
        yield
    finally:
        lease.release()


def lease_holder(target: Any, lease: Lease | None = None) -> Holder | None:
    """Who holds `target`'s device now, or None."""
    if isinstance(target, LeasedTarget):
        return target.lease_holder()
    return (lease or FileLease(local_lease_path(target.name))).holder()
