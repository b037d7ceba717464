"""HAQ's figures as PNG: per-layer bits by layer type (paper Fig. 3) and a roofline of the layers
before and after quantization (Fig. 4).

Drawn with matplotlib's object API on a fresh Figure (no pyplot, no global backend switch).
Roofline axes: operational intensity = MACs per DRAM byte (both from the RTL run of the layer: the
bytes are the simulator's DRAM counter), performance = MACs per second at the simulated latency.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.patches import Patch

COLORS = {"conv": "tab:blue", "dwconv": "tab:orange", "fc": "tab:green"}


def plot_bits(layers: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    fig = Figure(figsize=(max(6.0, 0.18 * len(layers) + 2), 4.2))
    ax = fig.add_subplot(1, 1, 1)
    xs = range(len(layers))
    colors = [COLORS.get(x["kind"], "gray") for x in layers]
    ax.bar(xs, [x["wbits"] for x in layers], color=colors, edgecolor="black", linewidth=0.3)
    ax.bar(xs, [-x["abits"] for x in layers], color=colors, edgecolor="black", linewidth=0.3, alpha=0.55)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylim(-8.8, 8.8)
    ax.set_yticks(range(-8, 9, 2), [str(abs(t)) for t in range(-8, 9, 2)])
    ax.set_ylabel("activation bits (down)    weight bits (up)")
    ax.set_xticks(list(xs), [x["name"] for x in layers], rotation=90, fontsize=5)
    ax.set_title(title, fontsize=9)
    ax.legend(handles=[Patch(color=c, label=k) for k, c in COLORS.items()], fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    return path


def _points(layers: Sequence[dict[str, Any]]) -> tuple[list[float], list[float], list[str]]:
    xs, ys, kinds = [], [], []
    for x in layers:
        if x["dram_bytes"] > 0 and x["latency_ms"] > 0:
            xs.append(x["macs"] / x["dram_bytes"])
            ys.append(x["macs"] / (x["latency_ms"] * 1e-3) / 1e9)
            kinds.append(x["kind"])
    return xs, ys, kinds


def plot_roofline(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], costs: Any, path: Path) -> Path:
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for layers, marker, label in ((before, "o", "8/8"), (after, "^", "HAQ policy")):
        xs, ys, kinds = _points(layers)
        ax.scatter(xs, ys, c=[COLORS.get(k, "gray") for k in kinds], marker=marker, s=18, label=label,
                   edgecolors="black", linewidths=0.3)
    bw = _bandwidth_gb_s(costs)
    if bw:
        xs = [x for layers in (before, after) for x in _points(layers)[0]]
        if xs:
            lo, hi = min(xs) / 2, max(xs) * 2
            ax.plot([lo, hi], [bw * lo, bw * hi], color="gray", linestyle="--", linewidth=0.8,
                    label=f"DRAM roof {bw:.1f} GB/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("operational intensity (MACs per DRAM byte)")
    ax.set_ylabel("performance (GMAC/s, simulated)")
    ax.set_title(f"roofline on {costs.device}: layers at 8/8 and after HAQ", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    return path


def _bandwidth_gb_s(costs: Any) -> float | None:
    """Peak DRAM bandwidth from the accelerator's description, when it states one."""
    try:
        acc = costs.target().describe(costs.settings)["class"]["accelerator"]
    except Exception:  # a target that does not describe an accelerator draws no roof
        return None
    per_cycle = acc.get("dram_bytes_per_cycle") or (acc.get("dram_bits", 0) / 8 or None)
    clock = acc.get("clock_mhz")
    if not per_cycle or not clock:
        return None
    return float(per_cycle) * float(clock) * 1e6 / 1e9
