"""GPU LUT validation: what a network's time on a CUDA GPU is made of, and which LUT model predicts it.

Run it where there is a GPU (the lent H100, through the `device` tool); without CUDA it stops at
once saying why. `--backend torch-cpu` runs the same pipeline on the CPU, to check the script.

For each batch size (1, and 50 as in AMC's GPU figures) and each mode (eager, CUDA graphs):
1. every block of the proxyless-mobile space is timed on its own (device time with CUDA events;
   `host_ms`: CPU time to issue one invocation);
2. N sampled networks (+ C held-out ones for the calibration fit) are timed end to end;
3. predictors are scored against the measured networks (±10% / ±5% accuracy, Kendall tau, MAPE):
   - `sum`: Σ block latencies (the plain LUT; eager mode overcounts launch-bound blocks);
   - `calibrated`: scale·Σ + offset fitted on the C held-out networks (hil.latency.NetworkCalibration);
   - `overlap` (eager, needs the graphs results of the same batch): max(Σ host_ms, Σ graph latency):
     in a stream the CPU issues kernels while the GPU runs earlier ones, so the network takes the
     longer of the two totals, not the sum of per-block maxima;
   In graphs mode `sum` is Σ graph latencies against networks run as one CUDA graph.
4. `--profile K`: torch.profiler on K blocks: kernels per block and busy GPU time, against the
   event-timed latency (the rest is idle GPU waiting for launches).

Results go to --results (JSON, written after every step: rerun the same command to resume, which
fits the 10-minute limit of one device command). Prints Markdown for docs/BENCHMARKS.md.

    python benchmarks/gpu_lut.py --resolution 224 --samples 50 --batches 1 50 --results $OUT/gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _namespace() -> None:
    """Where hil is not installed (the lent GPU machine), map its folders into `hil` as setup.py does."""
    try:
        import hil.devices
        import hil.lut_builder
        return
    except ModuleNotFoundError:
        pass
    import importlib.util

    sys.path.insert(0, str(ROOT))
    import hil

    for folder in ("devices", "lut_builder"):
        name = f"hil.{folder}"
        spec = importlib.util.spec_from_file_location(
            name, ROOT / folder / "__init__.py", submodule_search_locations=[str(ROOT / folder)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        setattr(hil, folder, module)


_namespace()


def make_target(backend: str, graphs: bool) -> Any:
    from hil.devices.agent.local import LocalTarget

    if backend == "torch-cpu":
        from hil.devices.agent.torch_cpu import TorchCpuBackend

        return LocalTarget("cpu", TorchCpuBackend())
    from hil.devices.agent.torch_cuda import CudaOptions, TorchCudaBackend

    return LocalTarget("gpu", TorchCudaBackend(CudaOptions(cuda_graphs=graphs)))


def measure(target: Any, workloads: list[Any], settings: Any, what: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for i, m in enumerate(target.measure(workloads, settings), 1):
        if not m.ok:
            raise SystemExit(f"{what}: {m.key} failed: {m.error_kind}: {m.error}")
        out[m.key] = {"ms": m.stats.median_ms, "cv": m.stats.cv, "host_ms": m.metrics.get("host_ms"),
                      "metrics": m.metrics}
        if i % 10 == 0:
            print(f"  {what}: {i}/{len(workloads)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return out


def score(pred: list[float], meas: list[float]) -> dict[str, Any]:
    from hil.validate import metrics

    return metrics(pred, meas).to_json()


def evaluate(res: dict[str, Any], nets: list[Any], cal_nets: list[Any], batch: int) -> dict[str, Any]:
    from hil.latency import NetworkCalibration

    out: dict[str, Any] = {}
    for mode in ("eager", "graphs"):
        r = res.get(f"b{batch}-{mode}")
        if not r or "networks" not in r or "calibration" not in r:
            continue
        blocks = r["blocks"]

        def block_sum(net: Any, field: str = "ms", table: dict[str, Any] = blocks) -> float:
            return sum(table[w.key][field] for w in net.layers)

        meas = [r["networks"][n.key]["ms"] for n in nets]
        sums = [block_sum(n) for n in nets]
        cal_meas = [r["calibration"][n.key]["ms"] for n in cal_nets]
        cal = NetworkCalibration.fit([block_sum(n) for n in cal_nets], cal_meas)
        preds = {"sum": sums, "calibrated": [cal.apply(s) for s in sums]}
        other = res.get(f"b{batch}-graphs")
        if mode == "eager" and other and "blocks" in other and all(v["host_ms"] is not None for v in blocks.values()):
            preds["overlap"] = [max(block_sum(n, "host_ms"), block_sum(n, "ms", other["blocks"])) for n in nets]
        out[mode] = {"calibration": cal.to_json(), **{k: score(v, meas) for k, v in preds.items()},
                     "mean_network_ms": sum(meas) / len(meas)}
    return out


def profile(blocks: list[Any], batch: int, k: int) -> list[dict[str, Any]]:
    """Kernels per block and busy GPU time, from torch.profiler (eager, float32)."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    from hil.nets.torch_build import build_module, input_shape

    dev = torch.device("cuda", 0)
    rows = []
    for w in blocks[:k]:
        module = build_module(w).eval().to(dev)
        x = torch.randn(input_shape(w, batch), device=dev)
        with torch.inference_mode():
            for _ in range(20):
                module(x)
            torch.cuda.synchronize(dev)
            with tprofile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(10):
                    module(x)
                torch.cuda.synchronize(dev)
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy_us = sum(e.time_range.elapsed_us() for e in kernels) / 10
        rows.append({"key": w.key, "kernels": len(kernels) / 10, "busy_gpu_ms": busy_us / 1e3})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--calibration-nets", type=int, default=10)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 50])
    ap.add_argument("--modes", nargs="+", default=["eager", "graphs"], choices=["eager", "graphs"])
    ap.add_argument("--precision", default="float32", choices=["float32", "float16"])
    ap.add_argument("--backend", default="torch-cuda", choices=["torch-cuda", "torch-cpu"])
    ap.add_argument("--min-time", type=float, default=0.5, help="protocol minimum time per workload (s)")
    ap.add_argument("--profile", type=int, default=0, metavar="K", help="profile K blocks (kernels, busy time)")
    ap.add_argument("--results", default="gpu-lut.json", help="results file (resumed when it exists)")
    args = ap.parse_args()

    from hil.calibration import CALIBRATION_SEED_OFFSET
    from hil.lut_builder.spaces import make_space
    from hil.measure import MeasureSettings

    if args.backend == "torch-cuda":
        from hil.devices.agent.torch_cuda import cuda_unavailable_reason

        reason = cuda_unavailable_reason()
        if reason:
            raise SystemExit(f"gpu_lut: no CUDA here: {reason}")
    modes = args.modes if args.backend == "torch-cuda" else ["eager"]
    path = Path(args.results)
    res: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    res.setdefault("args", vars(args))

    def save() -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        os.replace(tmp, path)

    space = make_space("proxyless-mobile", resolution=args.resolution)
    blocks = space.workloads()
    nets = space.sample(args.samples, 0)
    cal_nets = space.sample(args.calibration_nets, CALIBRATION_SEED_OFFSET)
    base = replace(MeasureSettings(), min_time_s=args.min_time, precision=args.precision)
    for batch in args.batches:
        settings = replace(base, batch=batch)
        for mode in modes:
            name = f"b{batch}-{mode}"
            r = res.setdefault(name, {})
            target = make_target(args.backend, mode == "graphs")
            if "fingerprint" not in r:
                r["fingerprint"] = target.describe(settings)["class"]
            for part, ws in (("blocks", blocks), ("networks", nets), ("calibration", cal_nets)):
                if part in r:
                    continue
                print(f"{name}: {part} ({len(ws)})", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                r[part] = measure(target, ws, settings, f"{name} {part}")
                r[f"{part}_wall_s"] = round(time.perf_counter() - t0, 1)
                save()
        res[f"b{batch}-eval"] = evaluate(res, nets, cal_nets, batch)
        save()
    if args.profile and args.backend == "torch-cuda" and "profile" not in res:
        try:
            res["profile"] = {f"b{b}": profile(blocks, b, args.profile) for b in args.batches}
        except Exception as e:  # the profile is extra: keep what was measured, say what failed
            res["profile"] = {"error": f"{type(e).__name__}: {e}"}
        save()

    fp = next((v["fingerprint"] for k, v in res.items() if isinstance(v, dict) and "fingerprint" in v), {})
    rt = fp.get("runtime", {})
    print(f"Machine: {rt.get('gpu', platform.processor())} · driver {rt.get('driver')} · torch {rt.get('torch')} "
          f"· CUDA {rt.get('cuda_runtime')} · cuDNN {rt.get('cudnn')}; `{' '.join(sys.argv)}`; "
          f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| batch | mode | predictor | n | ±10% | ±5% | tau | MAPE | bias | mean network (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for batch in args.batches:
        for mode, ev in res.get(f"b{batch}-eval", {}).items():
            for pred in ("sum", "calibrated", "overlap"):
                if pred not in ev:
                    continue
                m = ev[pred]
                print(f"| {batch} | {mode} | {pred} | {m['n']} | {100 * m['within_10pct']:.0f}% "
                      f"| {100 * m['within_5pct']:.0f}% | {m['kendall_tau']:.3f} | {m['mape']:.2f}% "
                      f"| {m['mean_bias']:+.2f}% | {ev['mean_network_ms']:.3f} |")


if __name__ == "__main__":
    main()
