"""RTL fidelity against outside references (issue 12): HAQ's published MobileNet latencies on BISMO,
and the public Bit Fusion simulator's stored results for four of the paper's layers.

    .venv/bin/python benchmarks/rtl_fidelity.py [--only haq|bitfusion|lut-time] [--configs bismo-edge,...]

1. 8-bit MobileNet-V1/V2, the per-layer sum of `layer()` runs (what the LUT sums), on bismo-edge
   (batch 1) and bismo-cloud (batch 16), each with our schedule and with the published one (`*-haq`),
   against HAQ's 96.20 / 115.84 / 151.09 / 189.82 ms.
2. AlexNet conv2, conv3, a 3x3 384->384 layer and VGG-7 conv2 at batch 16 on bitfusion-spatial
   against the public simulator's totals (`bf_e_conf.ini`, ACCELERATORS.md).

3. (`--only lut-time`) what the board memory costs a LUT build: every MobileNet-V1 layer at the
   bit pairs of `--lut-bits`, timed with one harness, on the presets before issue 12 (a flat port:
   32 / 128 B per cycle, no page model) and after.

Prints one JSON object (and writes docs/img/rtl-fidelity.json); each row has ours / reference.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from hil.lut_builder.spaces.quant_layers import mobilenet_v1_layers, mobilenet_v2_layers
from hil.rtl.bismo.bench import run_layers
from hil.rtl.presets import make_accelerator
from hil.workload import QuantLayer

ROOT = Path(__file__).resolve().parents[1]
HAQ_MS = {("mobilenet-v1", "bismo-edge"): 96.20, ("mobilenet-v2", "bismo-edge"): 115.84,
          ("mobilenet-v1", "bismo-cloud"): 151.09, ("mobilenet-v2", "bismo-cloud"): 189.82}
BATCH = {"bismo-edge": 1, "bismo-cloud": 16}
SPACES = {"mobilenet-v1": mobilenet_v1_layers, "mobilenet-v2": mobilenet_v2_layers}
# (name, kernel, C_in, C_out, H = W (input and output), bits a/w, public simulator total cycles at batch 16)
BITFUSION_LAYERS = (
    ("AlexNet conv2", 5, 96, 256, 27, 4, 5_018_849),
    ("AlexNet conv3", 3, 512, 384, 13, 4, 3_248_129),
    ("3x3 384->384", 3, 384, 384, 13, 4, 2_436_097),
    ("VGG-7 conv2", 3, 128, 256, 16, 2, 402_091),
)


def haq_rows(configs: list[str]) -> list[dict]:
    rows = []
    for cfg in configs:
        base = cfg.removesuffix("-haq")
        acc = make_accelerator(cfg)
        try:
            for model, make in SPACES.items():
                sp = make("8")
                layers = sp.layers([8] * len(sp.units), [8] * len(sp.units))
                r = run_layers(acc, layers, BATCH[base])
                ms = r["cycles"] / (acc.clock_mhz * 1e3)
                ref = HAQ_MS[(model, base)]
                rows.append({"model": model, "config": cfg, "batch": BATCH[base], "ms": round(ms, 2),
                             "cycles": r["cycles"], "compute_cycles": r["compute_cycles"], "haq_ms": ref,
                             "ratio": round(ms / ref, 3), "wall_s": r["wall_s"],
                             "harness_cpu_s": r["harness_cpu_s"]})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            acc.close()
    return rows


def bitfusion_rows() -> list[dict]:
    acc = make_accelerator("bitfusion-spatial")
    rows = []
    try:
        for name, k, cin, cout, hw, bits, ref in BITFUSION_LAYERS:
            q = QuantLayer(name, (hw, hw, cin), (hw, hw, cout), k, 1, 1, wbits=bits, abits=bits)
            r = acc.layer(q, 16)
            plan = acc.plan_layer(q, 16)
            other = acc.plan_layer(q, 16, im2col=plan.problem.kernel > 1)  # the mapping not chosen
            rows.append({"layer": name, "bits": bits, "cycles": r.cycles, "compute_cycles": r.compute_cycles,
                         "mapping": r.extra["mapping"], "reference": ref, "ratio": round(r.cycles / ref, 3),
                         "dram_bytes": r.dram_bytes, "stage_cycles": r.stage_cycles,
                         "estimate_chosen": round(plan.estimate["total"]),
                         "estimate_other": round(other.estimate["total"])})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        acc.close()
    return rows


def lut_time(configs: list[str], bits: list[int]) -> list[dict]:
    """Harness time for the LUT entries of MobileNet-V1 at `bits` x `bits`, old vs new memory preset."""
    from dataclasses import replace

    from hil.rtl.bismo.driver import BismoAccelerator
    from hil.rtl.presets import BISMO_PRESETS

    sp = mobilenet_v1_layers(",".join(map(str, bits)))
    n = len(sp.units)
    layers = [q for wb in bits for ab in bits for q in sp.layers([wb] * n, [ab] * n)]
    rows = []
    for cfg in configs:
        new = BISMO_PRESETS[cfg]
        old = replace(new, dram_bytes_per_cycle=float(new.dram_bits // 8), dram_pages=None)
        for label, c in (("before (flat port)", old), ("after (board memory)", new)):
            acc = BismoAccelerator(c)
            try:
                r = run_layers(acc, layers, BATCH[cfg])
            finally:
                acc.close()
            rows.append({"config": cfg, "preset": label, "entries": len(layers), **r})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("haq", "bitfusion", "lut-time"))
    ap.add_argument("--lut-bits", default="2,4,8", help="--only lut-time: the bit widths (weights x activations)")
    ap.add_argument("--configs", default="bismo-edge,bismo-edge-haq,bismo-cloud,bismo-cloud-haq")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "rtl-fidelity.json"))
    args = ap.parse_args()
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "loadavg_start": os.getloadavg()}
    if args.only == "lut-time":
        report["lut_time"] = lut_time(args.configs.split(","), [int(b) for b in args.lut_bits.split(",")])
    if args.only in (None, "haq"):
        report["haq"] = haq_rows(args.configs.split(","))
    if args.only in (None, "bitfusion"):
        report["bitfusion"] = bitfusion_rows()
    report["loadavg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
