"""A whole search, as the CLI runs it: LUT from the store, supernet, search, architecture files."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from hil.files import atomic_write
from hil.nets.proxyless import ProxylessMobile
from hil.optimizers.data import DataSplits
from hil.optimizers.dist import Dist
from hil.optimizers.proxyless.arch import (
    STEM_STRIDE,
    TRAIN_CHANNELS,
    TRAIN_CLASSES,
    ArchRecord,
    plot_alpha_history,
    plot_archs,
)
from hil.optimizers.proxyless.latency import SearchLatency, lut_space, open_latency
from hil.optimizers.proxyless.search import SearchConfig, search
from hil.optimizers.proxyless.supernet import Supernet
from hil.optimizers.train import seed_everything

__all__ = ["ARCH_FILE", "build_supernet", "lut_space", "open_latency", "run_search", "train_family"]
ARCH_FILE = "arch.json"
HISTORY_FILE = "alpha_history.json"


def train_family(resolution: int, width: float) -> ProxylessMobile:
    """The same blocks for Fashion-MNIST: one input channel, ten classes."""
    return ProxylessMobile(resolution=resolution, width=width, channels=TRAIN_CHANNELS, classes=TRAIN_CLASSES,
                           stem_stride=STEM_STRIDE)


def build_supernet(resolution: int, width: float, seed: int) -> Supernet:
    seed_everything(seed)
    return Supernet(train_family(resolution, width))


def run_search(latency: SearchLatency, data: DataSplits, cfg: SearchConfig, out_dir: str | os.PathLike[str], *,
               device: torch.device | str = "cpu", resume: bool = True, progress: bool = False,
               log: Callable[[str], None] | None = None, dist: Dist | None = None) -> ArchRecord:
    """Search, then write DIR/arch.json, DIR/alpha_history.json, DIR/arch.png and DIR/alpha.png
    (rank 0 of a `dist` job writes; every rank returns the same record)."""
    space = latency.space
    if data.size != space.resolution:
        raise ValueError(f"data at {data.size} px for a search at resolution {space.resolution}")
    net = build_supernet(space.resolution, space.width, cfg.seed)
    # The LUT and the supernet must describe the same blocks.
    for a, b in zip(net.family.slots, space.slots, strict=True):
        assert (a.input, a.output, a.stride) == (b.input, b.output, b.stride), (a, b)
    meta = {"device": latency.model.device, "fingerprint_class": latency.model.fp_class,
            "resolution": space.resolution, "width": space.width}
    out = Path(out_dir)
    result = search(net, latency, data, cfg, out_dir=out, device=device, resume=resume, progress=progress,
                    log=log, meta=meta, dist=dist)
    r = latency.range()
    rec = ArchRecord(
        arch=result.arch, device=latency.model.device, fingerprint_class=latency.model.fp_class,
        space=space.name, resolution=space.resolution, width=space.width, target_ms=cfg.target_ms,
        loss=cfg.loss, predicted_ms=result.predicted_ms, lut_sum_ms=result.lut_sum_ms,
        expected_ms=result.expected_ms, range_ms=(r.min_ms, r.max_ms), alpha=net.alpha_table(),
        search=asdict(cfg))
    if dist is not None and not dist.main:
        return rec
    rec.write(out / ARCH_FILE)
    hist = [asdict(h) for h in result.history]
    text = json.dumps(hist, indent=1) + "\n"
    atomic_write(out / HISTORY_FILE, lambda tmp: tmp.write_text(text))
    plot_archs([rec], out / "arch.png")
    plot_alpha_history(hist, out / "alpha.png")
    return rec
