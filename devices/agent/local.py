"""The in-process target: a backend running in this very process, on this host."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from hil.devices.agent.backend import Backend, effective_schedule, run_backend
from hil.devices.agent.host_info import host_class, host_state, set_affinity
from hil.measure import Measurement, MeasureSettings
from hil.workload import Workload

AGENT_VERSION = "1"


def protocol_class(settings: MeasureSettings, backend: Backend) -> dict[str, Any]:
    """The protocol parameters that shape a measurement. The noise policy (CV threshold, attempts,
    time cap) decides what is re-measured, not how one measurement is taken, so it stays out; the
    schedule is the one the backend can really use."""
    d = settings.shaping_json()
    d["schedule"] = effective_schedule(backend, settings)
    return d


def fingerprint(device: str, backend: Backend, settings: MeasureSettings) -> dict[str, Any]:
    """The fingerprint of measurements taken here; shared by the local target and the remote agent."""
    return {
        "class": {
            "device": device,
            "backend": backend.name,
            "host": host_class(),
            "runtime": backend.runtime_info(settings),
            "batch": settings.batch,
            "protocol": protocol_class(settings, backend),
            "agent_version": AGENT_VERSION,
        },
        "state": host_state(),
    }


class LocalTarget:
    provenance = "measured"

    def __init__(self, name: str, backend: Backend, cpus: list[int] | None = None) -> None:
        self.name = name
        self.backend = backend
        self.cpus = cpus
        # a board backend says `board`; runtimes on a host CPU/GPU are `measured`
        self.provenance = getattr(backend, "provenance", LocalTarget.provenance)

    def describe(self, settings: MeasureSettings) -> dict[str, Any]:
        set_affinity(self.cpus)
        return fingerprint(self.name, self.backend, settings)

    def measure(self, workloads: Sequence[Workload], settings: MeasureSettings) -> Iterator[Measurement]:
        fp = self.describe(settings)
        for m in run_backend(self.backend, self.name, fp, workloads, settings, self.provenance):
            m.fingerprint = {"class": fp["class"], "state": host_state()}
            yield m

    def close(self) -> None:
        pass
