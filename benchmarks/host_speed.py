"""How steady is this host's CPU speed? A fixed pure-Python loop timed back to back for a while.

The loop touches no memory beyond a few registers' worth, so its time moves only with the speed the
host gives this vCPU (frequency, a busy SMT sibling, the hypervisor's scheduling). Prints a summary
and writes a time series plot (PNG) and the raw JSON:

    .venv/bin/python benchmarks/host_speed.py --seconds 30 --cpu 1 --out docs/img
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def spin(n: int) -> int:
    x = 0
    for i in range(n):
        x += i * i
    return x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: no pinning)")
    ap.add_argument("--iterations", type=int, default=20_000, help="loop length (about 1 ms)")
    ap.add_argument("--window-ms", type=float, default=100.0, help="median over windows of this length")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    for _ in range(50):
        spin(args.iterations)
    t_start = time.perf_counter_ns()
    series: list[tuple[float, float]] = []  # (start s, ms)
    while (now := time.perf_counter_ns()) - t_start < args.seconds * 1e9:
        spin(args.iterations)
        series.append(((now - t_start) / 1e9, (time.perf_counter_ns() - now) / 1e6))
    med = statistics.median(d for _, d in series)
    windows: dict[int, list[float]] = {}
    for t, d in series:
        windows.setdefault(int(t * 1e3 // args.window_ms), []).append(d / med)
    w = [statistics.median(v) for _, v in sorted(windows.items())]
    ws = sorted(w)
    summary = {
        "machine": f"{platform.node()} · {os.cpu_count()} cores · {platform.processor() or platform.machine()}",
        "date": time.strftime("%Y-%m-%d %H:%M"), "loadavg": os.getloadavg(), "seconds": args.seconds,
        "calls": len(series), "median_ms": round(med, 4), "window_ms": args.window_ms, "windows": len(w),
        "window_p05": round(ws[len(ws) // 20], 3), "window_p95": round(ws[len(ws) * 19 // 20], 3),
        "windows_slower_than_1.2x": round(sum(x > 1.2 for x in w) / len(w), 3),
        "windows_faster_than_0.9x": round(sum(x < 0.9 for x in w) / len(w), 3),
    }
    print(json.dumps(summary))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "host-speed.json").write_text(json.dumps({**summary, "window_medians": w}, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hx) = plt.subplots(1, 2, figsize=(10, 3.2), dpi=120, gridspec_kw={"width_ratios": [3, 1]})
    ax.plot([i * args.window_ms / 1e3 for i in range(len(w))], w, lw=0.8)
    ax.axhline(1.0, color="k", ls="--", lw=0.6)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("loop time / median")
    ax.set_title(f"fixed Python loop, median of each {args.window_ms:.0f} ms window", fontsize=9)
    hx.hist(w, bins=40, orientation="horizontal")
    hx.set_xlabel("windows")
    fig.suptitle(f"{summary['machine']} · {summary['date']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "host-speed.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
