"""ProxylessNAS on the local CPU: memory of a step per mode, search cost vs training one network, and
searched architectures retrained and measured end to end (predicted vs measured latency).

    .venv/bin/python benchmarks/nas_search.py --out /tmp/nas-bench [--width 0.5] [--targets 0.35,0.7]

Steps (each resumable: the LUT in the store, searches and retrains in their folders):
1. `hil lut build --device local-cpu --space proxyless-mobile --resolution R --width W` (thread clock);
2. per supernet mode, the activation memory a step keeps for backward (`saved_bytes`) and its time;
3. for each target (a fraction of the space's latency range on this device): search, retrain from
   scratch, test accuracy, and the network measured end to end against its LUT prediction;
4. MobileNet-V2 (same width, resolution, head) trained and measured the same way, as the baseline.

Prints a JSON report and writes it to OUT/report.json. Latency figures are this VM's, shared with
other jobs: compare them within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil.calibration import measure_session  # noqa: E402
from hil.devices.host.targets import open_target, settings_for  # noqa: E402
from hil.inventory import load_inventory  # noqa: E402
from hil.lease import hold  # noqa: E402
from hil.measure import MeasureSettings  # noqa: E402
from hil.nets.models import mobilenet_v2, proxyless_net  # noqa: E402
from hil.optimizers.data import Batches, fashion_mnist  # noqa: E402
from hil.optimizers.proxyless.arch import STEM_STRIDE, plot_archs, retrain  # noqa: E402
from hil.optimizers.proxyless.latency import LOSSES  # noqa: E402
from hil.optimizers.proxyless.memory import saved_bytes  # noqa: E402
from hil.optimizers.proxyless.run import build_supernet, open_latency, run_search  # noqa: E402
from hil.optimizers.proxyless.search import SearchConfig  # noqa: E402
from hil.optimizers.train import TrainConfig, evaluate, seed_everything, train  # noqa: E402
from hil.store import open_store  # noqa: E402

DEVICE = "local-cpu"
PROTOCOL = ["--min-time", "0.2", "--min-repeats", "20", "--warmup-runs", "5", "--warmup-time", "0.05",
            "--clock", "thread", "--cv-threshold", "0.1", "--max-attempts", "2"]


def protocol() -> MeasureSettings:
    return MeasureSettings(min_time_s=0.2, min_repeats=20, warmup_runs=5, warmup_s=0.05, cv_threshold=0.1,
                           max_attempts=2)


def build_lut(db: Path, res: int, width: float, device: str = DEVICE, inventory: Path | None = None) -> None:
    """`hil lut build` of proxyless-mobile at this geometry on one device (resumable: the store keeps
    what is measured). The protocol flags are the timed devices'; rtl-sim runs each entry once."""
    inv = ["-i", str(inventory)] if inventory else []
    p = subprocess.run([sys.executable, "-m", "hil", "lut", "build", "-d", device, "--space", "proxyless-mobile",
                        "--resolution", str(res), "--width", str(width), *PROTOCOL, "--calibration-nets", "0",
                        "--db", str(db), *inv, "--json"], cwd=ROOT, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise SystemExit(f"LUT build on {device} failed: {p.stderr.strip()[-2000:]}")


def memory(res: int, width: float, batch: int, data: Any) -> dict[str, Any]:
    net = build_supernet(res, width, 0)
    net.set_generator(torch.Generator().manual_seed(0))
    net.train()
    x, y = next(Batches(data.train, batch).epoch())
    out: dict[str, Any] = {}

    def step(model: Any) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            model.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    for mode in ("weights", "full_v2", "two", "all"):
        net.set_mode(mode)
        saved = saved_bytes(lambda: net(x)) / 2**20
        if mode == "weights":  # the network this forward sampled, before step() samples others
            arch = [m.choices[m.sampled[0]] for _, m in net.mixed_ops()]
        out[f"supernet_{mode}"] = {"saved_mb": saved, "step_s": step(net)}
    single = proxyless_net(arch, width, input_size=res, stem_stride=STEM_STRIDE).build().train()
    out["single_sampled_net"] = {"saved_mb": saved_bytes(lambda: single(x)) / 2**20, "step_s": step(single)}
    out["params_mb"] = {"supernet": sum(p.numel() for p in net.parameters()) * 4 / 2**20,
                        "single": sum(p.numel() for p in single.parameters()) * 4 / 2**20}
    return out


def measure(db: Path, nets: list[Any], device: str = DEVICE, inventory: Path | None = None,
            tag: str = "nas_bench", index: int = 0) -> dict[str, float]:
    """Whole networks timed end to end on one device in one session (interleaved rounds, so the
    host's speed changes fall on all alike; on rtl-sim: each network one continuous simulation)."""
    inv = load_inventory(str(inventory or ROOT / "inventory.yaml"))
    settings = settings_for(inv.device(device), protocol(), clock="thread")
    target = open_target(inv, device)
    try:
        with open_store(str(db)) as store, hold(target, 3600):
            # one session: the searched nets and the baseline are compared with each other
            session = measure_session(store, target, nets, settings, tag, index, seed=index, reuse_after=0.0)
    finally:
        target.close()
    return session.latency_ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/nas-bench")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--targets", default="0.35,0.7", help="fractions of the space's latency range")
    ap.add_argument("--search-epochs", type=int, default=3)
    ap.add_argument("--warmup-epochs", type=int, default=1)
    ap.add_argument("--retrain-epochs", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=6000)
    ap.add_argument("--val-limit", type=int, default=1000)
    ap.add_argument("--arch-lr", type=float, default=1e-3, help="Adam lr of α (the paper's 1e-3 needs many steps)")
    ap.add_argument("--loss", default="mul#log", choices=LOSSES)
    ap.add_argument("--loss-beta", type=float, default=0.3)
    ap.add_argument("--loss-lambda", type=float, default=0.1)
    ap.add_argument("--memory-only", action="store_true", help="only the per-mode memory and step time")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = out / "hil.db"
    res, width = args.resolution, args.width
    report: dict[str, Any] = {"resolution": res, "width": width, "threads": args.threads,
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "argv": sys.argv[1:]}
    t0 = time.perf_counter()
    build_lut(db, res, width)
    report["lut_build_s"] = time.perf_counter() - t0
    with open_store(str(db)) as store:
        lat = open_latency(store, DEVICE, res, width)
    rng = lat.range()
    report["range_ms"] = [rng.min_ms, rng.max_ms]
    data = fashion_mnist(size=res, train_limit=args.train_limit, val_limit=args.val_limit)
    report["memory_batch64"] = memory(res, width, 64, data)
    print(json.dumps(report["memory_batch64"], indent=1), file=sys.stderr)
    if args.memory_only:
        print(json.dumps(report, indent=1))
        return

    results, records, nets = [], [], {}
    for frac in [float(f) for f in args.targets.split(",")]:
        target = rng.min_ms + frac * (rng.max_ms - rng.min_ms)
        cfg = SearchConfig(epochs=args.search_epochs, warmup_epochs=args.warmup_epochs, target_ms=target,
                           arch_lr=args.arch_lr, loss=args.loss, loss_beta=args.loss_beta,
                           loss_lambda=args.loss_lambda)
        d = out / f"search-{frac:g}"
        t1 = time.perf_counter()
        rec = run_search(lat, data, cfg, d, log=lambda m: print(m, file=sys.stderr))
        search_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        model, spec, _ = retrain(rec, data, TrainConfig(epochs=args.retrain_epochs), checkpoint=d / "model.safetensors")
        train_s = time.perf_counter() - t2
        acc = evaluate(model, data.test).accuracy
        records.append(rec)
        net = lat.space.network(rec.arch)
        nets[net.key] = net
        results.append({"target_frac": frac, "target_ms": target, "arch": list(rec.arch),
                        "predicted_ms": rec.predicted_ms, "expected_ms": rec.expected_ms, "test_acc": acc,
                        "search_s": search_s, "retrain_s": train_s, "macs": spec.macs, "key": net.key})
    plot_archs(records, out / "archs.png")
    # the MobileNet-V2 baseline at the same width, resolution and head
    v2 = mobilenet_v2(width, input_size=res, in_channels=1, classes=10, stem_stride=STEM_STRIDE)
    v2_lut = mobilenet_v2(width, input_size=res, in_channels=3, classes=1000, stem_stride=STEM_STRIDE).network()
    nets[v2_lut.key] = v2_lut
    seed_everything(0)
    v2_model = v2.build()
    t3 = time.perf_counter()
    train(v2_model, data, TrainConfig(epochs=args.retrain_epochs), checkpoint=out / "mobilenet-v2.safetensors")
    v2_s = time.perf_counter() - t3
    measured = measure(db, list(nets.values()))
    for r in results:
        r["measured_ms"] = measured[r.pop("key")]
        r["error_pct"] = 100 * (r["predicted_ms"] / r["measured_ms"] - 1)
    report["searches"] = results
    report["mobilenet_v2"] = {"test_acc": evaluate(v2_model, data.test).accuracy, "train_s": v2_s,
                              "measured_ms": measured[v2_lut.key], "macs": v2.macs}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
