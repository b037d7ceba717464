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


DEFAULT_L2_BYTES = 1 << 20
MAX_ROTATION_COPIES = 16


def l2_cache_bytes(cpu: int = 0) -> int:
    """Size of the core's private L2 from sysfs, or 1 MiB where it can't be read."""
    base = Path(f"/sys/devices/system/cpu/cpu{cpu}/cache")
    try:
        for index in sorted(base.glob("index*")):
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
            if level == "2" and kind in ("Unified", "Data") and size[:-1].isdigit():
                return int(size[:-1]) * {"K": 1 << 10, "M": 1 << 20}.get(size[-1], 1)
    except OSError:
        pass
    return DEFAULT_L2_BYTES


def rotation_copies(footprint_bytes: int, l2_bytes: int, limit: int = MAX_ROTATION_COPIES) -> int:
    """How many copies of a workload's data together exceed 2 x L2 (at least 1, at most `limit`).

    A block timed alone finds its weights in L2 at every call; inside a network the blocks before it
    have evicted them. Rotating calls over this many copies gives the isolated block cold weights too.
    """
    if footprint_bytes <= 0:
        return limit
    return max(1, min(limit, -(-2 * l2_bytes // footprint_bytes)))


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def pin_allocator(threshold_bytes: int = 1 << 30) -> dict[str, Any]:
    """Keep glibc from returning large tensors' memory to the OS between calls.

    By default glibc serves big allocations with mmap and trims the heap top, so every inference
    re-faults its activation buffers: measured here, that page-fault churn made whole 224x224
    networks 10-30% slower than the same network with a steady heap, and their time unrepeatable
    (docs/LATENCY_MODEL.md). A serving process reaches a steady heap; so do our measurements, for
    blocks and networks alike. Returns what was applied (recorded in the fingerprint).
    """
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, threshold_bytes))
    except (OSError, AttributeError):
        ok = False  # not glibc: the platform's allocator is what gets measured
    return {"allocator": "glibc-pinned" if ok else "default", "threshold_bytes": threshold_bytes if ok else None}


def memory_available_bytes() -> int:
    """Memory this host can give a new allocation without swapping (Linux's MemAvailable; the
    physical total where that is unknown)."""
    text = _read("/proc/meminfo") or ""
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 1 << 40  # unknown: do not refuse
