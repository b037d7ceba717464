"""torch-cuda backend: PyTorch inference on an NVIDIA GPU, timed with CUDA events.

The protocol of MEASUREMENT.md, GPU flavour:
- warm-up: at least `warmup_runs` and at least max(settings.warmup_s, `min_warmup_s` = 1 s), so
  clocks have ramped up and cuDNN's autotuner (`cudnn.benchmark`, set and recorded) has chosen;
- a timed run is `number` back-to-back invocations between two CUDA events on the current stream
  (grouped until a run lasts `min_run_ms`); the latency is device time per invocation in a stream,
  as TVM's time_evaluator reports it;
- inputs rotate through a pool larger than twice the L2 cache, so a small workload does not find
  its input already in cache, which it would not in a network;
- optional CUDA graphs: each invocation is a graph replay, which removes the per-kernel CPU launch
  cost (capture happens outside the timing); recorded;
- next to the device time, `metrics["host_ms"]` is the CPU time to issue one invocation. In eager
  mode at small batch the CPU issuing kernels is often the bottleneck; a network's time is then
  about max(Σ host, Σ device), not Σ max(host, device): see docs/GPU.md.

Batch is `settings.batch` (the paper's GPU figures use batches, e.g. 50 for AMC); precision
float32 (TF32 as torch's flags say, recorded) or float16. The fingerprint class has the GPU's name,
capability, memory, L2, SM count, driver, maximum and application clocks, torch/CUDA/cuDNN versions
and every option; current clocks, temperature and power go with each measurement (they change).

Without CUDA (CI, this project's machines) every workload becomes an `unsupported` record saying
why; nothing here calls `.cuda()` or touches a GPU until one is known to be there.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from hil.devices.agent.backend import MeasureFailure
from hil.errors import ConfigError
from hil.measure import MeasureSettings, Stats, summarize
from hil.nets.torch_build import build_module, input_shape
from hil.workload import Workload

DTYPES = ("float32", "float16")
DEFAULT_L2_BYTES = 50 * 2**20  # H100's L2, when torch does not report one
MAX_POOL = 64  # rotated inputs at most (each is a full input tensor)
MAX_GRAPH_POOL = 8  # with CUDA graphs each rotated input has its own captured graph

# nvidia-smi --query-gpu fields: (field, key, stable?) — stable ones go to the fingerprint class.
SMI_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("driver_version", "driver", True),
    ("clocks.max.sm", "max_sm_clock_mhz", True),
    ("clocks.max.mem", "max_mem_clock_mhz", True),
    ("clocks.applications.graphics", "app_sm_clock_mhz", True),
    ("clocks.applications.memory", "app_mem_clock_mhz", True),
    ("power.limit", "power_limit_w", True),
    ("persistence_mode", "persistence_mode", True),
    ("clocks.sm", "sm_clock_mhz", False),
    ("clocks.mem", "mem_clock_mhz", False),
    ("temperature.gpu", "temperature_c", False),
    ("power.draw", "power_w", False),
    ("pstate", "pstate", False),
    ("clocks_throttle_reasons.active", "throttle_reasons", False),
)


@dataclass(frozen=True)
class CudaOptions:
    """How the backend runs workloads; every field is recorded in the fingerprint class."""

    cudnn_benchmark: bool = True
    cuda_graphs: bool = False
    rotate_inputs: bool = True
    channels_last: bool = False
    device_index: int = 0
    min_warmup_s: float = 1.0


def cuda_unavailable_reason() -> str | None:
    """Why this process cannot run CUDA work, or None when it can."""
    try:
        import torch
    except ImportError as e:
        return f"torch is not importable ({e})"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build (install a CUDA build of torch)"
    if not torch.cuda.is_available():
        return "no CUDA device is visible (no NVIDIA driver, no GPU, or CUDA_VISIBLE_DEVICES hides it)"
    return None


def _smi_value(raw: str) -> Any:
    raw = raw.strip()
    if raw in ("", "[N/A]", "N/A", "[Not Supported]"):
        return None
    try:
        return float(raw) if "." in raw else int(raw)
    except ValueError:
        return raw


def nvidia_smi(index: int, stable: bool) -> dict[str, Any]:
    """nvidia-smi's CSV query for GPU `index` (stable or changing fields); {} where unavailable."""
    exe = shutil.which("nvidia-smi")
    fields = [(f, k) for f, k, s in SMI_FIELDS if s == stable]
    if exe is None:
        return {}
    try:
        out = subprocess.run(
            [exe, f"--id={int(index)}", "--query-gpu=" + ",".join(f for f, _ in fields),
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=15, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    values = out.strip().splitlines()[0].split(",") if out.strip() else []
    if len(values) != len(fields):
        return {}
    return {k: _smi_value(v) for (_, k), v in zip(fields, values, strict=True)}


def pool_size(input_bytes: int, l2_bytes: int, limit: int = MAX_POOL) -> int:
    """Inputs to rotate so that consecutive invocations never find theirs in L2 (> 2x L2 in all)."""
    if input_bytes <= 0:
        return 1
    return max(1, min(limit, math.ceil(2 * l2_bytes / input_bytes) + 1))


class TorchCudaBackend:
    name = "torch-cuda"

    def __init__(self, options: CudaOptions | None = None) -> None:
        self.options = options or CudaOptions()

    def configure(self, options: dict[str, Any]) -> None:
        """Take the inventory's `cuda:` section (hil/inventory.py's CudaConfig, the same names), here or
        in a remote agent; without one, the defaults. Nothing here touches the GPU. Checked by hand: the
        host checked the section already, but an agent has no pydantic (devices/agent/backend.py) and
        may be sent options by another host's version."""
        cuda = dict(options.get("cuda") or {})
        defaults = asdict(CudaOptions())
        unknown = sorted(set(cuda) - set(defaults))
        if unknown:
            raise ConfigError(f"torch-cuda: unknown option(s) {', '.join(unknown)} (known: {', '.join(defaults)})")
        for key, value in cuda.items():
            want = type(defaults[key])
            if want is float and type(value) is int:
                cuda[key] = value = float(value)
            if type(value) is not want:
                raise ConfigError(f"torch-cuda: option {key} must be of type {want.__name__}, not {value!r}")
        self.options = replace(CudaOptions(), **cuda)

    # --- what the device is ---------------------------------------------------------------------

    def _require_cuda(self) -> Any:
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise MeasureFailure("unsupported", f"torch-cuda cannot run here: {reason}")
        import torch

        if not 0 <= self.options.device_index < torch.cuda.device_count():
            raise MeasureFailure(
                "unsupported", f"torch-cuda: GPU index {self.options.device_index} does not exist "
                f"({torch.cuda.device_count()} visible)"
            )
        return torch

    def runtime_info(self, settings: MeasureSettings) -> dict[str, Any]:
        info: dict[str, Any] = {"runtime": "torch-cuda", "options": asdict(self.options),
                                "precision": settings.precision, "batch": settings.batch}
        try:
            torch = self._require_cuda()
        except MeasureFailure as e:
            info.update(cuda=False, error=str(e))
            return info
        idx = self.options.device_index
        props = torch.cuda.get_device_properties(idx)
        info.update(
            cuda=True,
            torch=torch.__version__,
            cuda_runtime=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_bytes=int(props.total_memory),
            sm_count=int(props.multi_processor_count),
            l2_bytes=int(getattr(props, "L2_cache_size", 0)) or None,
            tf32_cudnn=bool(torch.backends.cudnn.allow_tf32),
            tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
            **nvidia_smi(idx, stable=True),
        )
        return info

    # --- timing ---------------------------------------------------------------------------------

    def measure_one(self, workload: Workload, settings: MeasureSettings) -> tuple[Stats, dict[str, Any]]:
        torch = self._require_cuda()
        if settings.precision not in DTYPES:
            raise MeasureFailure(
                "unsupported", f"torch-cuda builds {' or '.join(DTYPES)}, not {settings.precision!r} ({workload.key})"
            )
        opts = self.options
        dev = torch.device("cuda", opts.device_index)
        dtype = getattr(torch, settings.precision)
        torch.backends.cudnn.benchmark = opts.cudnn_benchmark
        try:
            module = build_module(workload)
            shape = input_shape(workload, settings.batch)
        except (TypeError, ValueError) as e:
            raise MeasureFailure("unsupported", f"torch-cuda: {e} ({workload.key})") from None
        fmt = torch.channels_last if opts.channels_last and len(shape) == 4 else torch.contiguous_format
        module = module.eval().to(device=dev, dtype=dtype, memory_format=fmt)
        props = torch.cuda.get_device_properties(dev)
        l2 = int(getattr(props, "L2_cache_size", 0)) or DEFAULT_L2_BYTES
        elem = torch.empty((), dtype=dtype).element_size()
        n_inputs = 1
        if opts.rotate_inputs:
            n_inputs = pool_size(math.prod(shape) * elem, l2, MAX_GRAPH_POOL if opts.cuda_graphs else MAX_POOL)
        torch.cuda.reset_peak_memory_stats(dev)
        # CUDA graph capture is documented under no_grad; eager runs as a deployment would.
        grad_off = torch.no_grad if opts.cuda_graphs else torch.inference_mode
        try:
            with grad_off():
                inputs = [torch.randn(shape, device=dev, dtype=dtype).contiguous(memory_format=fmt)
                          for _ in range(n_inputs)]
                run = self._runner(torch, module, inputs, dev)
                stats, host_ms = time_cuda(torch, run, settings, dev, opts.min_warmup_s)
        except torch.cuda.OutOfMemoryError as e:
            torch.cuda.empty_cache()
            raise MeasureFailure("run_error", f"torch-cuda: out of GPU memory on {workload.key} "
                                 f"(batch {settings.batch}): {str(e).splitlines()[0]}") from None
        metrics = {
            "host_ms": host_ms,
            "inputs_rotated": n_inputs,
            "max_memory_bytes": int(torch.cuda.max_memory_allocated(dev)),
            **nvidia_smi(opts.device_index, stable=False),
        }
        return stats, metrics

    def _runner(self, torch: Any, module: Any, inputs: list[Any], dev: Any) -> Callable[[int], Any]:
        """A function of the invocation counter that runs the workload once on the rotated input."""
        n = len(inputs)
        if not self.options.cuda_graphs:
            return lambda i: module(inputs[i % n])
        # Warm up on a side stream before capture, as CUDA graph capture requires.
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for x in inputs[:3]:
                module(x)
        torch.cuda.current_stream(dev).wait_stream(side)
        graphs = []
        pool = None
        for x in inputs:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=pool):
                module(x)
            pool = g.pool()  # graphs replayed in capture order may share one memory pool
            graphs.append(g)
        return lambda i: graphs[i % n].replay()


def time_cuda(
    torch: Any,
    run: Callable[[int], Any],
    settings: MeasureSettings,
    dev: Any,
    min_warmup_s: float = 1.0,
) -> tuple[Stats, float]:
    """Device time per invocation with CUDA events (MEASUREMENT.md), and the median host issue time.

    `run(i)` issues invocation i asynchronously on the current stream.
    """
    sync = lambda: torch.cuda.synchronize(dev)  # noqa: E731
    stream = torch.cuda.current_stream(dev)
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    i = 0

    sync()
    t0 = time.perf_counter()
    warm_s = max(settings.warmup_s, min_warmup_s)
    runs = 0
    while True:
        run(i)
        i += 1
        runs += 1
        if runs >= settings.warmup_runs:
            sync()
            elapsed = time.perf_counter() - t0
            if elapsed >= warm_s or elapsed > settings.max_time_s:
                break

    # How long is one invocation? Group until a timed run lasts min_run_ms.
    probe = max(1, settings.warmup_runs)
    start.record(stream)
    for _ in range(probe):
        run(i)
        i += 1
    end.record(stream)
    end.synchronize()
    per_call_ms = max(start.elapsed_time(end) / probe, 1e-4)
    number = max(1, math.ceil(settings.min_run_ms / per_call_ms))

    samples: list[float] = []
    host: list[float] = []
    t_begin = time.perf_counter()
    while True:
        h0 = time.perf_counter()
        start.record(stream)
        for _ in range(number):
            run(i)
            i += 1
        end.record(stream)
        h1 = time.perf_counter()
        end.synchronize()
        samples.append(start.elapsed_time(end) / number)
        host.append((h1 - h0) * 1e3 / number)
        total = time.perf_counter() - t_begin
        enough = len(samples) >= settings.min_repeats and total >= settings.min_time_s
        if enough or (total >= settings.max_time_s and len(samples) >= 3):
            break
    return summarize(samples, number), summarize(host, number).median_ms
