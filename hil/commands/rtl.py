"""`hil rtl sim|build`: quick experiments on the simulated accelerators, and prebuilding harnesses."""

from __future__ import annotations

import argparse
import time
from typing import Any

from hil.commands.common import add_inventory_arg, add_json_arg, emit
from hil.errors import ConfigError


def _ints(text: str, n: int | tuple[int, int], what: str) -> list[int]:
    lo, hi = (n, n) if isinstance(n, int) else n
    try:
        vals = [int(x) for x in text.split(",")]
    except ValueError:
        vals = []
    if not lo <= len(vals) <= hi or min(vals) < 1:
        count = str(lo) if lo == hi else f"{lo} or {hi}"
        raise ConfigError(f"--{what} takes {count} positive integers separated by commas, got {text!r}")
    return vals


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rtl", help="simulate GEMMs on the accelerator RTL; prebuild harnesses")
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    sim = s.add_parser("sim", help="run one GEMM or one conv layer through an rtl-sim device")
    sim.add_argument("--device", "-d", required=True)
    what = sim.add_mutually_exclusive_group(required=True)
    what.add_argument("--gemm", metavar="M,K,N",
                      help="M weight rows (output channels), K reduction length, N activation columns per sample")
    what.add_argument("--conv", metavar="K,CIN,COUT,H,W[,STRIDE]",
                      help="a conv layer: kernel, input channels, output channels, input height and width, stride "
                           "(default 1; 'same' padding); FC: 1,CIN,COUT,1,1. Runs exactly as the layer's LUT entry")
    sim.add_argument("--depthwise", action="store_true", help="with --conv: a depthwise conv (CIN = COUT)")
    sim.add_argument("--bits", required=True, metavar="W,A", help="weight and activation bitwidths")
    sim.add_argument("--batch", type=int, default=None,
                     help="samples (--gemm: N x batch columns, default 1; --conv: default the device's batch, "
                          "as its LUT entries)")
    sim.add_argument("--out-bits", type=int, default=None,
                     help="--gemm: width the outputs are stored at (default: what the device's LUT entries store, "
                          "the activation lane width on Bit Fusion, int32 on BISMO)")
    sim.add_argument("--unsigned-weights", action="store_true", help="weights unsigned (default signed)")
    sim.add_argument("--signed-activations", action="store_true", help="activations signed (default unsigned)")
    sim.add_argument("--verify", action="store_true", help="random operands through the RTL, compared with numpy")
    sim.add_argument("--seed", type=int, default=0)
    add_inventory_arg(sim)
    add_json_arg(sim)
    sim.set_defaults(func=_sim)

    b = s.add_parser("build", help="build (or find in the cache) the Verilator harness of rtl-sim devices")
    b.add_argument("--device", "-d", action="append", default=[])
    b.add_argument("--all", action="store_true", help="every rtl-sim device of the inventory")
    add_inventory_arg(b)
    add_json_arg(b)
    b.set_defaults(func=_build)


def _rtl_device(inv: Any, name: str) -> Any:
    dev = inv.device(name)
    if dev.backend != "rtl-sim" or dev.rtl is None:
        raise ConfigError(f"device {name!r} is not an rtl-sim device (backend {dev.backend!r})")
    return dev


def _sim(args: argparse.Namespace) -> int:
    import numpy as np

    from hil.inventory import load_inventory
    from hil.rtl.presets import make_accelerator

    inv = load_inventory(args.inventory)
    dev = _rtl_device(inv, args.device)
    wbits, abits = _ints(args.bits, 2, "bits")
    if args.batch is not None and args.batch < 1:
        raise ConfigError("--batch must be at least 1")
    ws, as_ = not args.unsigned_weights, args.signed_activations
    if args.conv:
        return _sim_conv(args, dev, wbits, abits, ws, as_)
    if args.depthwise:
        raise ConfigError("--depthwise goes with --conv")
    m, k, n = _ints(args.gemm, 3, "gemm")
    batch = args.batch or 1
    cols = n * batch
    if args.verify:
        _check_verify_memory(m, k, cols)
    acc = make_accelerator(dev.rtl.accelerator, dev.rtl.overrides)
    try:
        cpu0 = _harness_cpu(acc)
        t0 = time.perf_counter()
        out: dict[str, Any] = {"device": args.device, "accelerator": dev.rtl.accelerator, "m": m, "k": k, "n": n,
                               "batch": batch, "columns": cols, "wbits": wbits, "abits": abits,
                               "wsigned": ws, "asigned": as_}
        if args.verify:
            if args.out_bits not in (None, 32):
                raise ConfigError("--verify compares the exact int32 product: leave --out-bits out (or 32)")
            rng = np.random.default_rng(args.seed)
            w = _random(rng, (m, k), wbits, ws)
            a = _random(rng, (k, cols), abits, as_)
            got, r = acc.gemm(w, a, wbits, abits, ws, as_)
            want = w.astype(np.int64) @ a.astype(np.int64)
            out["match"] = bool(np.array_equal(np.asarray(got, dtype=np.int64), want))
        else:
            r = acc.time_gemm(m, k, cols, wbits, abits, ws, as_, out_bits=args.out_bits)
        wall = time.perf_counter() - t0
        cpu = _harness_cpu(acc) - cpu0
    finally:
        acc.close()
    res = r.to_json()
    out.update({"cycles": res["cycles"], "compute_cycles": res["compute_cycles"], "latency_ms": res["latency_ms"],
                "energy_uj": res["energy_uj"], "dram_bytes": res["dram_bytes"],
                "utilization": res["utilization"], "stage_cycles": res["stage_cycles"],
                "sim_wall_s": wall, "sim_cycles_per_s": res["cycles"] / wall if wall > 0 else None,
                "harness_cpu_s": cpu if cpu > 0 else None,
                "sim_cycles_per_cpu_s": res["cycles"] / cpu if cpu > 0 else None})
    text = (f"{args.device}: GEMM {m}x{k}x{cols} at w{wbits}/a{abits}: {res['cycles']:,} cycles "
            f"(compute {res['compute_cycles']:,}), {res['latency_ms']:.4f} ms, {res['energy_uj']:.3f} uJ, "
            f"{res['dram_bytes']:,} DRAM bytes"
            + (f", match={out['match']}" if "match" in out else ""))
    emit(out, args.json, text)
    return 0 if out.get("match", True) else 1


