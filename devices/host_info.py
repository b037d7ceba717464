"""What the host is: CPU model, cores, affinity, governor and frequency, read where readable.

Agent-side code: standard library only.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
from pathlib import Path
from typing import Any


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("model name") and ":" in line:
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def affinity() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def set_affinity(cpus: list[int] | None) -> list[int]:
    """Pin this process to `cpus` where the OS allows; returns the affinity in force."""
    if cpus:
        # Not every OS (or container) lets us pin; the affinity in force is what gets recorded.
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setaffinity(0, set(cpus))
    return affinity()


def host_class() -> dict[str, Any]:
    """The stable facts of this host (part of the fingerprint class)."""
    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def host_state() -> dict[str, Any]:
    """Readings that change while we measure (kept with each record, not compared)."""
    cpu = affinity()[0] if affinity() else 0
    base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"
    freq = _read(f"{base}/scaling_cur_freq")
    return {
        "governor": _read(f"{base}/scaling_governor"),
        "cur_freq_khz": int(freq) if freq and freq.isdigit() else None,
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
