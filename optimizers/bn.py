"""BatchNorm recalibration ("adaptive BN", EagleEye, ECCV 2020), shared by AMC's pruned models and
ProxylessNAS's subnetworks of a supernet (whose shared running statistics describe other paths).

Pruning channels changes what every later layer sees, so the running means and variances a BN layer
learned on the unpruned model no longer describe its inputs; in eval mode the pruned model then
normalizes with the wrong statistics, and a 50%-FLOPs model of a small network scores near chance
although its weights are mostly intact. Re-estimating the statistics on a few training batches (no
gradient, no weight update) removes that mismatch, which gives AMC's no-fine-tune reward a signal.

The batches come from the TRAINING split only (the held-out split is what the reward scores), are
not augmented (the reward scores unaugmented images, so the statistics should describe those), and
are a pure function of (split, batches, batch size, seed): every episode of a search recalibrates on
the same images, so an episode's reward depends on its policy alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hil.errors import ConfigError
from hil.optimizers.data import Batches, ImageSet


def calibration_batches(train: ImageSet, batches: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """The first `batches` shuffled, unaugmented, normalized batches of `train` for `seed`."""
    if batches < 0:
        raise ConfigError(f"--bn-batches must be >= 0, got {batches}")
    if batches == 0:
        return []
    loader = Batches(train, batch_size, shuffle=True, augmented=False, seed=seed)
    if len(loader) < batches:
        raise ConfigError(f"--bn-batches {batches} of {batch_size} images needs {batches * batch_size} training "
                          f"images; the training split has {len(train)}")
    out: list[torch.Tensor] = []
    for x, _ in loader.epoch(0):
        out.append(x)
        if len(out) == batches:
            break
    return out


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def recalibrate_bn(model: nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    """Replace every BN layer's running statistics by their plain average over `inputs`; returns the
    number of BN layers recalibrated. Weights and BN affine parameters are left untouched."""
    bns = batchnorms(model)
    if not bns or not inputs:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in bns]
    # Only the BN layers run in train mode (so they track statistics); dropout and everything else
    # stay in eval mode, so the activations match those the model is scored with.
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: every batch counts equally, whatever its position
        m.train()
    try:
        with torch.no_grad():
            for x in inputs:
                model(x)
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.train(was_training)
    return len(bns)
