"""The farm's health: one device reached and exercised the way a build would reach it.

`check_device` connects (SSH and the agent, or in-process), times a few round trips, lists the
target's Python and runtimes, opens its backend and computes the fingerprint class its measurements
would get, and reads who holds its lease. It never raises for a device's own fault: the row says
what failed, so one bad device never hides the others'.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from typing import Any

from hil.devices.agent.server import capabilities
from hil.devices.host.ssh_target import BoardAbsentError, SshTarget, probe
from hil.devices.host.ssh_transport import key_fingerprint
from hil.devices.host.targets import absence_reason, open_target, settings_for
from hil.errors import ConfigError, DeviceError, HilError
from hil.inventory import Device, Inventory
from hil.lease import lease_holder
from hil.target import fingerprint_class

PINGS = 5


def _runtimes(caps: dict[str, Any]) -> str:
    parts = [f"{k} {v}" for k, v in caps.items() if k != "cuda" and v]
    cuda = caps.get("cuda")
    if isinstance(cuda, dict) and cuda.get("available"):
        parts.append(f"CUDA {cuda.get('built')} ({', '.join(cuda.get('devices') or [])})")
    return ", ".join(parts) or "none"


def _check_remote(name: str, dev: Device, row: dict[str, Any]) -> None:

    session = probe(name, dev)
    try:
        row["reachable"] = True
        row["connect_ms"] = round(session.connect_s * 1e3, 1)
        row["rtt_ms"] = round(statistics.median(session.ping() for _ in range(PINGS)), 3)
        h = session.hello
        row["python"] = f"{h.get('python')} ({h.get('executable')})"
        row["capabilities"] = h.get("capabilities", {})
        row["runtimes"] = _runtimes(row["capabilities"])
        row["agent"] = f"{h.get('agent_version')}/{h.get('bundle')}"
        row["host_key"] = key_fingerprint(session.conn.host_key) if session.conn.host_key else None
        row["lease_holder"] = session.lease_holder()
    except BaseException:
        session.close()
        raise
    target = SshTarget(name, dev, session)  # opens the backend; closes the session if it cannot
    try:
        row["fingerprint"] = fingerprint_class(target.describe(settings_for(dev)))
        row["backend_ok"] = True
    finally:
        target.close()


def _check_local(inv: Inventory, name: str, dev: Device, row: dict[str, Any]) -> None:

    row["reachable"] = True
    row["python"] = f"{platform.python_version()} ({sys.executable})"
    row["capabilities"] = capabilities()
    row["runtimes"] = _runtimes(row["capabilities"])
    target = open_target(inv, name)
    try:
        row["lease_holder"] = lease_holder(target)
        row["fingerprint"] = fingerprint_class(target.describe(settings_for(dev)))
        row["backend_ok"] = True
    finally:
        target.close()


def check_device(inv: Inventory, name: str, allow_substitute: bool = False) -> dict[str, Any]:
    """One row of `hil farm check`; never raises for a device's own fault. A device that is absent
    (unreachable, or its board not there) and names a substitute gets `substitution`: whether the
    substitute would stand in (allowed by `allow_substitute` or the inventory) and why."""
    dev = inv.device(name)
    where = f"{dev.ssh.user}@{dev.ssh.host}:{dev.ssh.port}" if dev.ssh else "this host"
    row: dict[str, Any] = {
        "device": name, "backend": dev.backend, "where": where, "reachable": False, "backend_ok": False,
        "connect_ms": None, "rtt_ms": None, "python": None, "runtimes": None, "capabilities": None,
        "agent": None, "host_key": None, "fingerprint": None, "lease_holder": None,
        "substitute": dev.substitute, "error": None, "absent": None, "substituted_by": None, "substitution": None,
    }
    t0 = time.perf_counter()
    try:
        if dev.ssh is not None:
            _check_remote(name, dev, row)
        else:
            _check_local(inv, name, dev, row)
    except HilError as e:
        row["error"] = str(e)
        if isinstance(e, DeviceError) and (isinstance(e, BoardAbsentError) or not isinstance(e, ConfigError)):
            row["absent"] = absence_reason(e)
            if dev.substitute is not None:
                allowed = allow_substitute or dev.allow_substitute
                row["substituted_by"] = dev.substitute if allowed else None
                row["substitution"] = (f"{dev.substitute!r} would stand in ({row['absent']})" if allowed else
                                       f"{dev.substitute!r} may stand in only with --allow-substitute or "
                                       "'allow_substitute: true'")
    except Exception as e:  # one device's unexpected failure must not hide the others' rows
        row["error"] = f"device {name!r}: {type(e).__name__}: {e}"
    row["check_s"] = round(time.perf_counter() - t0, 2)
    return row
