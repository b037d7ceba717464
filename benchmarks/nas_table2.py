"""ProxylessNAS paper Table 2 shape: is the model specialized for a device the fastest on it?

    nice -n 19 .venv/bin/python benchmarks/nas_table2.py --out /tmp/nas-table2 [--resolution 32] [--width 0.25]

For each of three devices (local-cpu, tflite-int8 on this host, bismo-edge at 8/8 through the models'
`qlayers`), at one resolution and width:
1. build its proxyless-mobile LUT (`hil lut build`, benchmarks/nas_search.py's protocol);
2. search on it with `hil nas search` at a latency-dominated setting (default add#linear, λ = 10, the
   target at --target-frac of the space's range on that device), derive the argmax architecture;
3. optionally retrain each architecture (`hil nas retrain`, --retrain-epochs) for its test accuracy;
4. MEASURE every architecture on every device: one interleaved session per device for local-cpu and
   tflite-int8 (benchmarks/nas_search.py's `measure`, as `hil speedup` times networks; --sessions N
   repeats it, the table shows the median), one continuous whole-network simulation each on
   bismo-edge; the LUT prediction beside each.

Networks are timed at the LUT's geometry (3 input channels, 1000 classes, stem stride 2), as
benchmarks/nas_search.py does. Writes OUT/table2.json and prints a Markdown table: rows are where an
architecture was searched, columns where it was measured; a column's own architecture is the
diagonal, and "fastest" says whether it is the fastest of the column.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nas_search import ROOT, build_lut, measure

from hil.optimizers.proxyless.latency import LOSSES, open_latency
from hil.store import open_store

DEVICES = ("local-cpu", "tflite-int8", "bismo-edge")
# local-cpu and bismo-edge as in inventory.yaml; tflite-int8 is the int8 LiteRT device on this host
# (docs/TFLITE.md: without `ssh:` the phone path runs here). One thread each, batch 1 everywhere.
INVENTORY = """version: 1
devices:
  local-cpu:
    backend: torch-cpu
    threads: 1
  tflite-int8:
    backend: tflite
    precision: int8
    threads: 1
  bismo-edge:
    backend: rtl-sim
    batch: 1
    rtl: {accelerator: bismo-edge}
