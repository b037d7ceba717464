"""A searched architecture as a JSON file, its plot, and its retraining from scratch."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hil.errors import ConfigError
from hil.files import atomic_write
from hil.nets.models import ModelSpec, proxyless_net
from hil.nets.proxyless import OPS, parse_op

FORMAT = "hil-nas-arch/1"
# The Fashion-MNIST network trained for an architecture: the LUT geometry's blocks (stem stride 2, as
# `hil lut build` times the family), one input channel and ten classes.
TRAIN_CHANNELS = 1
TRAIN_CLASSES = 10
STEM_STRIDE = 2


@dataclass(frozen=True)
class ArchRecord:
    """What `hil nas search` found, on which LUT, and what it predicts."""

    arch: tuple[str, ...]
    device: str
    fingerprint_class: str
    space: str
    resolution: int
    width: float
    target_ms: float
    loss: str
    predicted_ms: float  # the LatencyModel's prediction for the architecture (calibrated)
    lut_sum_ms: float  # plain Σ LUT over its layers
    expected_ms: float  # E[LAT] under the final α
    range_ms: tuple[float, float]  # fastest..slowest architecture of the space on this device
    alpha: dict[str, dict[str, float]] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)

    def model_options(self) -> dict[str, Any]:
        return {"arch": ",".join(self.arch), "width": self.width, "input_size": self.resolution,
                "in_channels": TRAIN_CHANNELS, "classes": TRAIN_CLASSES, "stem_stride": STEM_STRIDE}

    def spec(self) -> ModelSpec:
        return proxyless_net(**self.model_options())

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["arch"] = list(self.arch)
        d["range_ms"] = list(self.range_ms)
        return {"format": FORMAT, **d, "model": {"name": "proxyless", "options": self.model_options()}}

    def write(self, path: str | os.PathLike[str]) -> None:
        text = json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(path), lambda tmp: tmp.write_text(text))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ArchRecord:
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"architecture file {path} not found") from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"architecture file {path} is not readable JSON: {e}") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ConfigError(f"{path} is not an architecture written by `hil nas search` ({FORMAT})")
        names = set(cls.__dataclass_fields__)
        try:
            fields = {k: d[k] for k in names if k in d}
            fields["arch"] = tuple(fields["arch"])
            fields["range_ms"] = tuple(fields["range_ms"])
            rec = cls(**fields)
        except (KeyError, TypeError) as e:
            raise ConfigError(f"{path}: incomplete architecture record ({e})") from None
        rec.spec()  # validates the ops
        return rec


def plot_archs(records: Sequence[ArchRecord], path: str | os.PathLike[str]) -> None:
    """One row per record (device): the op of every block, kernel as colour, expand as shade, zero blank
    (the paper's "specialized architectures" figure)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not records:
        raise ConfigError("nothing to plot")
    n = max(len(r.arch) for r in records)
    fig = Figure(figsize=(max(8.0, 0.55 * n + 2), 0.9 * len(records) + 1.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = {3: ("#9ecae1", "#3182bd"), 5: ("#a1d99b", "#31a354"), 7: ("#fdae6b", "#e6550d")}
    for row, rec in enumerate(records):
        y = len(records) - 1 - row
        for b, op in enumerate(rec.arch):
            parsed = parse_op(op)
            if parsed is None:
                ax.add_patch(_rect(b, y, "white", "#bbbbbb"))
                continue
            k, e = parsed
            ax.add_patch(_rect(b, y, colours[k][0 if e == 3 else 1], "black"))
            ax.text(b + 0.5, y + 0.5, f"{k}\ne{e}", ha="center", va="center", fontsize=6)
    ax.set_xlim(0, n)
    ax.set_ylim(0, len(records))
    ax.set_yticks([len(records) - 0.5 - i for i in range(len(records))])
    ax.set_yticklabels([f"{r.device}\n{r.predicted_ms:.3g} ms" for r in records], fontsize=7)
    ax.set_xticks([b + 0.5 for b in range(n)])
    ax.set_xticklabels([str(b + 1) for b in range(n)], fontsize=6)
    ax.set_xlabel("searchable block (kernel k, expand e; blank: zero/skip)")
    ax.set_title(f"ProxylessNAS architectures per device ({records[0].space}, resolution {records[0].resolution}, "
                 f"width {records[0].width:g})", fontsize=8)
    fig.subplots_adjust(left=0.12, right=0.98, bottom=0.25, top=0.85)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=120)


def _rect(x: float, y: float, face: str, edge: str) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x + 0.05, y + 0.1), 0.9, 0.8, facecolor=face, edgecolor=edge, linewidth=0.5)


def plot_alpha_history(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Left: softmax(α) of every block after the last epoch; right: over the epochs, the probability of
    the op each block ends up with. (Every probability of every epoch is in alpha_history.json.)"""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not history:
        return
    last = history[-1]["alpha"]
    blocks = list(last)
    grid = [[last[b].get(op, float("nan")) for op in OPS] for b in blocks]
    fig = Figure(figsize=(10, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(OPS)))
    ax.set_xticklabels(OPS, rotation=60, fontsize=6)
    ax.set_yticks(range(len(blocks)))
    ax.set_yticklabels(blocks, fontsize=6)
    ax.set_title(f"softmax(α) after epoch {history[-1]['epoch']}", fontsize=8)
    fig.colorbar(im, ax=ax)
    ax2 = fig.add_subplot(1, 2, 2)
    epochs = [h["epoch"] for h in history]
    for b in blocks:
        final = max(last[b], key=last[b].get)
        ax2.plot(epochs, [h["alpha"][b][final] for h in history], linewidth=0.8)
    ax2.set_xlabel("epoch", fontsize=7)
    ax2.set_ylabel("probability of the final op", fontsize=7)
    ax2.tick_params(labelsize=6)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.22, wspace=0.35)
    fig.savefig(str(path), dpi=100)


def retrain(rec: ArchRecord, data: Any, cfg: Any, *, checkpoint: str | os.PathLike[str], device: Any = None,
            dist: Any = None, resume: bool = True, progress: bool = False, log: Callable[[str], None] | None = None,
            extra_meta: dict[str, Any] | None = None) -> tuple[Any, ModelSpec, Any]:
    """Train the architecture from scratch (fresh weights from `cfg.seed`); resumable checkpoint.
    With a `dist` (hil.optimizers.dist.Dist) of several processes, every rank calls this alike."""
    from hil.optimizers.train import model_meta, seed_everything, train

    spec = rec.spec()
    seed_everything(cfg.seed)
    model = spec.build()
    meta = {**model_meta(spec), "nas": {"device": rec.device, "fingerprint_class": rec.fingerprint_class,
                                        "predicted_ms": rec.predicted_ms, "target_ms": rec.target_ms},
            **(extra_meta or {})}
    result = train(model, data, cfg, device=device, dist=dist, checkpoint=checkpoint, meta=meta, resume=resume,
                   progress=progress, log=log)
    return model, spec, result
