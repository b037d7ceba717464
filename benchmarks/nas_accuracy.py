"""ProxylessNAS paper Table 2, accuracy half: the searched architectures of benchmarks/nas_table2.py
retrained with one longer schedule, against MobileNet-V2 at the same width and resolution.

    # latency: MobileNet-V2's blocks missing from each device's proxyless-mobile LUT measured with the
    # LUT's protocol (its LUT prediction), then every network measured on every device
    nice -n 19 .venv/bin/python benchmarks/nas_accuracy.py measure --db /tmp/nasacc-meas/hil.db \
        --runs /tmp/nas2-table2 /tmp/nas2-table2-s1 /tmp/nas2-table2-s2 --sessions 5 --out /tmp/nasacc-meas
    # accuracy: the `hil nas retrain --json` / `hil train --json` outputs, joined with the latency
    .venv/bin/python benchmarks/nas_accuracy.py report --latency /tmp/nasacc-meas/latency.json \
        --retrained /tmp/nasacc-out --out docs/img/nas-table2-accuracy.json
    # at matched latency: each device's LUT, then one search per device with MobileNet-V2's LUT
    # prediction there as the target (add#hinge by default); then `measure --runs OUT` as above
    nice -n 19 .venv/bin/python benchmarks/nas_accuracy.py matched --out /tmp/nasm --epochs 6 \
        --warmup-epochs 1 --steps-per-epoch 24 --arch-every 1 --train-limit 4096 --val-limit 512

--db is a copy of one nas_table2 run's store (its three LUTs); every architecture is predicted with
that LUT. Networks are measured at the LUT's geometry (3 channels, 1000 classes, stem stride 2), as
nas_table2.py does: local-cpu and tflite-int8 in --sessions interleaved sessions (median), bismo-edge
one continuous whole-network simulation each. Retrained outputs are named <seed>-<device>.json (seed
s0 = the first --runs folder) and mnv2.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nas_search import build_lut, protocol
from nas_table2 import DEVICES, INVENTORY, add_search_args, measure_everywhere, search

from hil.calibration import measure_session
from hil.devices.host.targets import open_target, settings_for
from hil.inventory import load_inventory
from hil.lease import hold
from hil.nets.models import mobilenet_v2
from hil.optimizers.proxyless.arch import STEM_STRIDE
from hil.optimizers.proxyless.latency import open_latency
from hil.store import open_store
from hil.workload import Workload

V2 = "mobilenet-v2"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def measure_blocks(db: Path, layers: list[Workload], device: str, inv: Path) -> dict[str, float]:
    """LUT entries for `layers` on `device`: one interleaved session, the LUT build's protocol."""
    inventory = load_inventory(str(inv))
    target = open_target(inventory, device)
    try:
        with open_store(str(db)) as store, hold(target, 3600):
            s = measure_session(store, target, layers, settings_for(inventory.device(device), protocol(),
                                                                    clock="thread"), "nas_acc_v2_blocks", 0)
    finally:
        target.close()
    return s.latency_ms


def v2_prediction(db: Path, device: str, inv: Path, res: int, width: float) -> tuple[float, dict[str, Any]]:
    """MobileNet-V2's LUT prediction on `device`: the blocks its proxyless-mobile LUT lacks are measured
    now with the LUT's protocol (they are not in the space) and summed with the entries it has."""
    v2 = v2_network(res, width)
    with open_store(str(db)) as store:
        table = open_latency(store, device, res, width).model.table
    missing = [w for w in {w.key: w for w in v2.layers}.values() if w.key not in table]
    _log(f"{device}: measuring {len(missing)} MobileNet-V2 blocks missing from its LUT")
    new = measure_blocks(db, missing, device, inv)
    entries = {w.key: table[w.key] if w.key in table else new[w.key] for w in v2.layers}
    return sum(entries[w.key] for w in v2.layers), {"from_lut": sum(w.key in table for w in v2.layers),
                                                    "measured_now": len(missing), "entries_ms": entries}


def v2_network(res: int, width: float) -> Any:
    """MobileNet-V2 at the LUT's geometry (3 channels, 1000 classes, the space's stem stride)."""
    return mobilenet_v2(width, input_size=res, in_channels=3, classes=1000, stem_stride=STEM_STRIDE).network()


