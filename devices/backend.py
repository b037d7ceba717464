"""The Backend seam: the code that runs where the hardware is and times one workload.

A backend is hosted in-process by the local target or inside the remote agent on an SSH host. It
builds the workload in its runtime once (outside the timing), then times it with the protocol of
MEASUREMENT.md. Failures are raised as `MeasureFailure` with an explicit kind, and become records.

Agent-side code: standard library + the runtime itself; no pydantic, no hil CLI.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from hil.measure import Measurement, MeasureSettings, Stats
from hil.workload import Workload


class MeasureFailure(Exception):
    """One workload could not be timed; `kind` is one of hil.measure.ERROR_KINDS."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Backend(Protocol):
    name: str  # "torch-cpu", "torch-cuda", "tflite", "pynq", ...

    def runtime_info(self, settings: MeasureSettings) -> dict[str, Any]:
        """Runtime name, versions and the settings it actually applied (threads, affinity, ...)."""
        ...

    def measure_one(self, workload: Workload, settings: MeasureSettings) -> tuple[Stats, dict[str, Any]]:
        """Build, warm up and time one workload: its statistics and any extra metrics."""
        ...


def run_backend(
    backend: Backend,
    device: str,
    fingerprint: dict[str, Any],
    workloads: Sequence[Workload],
    settings: MeasureSettings,
    provenance: str = "measured",
) -> Iterator[Measurement]:
    """Measure each workload in turn, turning failures into records instead of stopping."""
    for w in workloads:
        try:
            stats, metrics = backend.measure_one(w, settings)
        except MeasureFailure as e:
            yield Measurement(device, w.key, w.to_json(), fingerprint, provenance, None, ok=False,
                              error_kind=e.kind, error=str(e))
            continue
        except Exception as e:  # a runtime's own exception: a failed run, not a crashed build
            yield Measurement(device, w.key, w.to_json(), fingerprint, provenance, None, ok=False,
                              error_kind="run_error", error=f"{type(e).__name__}: {e}")
            continue
        yield Measurement(device, w.key, w.to_json(), fingerprint, provenance, stats, metrics,
                          noisy=stats.cv > settings.cv_threshold, created_at=time.time())
