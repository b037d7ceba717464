"""AMC's "pruning policy" figure as PNG: the kept ratio of every conv's output channels, one series
per policy (e.g. the FLOPs- and the latency-budgeted one), so where each budget prunes shows side by
side. Drawn with matplotlib's object API on a fresh Figure (no pyplot, no global backend switch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

STYLES = ("tab:blue", "tab:red", "tab:green", "tab:purple")


def plot_policy(policies: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: Path, title: str) -> Path:
    """`policies`: (label, layers) with layers as in policy.json (`name`, `kept_ratio`), same names."""
    names = [x["name"] for x in policies[0][1]]
    fig = Figure(figsize=(max(6.0, 0.2 * len(names) + 2), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(policies)
    for i, (label, layers) in enumerate(policies):
        ratio = {x["name"]: x["kept_ratio"] for x in layers}
        xs = [j + (i - (len(policies) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, [ratio.get(n, 1.0) for n in names], width=width, color=STYLES[i % len(STYLES)], label=label)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("kept ratio of output channels")
    ax.set_xticks(list(range(len(names))), names, rotation=90, fontsize=5)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    return path