def cmd_measure(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    inv = args.out / "inventory.yaml"
    inv.write_text(INVENTORY)
    names = {V2: v2_network(args.resolution, args.width)}
    predicted: dict[str, dict[str, float]] = {d: {} for d in DEVICES}
    v2_lut: dict[str, dict[str, Any]] = {}
    with open_store(str(args.db)) as store:
        lats = {d: open_latency(store, d, args.resolution, args.width) for d in DEVICES}
    for i, run in enumerate(args.runs):
        for row in json.loads((run / "table2.json").read_text())["searches"]:
            name = f"s{i}-{row['device']}"
            names[name] = lats[DEVICES[0]].space.network(row["arch"])
            for d in DEVICES:
                predicted[d][name] = lats[d].arch(row["arch"])[0]
    for d in DEVICES:
        predicted[d][V2], v2_lut[d] = v2_prediction(args.db, d, inv, args.resolution, args.width)
    measured, per_session = measure_everywhere(args.db, names, inv, args.sessions, "nas_acc")
    report = {"argv": sys.argv, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "loadavg_end": os.getloadavg(), "resolution": args.resolution, "width": args.width,
              "db": str(args.db), "predicted_ms": predicted, "measured_ms": measured,
              "measured_per_session": per_session, "mobilenet_v2_lut": v2_lut}
    (args.out / "latency.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"predicted_ms": predicted, "measured_ms": measured}, indent=1))
    return 0


def cmd_matched(args: argparse.Namespace) -> int:
    """Each device's LUT built, then one search per device whose target is MobileNet-V2's LUT prediction
    there (the binding add#hinge loss by default): Table 2's "at matched latency". Writes OUT/table2.json
    in nas_table2.py's form, so `measure --runs OUT` measures the results beside MobileNet-V2."""
    args.out.mkdir(parents=True, exist_ok=True)
    db, inv = args.out / "hil.db", args.out / "inventory.yaml"
    inv.write_text(INVENTORY)
    report: dict[str, Any] = {"argv": sys.argv, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "loadavg_start": os.getloadavg(), "matched_to": V2, "targets_ms": {}}
    for d in DEVICES:
        _log(f"LUT on {d}")
        build_lut(db, args.resolution, args.width, d, inv)
    rows = []
    for d in DEVICES:
        target, _ = v2_prediction(db, d, inv, args.resolution, args.width)
        report["targets_ms"][d] = target
        _log(f"search on {d}, target {target:.4g} ms ({V2}'s LUT prediction)")
        rows.append(search(args, db, d, target))
        _log(f"  {d}: {','.join(rows[-1]['arch'])}")
        (args.out / "table2.partial.json").write_text(json.dumps(rows, indent=1))
    report.update(searches=rows, loadavg_end=os.getloadavg())
    (args.out / "table2.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


def summary(xs: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return {"n": len(xs), "mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0}


def cmd_report(args: argparse.Namespace) -> int:
    lat = json.loads(args.latency.read_text())
    rows: dict[str, dict[str, Any]] = {}
    names = [f"s{i}-{d}" for i in range(3) for d in DEVICES] + [V2]
    files = {V2 if f.stem == "mnv2" else f.stem: f for f in args.retrained.glob("*.json")}
    for f in [files[n] for n in names if n in files]:
        name = V2 if f.stem == "mnv2" else f.stem
        if name not in lat["measured_ms"][DEVICES[0]] or not f.read_text().strip():
            continue  # not one of the measured networks, or its training still runs
        r = json.loads(f.read_text())
        rows[name] = {"arch": r.get("arch"), "test_acc": r["test_acc"], "val_acc": r.get("val_acc"),
                      "epochs": r["epochs"], "wall_s": r.get("wall_s"), "macs": r.get("macs"),
                      "params": r.get("params"),
                      "measured_ms": {d: lat["measured_ms"][d][name] for d in DEVICES},
                      "predicted_ms": {d: lat["predicted_ms"][d][name] for d in DEVICES}}
    own = {d: summary([r["test_acc"] for k, r in rows.items() if k.endswith(d)])
           for d in DEVICES if any(k.endswith(d) for k in rows)}
    out = {"latency": {k: lat[k] for k in ("argv", "date", "loadavg_end", "db", "measured_per_session",
                                           "mobilenet_v2_lut")},
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "networks": rows, "test_acc_by_search_device": own,
           "test_acc_all_searched": summary([r["test_acc"] for k, r in rows.items() if k != V2])
           if len(rows) > (V2 in rows) else None}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print("| network | blocks (non-zero ops) | MACs | test acc | "
          + " | ".join(f"{d} ms (pred.)" for d in DEVICES) + " |")
    print("|---" * (len(DEVICES) + 4) + "|")
    for k, r in rows.items():
        arch = r["arch"] or []
        ops = " ".join(op.replace("_MBConv", "e") for op in arch if op != "zero") or "3x3e1, 16× 3x3e6"
        cells = " | ".join(f"{r['measured_ms'][d]:.4g} ({r['predicted_ms'][d]:.4g})" for d in DEVICES)
        print(f"| {k} | {ops} | {r['macs'] / 1e3:.0f} k | {100 * r['test_acc']:.2f}% | {cells} |")
    for d, s in own.items():
        print(f"searched on {d}: {100 * s['mean']:.2f} ± {100 * s['sd']:.2f}% (n={s['n']})")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--db", type=Path, required=True, help="a copy of a nas_table2 run's hil.db")
    m.add_argument("--runs", type=Path, nargs="+", required=True, help="nas_table2 OUT folders (table2.json)")
    m.add_argument("--sessions", type=int, default=5)
    m.add_argument("--resolution", type=int, default=32)
    m.add_argument("--width", type=float, default=0.25)
    m.add_argument("--out", type=Path, default=Path("/tmp/nasacc-meas"))
    m.set_defaults(func=cmd_measure)
    mt = sub.add_parser("matched", help="searches whose target is MobileNet-V2's latency on each device")
    add_search_args(mt, loss="add#hinge")
    mt.add_argument("--out", type=Path, required=True)
    mt.set_defaults(func=cmd_matched)
    r = sub.add_parser("report")
    r.add_argument("--latency", type=Path, required=True)
    r.add_argument("--retrained", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.set_defaults(func=cmd_report)
    args = p.parse_args()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
