"""torch-cpu backend: eager PyTorch inference on the host CPU, threads and affinity set and recorded."""

from __future__ import annotations

from typing import Any

import torch

from hil.devices.backend import MeasureFailure
from hil.devices.host_info import affinity
from hil.devices.torch_build import build_module, input_shape
from hil.measure import MeasureSettings, Stats, time_host
from hil.workload import Workload


class TorchCpuBackend:
    name = "torch-cpu"

    def runtime_info(self, settings: MeasureSettings) -> dict[str, Any]:
        torch.set_num_threads(settings.threads)
        return {
            "runtime": "torch",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "affinity": affinity(),
            "mkldnn": bool(torch.backends.mkldnn.is_available()),
            "precision": "float32",
        }

    def measure_one(self, workload: Workload, settings: MeasureSettings) -> tuple[Stats, dict[str, Any]]:
        torch.set_num_threads(settings.threads)
        if settings.clock == "thread" and settings.threads != 1:
            raise MeasureFailure("unsupported", f"the thread-CPU clock times one thread only (threads is "
                                                f"{settings.threads}): {workload.key}")
        try:
            module = build_module(workload).eval()
            x = torch.randn(input_shape(workload, settings.batch))
        except (TypeError, ValueError) as e:
            raise MeasureFailure("unsupported", str(e)) from None
        with torch.inference_mode():
            stats = time_host(lambda: module(x), settings)
        return stats, {}
