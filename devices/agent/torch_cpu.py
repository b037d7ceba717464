"""torch-cpu backend: eager PyTorch inference on the host CPU, threads and affinity set and recorded."""

from __future__ import annotations

import copy
import itertools
from contextlib import AbstractContextManager
from typing import Any

import torch

from hil.devices.agent.backend import MeasureFailure, Prepared, measure_prepared
from hil.devices.agent.host_info import affinity, l2_cache_bytes, pin_allocator, rotation_copies
from hil.measure import MeasureSettings, Stats
from hil.nets.torch_build import build_module, input_shape
from hil.workload import Workload


class TorchCpuBackend:
    """Eager torch on the CPU. With `cold_cache` (the default) calls rotate over copies of the module
    whose weights together exceed 2 x L2, so a block timed alone meets cold weights as it does inside
    a network (docs/LATENCY_MODEL.md); a whole network is larger than that and runs as one copy."""

    name = "torch-cpu"

    def __init__(self, cold_cache: bool = True) -> None:
        self.cold_cache = cold_cache
        self.l2_bytes = l2_cache_bytes()
        self._allocator: dict[str, Any] | None = None

    def _steady_heap(self) -> dict[str, Any]:
        # applied when measuring starts, not at construction: a backend object made on the host
        # only to ask for artifacts must not change the host process's allocator
        if self._allocator is None:
            self._allocator = pin_allocator()
        return self._allocator

    def runtime_info(self, settings: MeasureSettings) -> dict[str, Any]:
        torch.set_num_threads(settings.threads)
        return {
            "runtime": "torch",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "affinity": affinity(),
            "mkldnn": bool(torch.backends.mkldnn.is_available()),
            "precision": "float32",
            "cold_cache": self.cold_cache,
            "l2_bytes": self.l2_bytes,
            **self._steady_heap(),
        }

    def prepare(self, workload: Workload, settings: MeasureSettings) -> Prepared:
        torch.set_num_threads(settings.threads)
        self._steady_heap()
        if settings.clock == "thread" and settings.threads != 1:
            raise MeasureFailure("unsupported", f"the thread-CPU clock times one thread only (threads is "
                                                f"{settings.threads}): {workload.key}")
        try:
            module = build_module(workload).eval()
            x = torch.randn(input_shape(workload, settings.batch))
        except (TypeError, ValueError) as e:
            raise MeasureFailure("unsupported", str(e)) from None
        weights = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
        copies = rotation_copies(weights, self.l2_bytes) if self.cold_cache else 1
        modules = [module] + [copy.deepcopy(module) for _ in range(copies - 1)]
        turn = itertools.cycle(modules)

        def run() -> Any:
            return next(turn)(x)

        with torch.inference_mode():
            run()
        # the weight bytes feed the network calibration's weight term (hil.latency.NetworkCalibration)
        return Prepared(run, {"rotated_copies": copies, "weight_bytes": weights})

    def timing_context(self) -> AbstractContextManager[Any]:
        return torch.inference_mode()

    def measure_one(self, workload: Workload, settings: MeasureSettings) -> tuple[Stats, dict[str, Any]]:
        return measure_prepared(self, workload, settings)
