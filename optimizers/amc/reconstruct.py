"""Least-squares reconstruction (AMC's optional step): after pruning a layer's input channels, refit
its weights so that, on training images, its output from the kept inputs matches the unpruned
layer's output as closely as possible in the least-squares sense.

Applied to the 1x1 convs (groups = 1) and the classifier whose input channels were pruned: for them
the fit is an exact linear regression over (sample, position) rows. Inputs and targets are taken
from the unpruned model (its kept input channels, its output channels kept in the pruned model).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from hil.nets.models import ModelSpec
from hil.optimizers.amc.prune import ChannelGraph
from hil.optimizers.data import Batches, ImageSet

ROWS_PER_BATCH = 2048  # positions sampled per batch and layer: enough rows for channels in the hundreds


def reconstruct(graph: ChannelGraph, original: nn.Module, pruned: nn.Module, pspec: ModelSpec,
                keep: Mapping[str, int], data: ImageSet, batches: int, batch_size: int, seed: int = 0) -> list[str]:
    """Refit the eligible layers of `pruned` in place; returns their names."""
    if batches < 1:
        return []
    idx = graph.select(original, keep)
    targets = []
    for u in pspec.convs():
        ug = graph.units[u.name]
        full = graph.groups[ug.input].channels
        if u.cin == full or ug.kind == "dwconv" or (ug.kind == "conv" and u.kernel != 1):
            continue
        targets.append(u)
    if not targets:
        return []
    rows_x: dict[str, list[torch.Tensor]] = {u.name: [] for u in targets}
    rows_y: dict[str, list[torch.Tensor]] = {u.name: [] for u in targets}
    gen = torch.Generator().manual_seed(seed)
    modules = {u.name: original.get_submodule(graph.convs[u.name].module) for u in targets}

    def hook_for(name: str):
        ug = graph.units[name]

        def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            x = inp[0].detach()
            y = out.detach()
            if isinstance(m, nn.Linear):
                y = y - m.bias
            else:  # N C H W -> rows
                x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
                y = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])
            pick = torch.randperm(x.shape[0], generator=gen)[:ROWS_PER_BATCH]
            x, y = x[pick][:, idx[ug.input]], y[pick]
            if ug.output is not None:
                y = y[:, idx[ug.output]]
            rows_x[name].append(x)
            rows_y[name].append(y)
        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in modules]
    was = original.training
    original.eval()
    try:
        with torch.no_grad():
            for i, (x, _) in enumerate(Batches(data, batch_size, shuffle=True, seed=seed).epoch(0)):
                if i >= batches:
                    break
                original(x)
    finally:
        for h in handles:
            h.remove()
        original.train(was)
    with torch.no_grad():
        for u in targets:
            x, y = torch.cat(rows_x[u.name]).double(), torch.cat(rows_y[u.name]).double()
            w = torch.linalg.lstsq(x, y).solution.T  # (out, in)
            dst = pruned.get_submodule(u.module)
            dst.weight.copy_(w.reshape(dst.weight.shape).to(dst.weight.dtype))
    return [u.name for u in targets]