def _harness_cpu(acc: Any) -> float:
    """CPU seconds the accelerator's harness process has used (NaN without a local harness): on a
    shared machine, simulated cycles per harness CPU-second is the speed other work does not dilute."""
    cpu = getattr(getattr(acc, "regs", None), "cpu_seconds", None)
    return cpu() if cpu else float("nan")


def _check_verify_memory(m: int, k: int, cols: int) -> None:
    """--verify holds both operands, the RTL's result and numpy's int64 reference in memory: refuse a
    GEMM that would not fit before allocating anything, instead of being killed by the kernel."""
    from hil.devices.agent.host_info import memory_available_bytes

    need = 8 * (m * k + k * cols + 3 * m * cols)
    limit = memory_available_bytes() // 2  # the simulation and its harness need the rest
    if need > limit:
        raise ConfigError(f"--verify on a {m}x{k}x{cols} GEMM needs about {need / 2**30:.1f} GiB for its operands "
                          f"and the numpy reference; the limit is half of this host's available memory, "
                          f"{limit / 2**30:.1f} GiB: verify a smaller GEMM, or time this one without --verify")


def _sim_conv(args: argparse.Namespace, dev: Any, wbits: int, abits: int, ws: bool, as_: bool) -> int:
    """One conv / depthwise / FC layer, run as `layer()` runs it for the device's LUT (same planner)."""
    from hil.rtl.presets import make_accelerator
    from hil.workload import QuantLayer

    if args.verify or args.out_bits is not None:
        raise ConfigError("--conv times the layer as its LUT entry does: --verify and --out-bits go with --gemm")
    k, cin, cout, h, w, *rest = _ints(args.conv, (5, 6), "conv")
    stride = rest[0] if rest else 1
    if args.depthwise and cin != cout:
        raise ConfigError(f"--depthwise needs CIN = COUT, got {cin} and {cout}")
    pad = (k - 1) // 2
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    if ho < 1 or wo < 1:
        raise ConfigError(f"--conv: a {k}x{k} kernel at stride {stride} leaves no output of a {h}x{w} input")
    layer = QuantLayer("cli", (h, w, cin), (ho, wo, cout), k, stride, cin if args.depthwise else 1,
                       wbits, abits, ws, as_)
    batch = args.batch or dev.batch
    acc = make_accelerator(dev.rtl.accelerator, dev.rtl.overrides)
    try:
        t0 = time.perf_counter()
        r = acc.layer(layer, batch)
        wall = time.perf_counter() - t0
    finally:
        acc.close()
    res = r.to_json()
    out = {"device": args.device, "accelerator": dev.rtl.accelerator, "layer": layer.to_json(), "batch": batch,
           "cycles": res["cycles"], "compute_cycles": res["compute_cycles"], "latency_ms": res["latency_ms"],
           "energy_uj": res["energy_uj"], "dram_bytes": res["dram_bytes"], "utilization": res["utilization"],
           "stage_cycles": res["stage_cycles"], "mapping": res["extra"].get("mapping"), "sim_wall_s": wall}
    kind = "depthwise " if args.depthwise else ""
    text = (f"{args.device}: {kind}conv {k}x{k} {cin}->{cout} on {h}x{w} (stride {stride}, output {ho}x{wo}), "
            f"batch {batch}, w{wbits}/a{abits}: {res['cycles']:,} cycles (compute {res['compute_cycles']:,}), "
            f"{res['latency_ms']:.4f} ms, {res['dram_bytes']:,} DRAM bytes"
            + (f", mapping {out['mapping']}" if out["mapping"] else ""))
    emit(out, args.json, text)
    return 0


def _random(rng: Any, shape: tuple[int, int], bits: int, signed: bool) -> Any:
    import numpy as np

    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return rng.integers(lo, hi + 1, size=shape, dtype=np.int64)


def _build(args: argparse.Namespace) -> int:
    from hil.inventory import load_inventory
    from hil.rtl.presets import make_accelerator

    inv = load_inventory(args.inventory)
    names = [n for n, d in inv.devices.items() if d.backend == "rtl-sim"] if args.all else args.device
    if not names:
        raise ConfigError("name at least one --device (or --all)")
    built = []
    for name in names:
        dev = _rtl_device(inv, name)
        t0 = time.perf_counter()
        acc = make_accelerator(dev.rtl.accelerator, dev.rtl.overrides)
        try:
            desc = acc.describe()
        finally:
            acc.close()
        built.append({"device": name, "accelerator": dev.rtl.accelerator, "seconds": time.perf_counter() - t0,
                      "describe": desc})
    emit({"built": built}, args.json,
         "\n".join(f"{b['device']}: ready ({b['seconds']:.1f} s)" for b in built))
    return 0
