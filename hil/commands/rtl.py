"""`hil rtl sim|build`: quick experiments on the simulated accelerators, and prebuilding harnesses."""

from __future__ import annotations

import argparse
import time
from typing import Any

from hil.commands.common import add_inventory_arg, add_json_arg, emit
from hil.errors import ConfigError


def _ints(text: str, n: int, what: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != n or min(vals) < 1:
        raise ConfigError(f"--{what} takes {n} positive integers separated by commas, got {text!r}")
    return vals


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rtl", help="simulate GEMMs on the accelerator RTL; prebuild harnesses")
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    sim = s.add_parser("sim", help="run one GEMM through an rtl-sim device")
    sim.add_argument("--device", "-d", required=True)
    sim.add_argument("--gemm", required=True, metavar="M,K,N",
                     help="M weight rows (output channels), K reduction length, N activation columns per sample")
    sim.add_argument("--bits", required=True, metavar="W,A", help="weight and activation bitwidths")
    sim.add_argument("--batch", type=int, default=1, help="samples: the GEMM has N x batch columns")
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
    m, k, n = _ints(args.gemm, 3, "gemm")
    wbits, abits = _ints(args.bits, 2, "bits")
    if args.batch < 1:
        raise ConfigError("--batch must be at least 1")
    cols = n * args.batch
    ws, as_ = not args.unsigned_weights, args.signed_activations
    acc = make_accelerator(dev.rtl.accelerator, **dev.rtl.overrides)
    try:
        t0 = time.perf_counter()
        out: dict[str, Any] = {"device": args.device, "accelerator": dev.rtl.accelerator, "m": m, "k": k, "n": n,
                               "batch": args.batch, "columns": cols, "wbits": wbits, "abits": abits,
                               "wsigned": ws, "asigned": as_}
        if args.verify:
            rng = np.random.default_rng(args.seed)
            w = _random(rng, (m, k), wbits, ws)
            a = _random(rng, (k, cols), abits, as_)
            got, r = acc.gemm(w, a, wbits, abits, ws, as_)
            want = w.astype(np.int64) @ a.astype(np.int64)
            out["match"] = bool(np.array_equal(np.asarray(got, dtype=np.int64), want))
        else:
            r = acc.time_gemm(m, k, cols, wbits, abits, ws, as_)
        wall = time.perf_counter() - t0
    finally:
        acc.close()
    res = r.to_json()
    out.update({"cycles": res["cycles"], "compute_cycles": res["compute_cycles"], "latency_ms": res["latency_ms"],
                "energy_uj": res["energy_uj"], "dram_bytes": res["dram_bytes"],
                "utilization": res["utilization"], "stage_cycles": res["stage_cycles"],
                "sim_wall_s": wall, "sim_cycles_per_s": res["cycles"] / wall if wall > 0 else None})
    text = (f"{args.device}: GEMM {m}x{k}x{cols} at w{wbits}/a{abits}: {res['cycles']:,} cycles "
            f"(compute {res['compute_cycles']:,}), {res['latency_ms']:.4f} ms, {res['energy_uj']:.3f} uJ, "
            f"{res['dram_bytes']:,} DRAM bytes"
            + (f", match={out['match']}" if "match" in out else ""))
    emit(out, args.json, text)
    return 0 if out.get("match", True) else 1


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
        acc = make_accelerator(dev.rtl.accelerator, **dev.rtl.overrides)
        try:
            desc = acc.describe()
        finally:
            acc.close()
        built.append({"device": name, "accelerator": dev.rtl.accelerator, "seconds": time.perf_counter() - t0,
                      "describe": desc})
    emit({"built": built}, args.json,
         "\n".join(f"{b['device']}: ready ({b['seconds']:.1f} s)" for b in built))
    return 0