"""


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _hil(*args: str) -> dict[str, Any]:
    p = subprocess.run([sys.executable, "-m", "hil", *args, "--json"], cwd=ROOT, capture_output=True, text=True,
                       check=False)
    if p.returncode != 0:
        raise SystemExit(f"hil {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout)


def search(args: argparse.Namespace, db: Path, device: str, target: float | None = None) -> dict[str, Any]:
    """One `hil nas search` on `device` (target: given, or --target-frac of its range), then optionally
    the derived arch retrained (--retrain-epochs)."""
    with open_store(str(db)) as store:
        rng = open_latency(store, device, args.resolution, args.width).range()
    if target is None:
        target = rng.min_ms + args.target_frac * (rng.max_ms - rng.min_ms)
    out = args.out / f"search-{device}"
    t0 = time.perf_counter()
    _hil("nas", "search", "--device", device, "--space", "proxyless-mobile", "--resolution", str(args.resolution),
         "--width", str(args.width), "--target-ms", f"{target:.6g}", "--loss", args.loss,
         "--loss-lambda", str(args.loss_lambda), "--epochs", str(args.epochs),
         "--warmup-epochs", str(args.warmup_epochs), "--largest-first", str(args.largest_first),
         "--derive", args.derive,
         "--steps-per-epoch", str(args.steps_per_epoch),
         "--arch-every", str(args.arch_every), "--arch-lr", str(args.arch_lr), "--train-limit",
         str(args.train_limit), "--val-limit", str(args.val_limit), "--threads", "1", "--seed", str(args.seed),
         "--db", str(db), "--out", str(out))
    arch = json.loads((out / "arch.json").read_text())
    row = {"device": device, "range_ms": [rng.min_ms, rng.max_ms], "target_ms": target, "arch": arch["arch"],
           "search_s": time.perf_counter() - t0}
    if args.retrain_epochs:
        r = _hil("nas", "retrain", str(out / "arch.json"), "--epochs", str(args.retrain_epochs), "--train-limit",
                 str(args.train_limit), "--val-limit", str(args.val_limit), "--threads", "1",
                 "--out", str(out / "model.safetensors"))
        row["test_acc"] = r["test_acc"]
    return row


def measure_everywhere(db: Path, nets: dict[str, Any], inv: Path, sessions: int, tag: str
                       ) -> tuple[dict[str, dict[str, float]], dict[str, list[dict[str, float]]]]:
    """Every named network measured on every device: per device the median over its sessions, and
    each session's times. A simulation is deterministic: one session; timed devices: `sessions`, each
    in its own shuffled order. Networks with one key (two devices may derive the same arch) run once."""
    unique = list({n.key: n for n in nets.values()}.values())
    measured: dict[str, dict[str, float]] = {}
    per_session: dict[str, list[dict[str, float]]] = {}
    for col in DEVICES:
        n = 1 if col == "bismo-edge" else sessions
        per_session[col] = []
        for i in range(n):
            _log(f"measuring {len(unique)} network(s) on {col}, session {i + 1}/{n}")
            ms = measure(db, unique, col, inv, tag=tag, index=i)
            per_session[col].append({name: ms[net.key] for name, net in nets.items()})
        measured[col] = {name: statistics.median(s[name] for s in per_session[col]) for name in nets}
    return measured, per_session


def table(rows: list[dict[str, Any]], measured: dict[str, dict[str, float]],
          predicted: dict[str, dict[str, float]]) -> tuple[list[str], dict[str, bool]]:
    """Markdown lines of the 3x3 table, and per measuring device whether its own arch is fastest."""
    # ties count as fastest: two devices may derive the same architecture (then it is one network)
    own_fastest = {col: all(measured[col][col] <= measured[col][r["device"]] for r in rows) for col in DEVICES}
    head = "| searched on \\ measured on | " + " | ".join(f"{d} (ms, pred.)" for d in DEVICES) + " | test acc |"
    lines = [head, "|---" * (len(DEVICES) + 2) + "|"]
    for r in rows:
        cells = []
        for col in DEVICES:
            m, p = measured[col][r["device"]], predicted[col][r["device"]]
            best = min(measured[col].values())
            cells.append(f"{'**' if m == best else ''}{m:.4g}{'**' if m == best else ''} ({p:.4g})")
        acc = f"{100 * r['test_acc']:.1f}%" if "test_acc" in r else "-"
        lines.append(f"| {r['device']} | " + " | ".join(cells) + f" | {acc} |")
    lines.append("| own arch fastest? | " + " | ".join("yes" if own_fastest[c] else "no" for c in DEVICES) + " | |")
    return lines, own_fastest


def add_search_args(p: argparse.ArgumentParser, loss: str = "add#linear") -> None:
    """The search's geometry and schedule (`search` reads them), shared with nas_accuracy.py."""
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--loss", default=loss, choices=LOSSES)
    p.add_argument("--loss-lambda", type=float, default=10.0)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--largest-first", type=float, default=0.5)
    p.add_argument("--derive", default="argmax", choices=("argmax", "target"))
    p.add_argument("--steps-per-epoch", type=int, default=16)
    p.add_argument("--arch-every", type=int, default=1)
    p.add_argument("--arch-lr", type=float, default=1e-2)
    p.add_argument("--train-limit", type=int, default=2048)
    p.add_argument("--val-limit", type=int, default=512)
    p.add_argument("--retrain-epochs", type=int, default=0, help="0: no retraining (no accuracy column)")
    p.add_argument("--seed", type=int, default=0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("/tmp/nas-table2"))
    add_search_args(p)
    p.add_argument("--target-frac", type=float, default=0.2, help="target at this fraction of each device's range")
    p.add_argument("--measure-only", action="store_true",
                   help="measure the archs of OUT/table2.json again (writes OUT/table2-remeasured.json)")
    p.add_argument("--sessions", type=int, default=1,
                   help="sessions per timed device (the table shows the median; simulation: always one)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    db, inv = args.out / "hil.db", args.out / "inventory.yaml"
    inv.write_text(INVENTORY)
    report: dict[str, Any] = {"argv": sys.argv, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
                              "loadavg_start": os.getloadavg(), "resolution": args.resolution, "width": args.width}
    t0 = time.perf_counter()
    if args.measure_only:
        # the searches of an earlier run of this OUT, measured again (e.g. in more sessions)
        earlier = json.loads((args.out / "table2.json").read_text())
        rows = earlier["searches"]
        report["searches_from"] = {"date": earlier["date"], "argv": earlier["argv"]}
    else:
        lut_s = {}
        for dev in DEVICES:
            _log(f"LUT on {dev}")
            t1 = time.perf_counter()
            build_lut(db, args.resolution, args.width, dev, inv)
            lut_s[dev] = time.perf_counter() - t1
        report["lut_build_s"] = lut_s
        rows = []
        for dev in DEVICES:
            _log(f"search on {dev}")
            rows.append(search(args, db, dev))
            _log(f"  {dev}: {','.join(rows[-1]['arch'])}")
            (args.out / "table2.partial.json").write_text(json.dumps(rows, indent=1))
    with open_store(str(db)) as store:
        lats = {dev: open_latency(store, dev, args.resolution, args.width) for dev in DEVICES}
    space = lats[DEVICES[0]].space
    nets = {r["device"]: space.network(r["arch"]) for r in rows}
    measured, per_session = measure_everywhere(db, nets, inv, args.sessions, "nas_table2")
    predicted = {col: {r["device"]: lats[col].arch(r["arch"])[0] for r in rows} for col in DEVICES}
    lines, own = table(rows, measured, predicted)
    # in how many sessions each column's own arch was the fastest (ties count)
    own_sessions = {col: sum(all(s[col] <= v for v in s.values()) for s in per_session[col]) for col in DEVICES}
    lines.append("| own fastest in sessions | " + " | ".join(f"{own_sessions[c]}/{len(per_session[c])}"
                                                             for c in DEVICES) + " | |")
    report.update(searches=rows, measured_ms=measured, predicted_ms=predicted, own_arch_fastest=own,
                  measured_per_session=per_session, own_fastest_sessions=own_sessions,
                  distinct_archs=len({n.key for n in nets.values()}), wall_s=time.perf_counter() - t0,
                  loadavg_end=os.getloadavg())
    name = "table2-remeasured.json" if args.measure_only else "table2.json"
    (args.out / name).write_text(json.dumps(report, indent=1) + "\n")
    print("\n".join(lines))
    print(json.dumps({k: report[k] for k in ("own_arch_fastest", "distinct_archs", "wall_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
