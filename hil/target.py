"""The Target seam: anything that can describe itself and time workloads.

Implementations: in-process local (`hil.devices.agent.local`), a remote agent over SSH
(`hil.devices.host.ssh_target`), an RTL simulation (`hil.devices.host.rtl_sim`), a PYNQ board. The LUT builder,
the latency model and the optimizers never know which.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from hil.measure import Measurement, MeasureSettings
from hil.workload import Workload, canonical_json


def fingerprint_class(fingerprint: dict[str, Any]) -> str:
    """Hash of the stable part of a fingerprint: measurements are only combined within one class.

    A fingerprint is `{"class": {...}, "state": {...}}`: `class` holds what makes two measurements
    comparable (hardware, runtime versions, threads, batch, protocol), `state` what was read at the
    time (frequency, temperature) and is kept but not compared.
    """
    return hashlib.sha256(canonical_json(fingerprint["class"]).encode()).hexdigest()[:16]


@runtime_checkable
class Target(Protocol):
    name: str
    provenance: str  # "measured" or "simulated"

    def describe(self, settings: MeasureSettings) -> dict[str, Any]:
        """The fingerprint measurements taken with these settings will carry."""
        ...

    def measure(self, workloads: Sequence[Workload], settings: MeasureSettings) -> Iterator[Measurement]:
        """Time each workload; yield one record per workload as soon as it is done, failures included."""
        ...

    def close(self) -> None: ...
