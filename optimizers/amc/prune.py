"""Channel groups of a model from its own description, and pruning them.

The dependency graph comes from the `ModelSpec` itself rather than from tracing a torch module: our
networks are lists of workloads, so which convolutions share a channel dimension is known exactly.
A *group* is one set of channels that must be pruned together:

- the output channels of a conv (`stem`, `block3.pw`, `head`), with every depthwise conv that runs
  on them and every conv that reads them;
- the middle width of an MBConv (`block3.expand`): its expansion's outputs, its depthwise conv and
  its projection's inputs;
- a residual stage (`block2.project`): the output of the stage's first block and of every block
  added to it by an identity shortcut, with every conv reading the sum. Channels coupled by a
  residual add are therefore always pruned together, which the public AMC code got wrong.

Groups are named after the conv that first produces them, never by index. Channel selection keeps
the channels with the largest L1 norm summed over the group's producing filters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from hil.errors import ConfigError
from hil.nets.models import ConvUnit, Layer, ModelSpec, SpecNet
from hil.workload import ConvLayer, Linear, Logits, MBConv, Workload

INPUT = "input"  # the image's channels: never pruned


@dataclass(frozen=True)
class UnitGroups:
    """Which group a conv unit's input and output channels belong to (None: the classes)."""

    unit: str
    kind: str  # conv | dwconv | fc
    input: str
    output: str | None


@dataclass
class Group:
    name: str
    channels: int
    producers: list[str] = field(default_factory=list)  # units whose output channels these are
    depthwise: list[str] = field(default_factory=list)  # depthwise units running on them
    consumers: list[str] = field(default_factory=list)  # units reading them as input channels
    prunable: bool = True

    @property
    def residual(self) -> bool:
        return len(self.producers) > 1


def _layer_groups(layer: Layer, gin: str) -> tuple[list[UnitGroups], str, str | None]:
    """(units with their groups, the group of the layer's output, a new group it creates)."""
    w = layer.workload
    n = layer.name
    if isinstance(w, ConvLayer):
        if w.groups == 1:
            return [UnitGroups(n, "conv", gin, n)], n, n
        if w.groups == w.input[2] == w.output[2]:
            return [UnitGroups(n, "dwconv", gin, gin)], gin, None
        raise ConfigError(f"layer {n!r}: grouped convs other than depthwise are not prunable")
    if isinstance(w, MBConv):
        units = []
        mid = gin
        if w.expand != 1:
            mid = f"{n}.expand"
            units.append(UnitGroups(f"{n}.expand", "conv", gin, mid))
        units.append(UnitGroups(f"{n}.dw", "dwconv", mid, mid))
        out = gin if w.idskip else f"{n}.project"
        units.append(UnitGroups(f"{n}.project", "conv", mid, out))
        return units, out, None if w.idskip else out
    if isinstance(w, Logits):
        return [UnitGroups(n, "fc", gin, None)], gin, None
    if isinstance(w, Linear):
        return [UnitGroups(n, "fc", gin, None)], gin, None
    raise ConfigError(f"layer {n!r}: no channel graph for workload kind {w.kind!r}")


class ChannelGraph:
    """The channel groups of one model and the unit -> group map."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.units: dict[str, UnitGroups] = {}
        self.layer_io: dict[str, tuple[str, str]] = {}  # layer -> (input group, output group)
        convs = {u.name: u for u in spec.convs()}
        self.convs: dict[str, ConvUnit] = convs
        self.groups: dict[str, Group] = {}
        gin = INPUT
        first = spec.layers[0].workload
        self.groups[INPUT] = Group(INPUT, _in_channels(first), prunable=False)
        for layer in spec.layers:
            units, gout, _ = _layer_groups(layer, gin)
            self.layer_io[layer.name] = (gin, gout)
            for ug in units:
                self.units[ug.unit] = ug
                if ug.output is not None and ug.output not in self.groups:
                    self.groups[ug.output] = Group(ug.output, convs[ug.unit].cout)
                if ug.kind == "dwconv":
                    self.groups[ug.input].depthwise.append(ug.unit)
                    continue
                self.groups[ug.input].consumers.append(ug.unit)
                if ug.output is not None:
                    self.groups[ug.output].producers.append(ug.unit)
            gin = gout

    def prunable(self) -> list[Group]:
        """Groups the search acts on, in the order their first producer runs."""
        return [g for g in self.groups.values() if g.prunable]

    def apply(self, keep: Mapping[str, int]) -> ModelSpec:
        """The model with `keep[group]` channels in each named group (others unchanged)."""
        unknown = set(keep) - {g.name for g in self.prunable()}
        if unknown:
            raise ConfigError(f"model {self.spec.name!r} has no prunable channel group {sorted(unknown)[0]!r}")
        n = {g.name: int(keep.get(g.name, g.channels)) for g in self.groups.values()}
        for g in self.groups.values():
            if not 1 <= n[g.name] <= g.channels:
                raise ConfigError(f"group {g.name!r} has {g.channels} channels; cannot keep {n[g.name]}")
        layers = []
        for layer in self.spec.layers:
            gin, gout = self.layer_io[layer.name]
            layers.append(Layer(layer.name, _resize(layer, n[gin], n, gout)))
        options = dict(self.spec.options)
        pruned = {k: v for k, v in n.items() if k != INPUT and v != self.groups[k].channels}
        if pruned:
            options["channels"] = pruned
        return ModelSpec(self.spec.name, tuple(layers), options)

    # ------------------------------------------------------------------ channel selection
    def importance(self, model: nn.Module, group: str) -> torch.Tensor:
        """Per channel of `group`: the L1 norm of its filters summed over the group's producers."""
        g = self.groups[group]
        score = torch.zeros(g.channels)
        for name in g.producers:
            w = _conv_weight(model, self.convs[name])
            score += w.detach().abs().flatten(1).sum(1).float().cpu()
        if not g.producers:  # only depthwise convs touch it (cannot happen in our models)
            for name in g.depthwise:
                score += _conv_weight(model, self.convs[name]).detach().abs().flatten(1).sum(1).float().cpu()
        return score

    def select(self, model: nn.Module, keep: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """Indices (ascending) of the channels kept in each group: the largest L1 norms."""
        out: dict[str, torch.Tensor] = {}
        for g in self.groups.values():
            k = int(keep.get(g.name, g.channels))
            if k >= g.channels or not g.prunable:
                out[g.name] = torch.arange(g.channels)
            else:
                top = torch.topk(self.importance(model, g.name), k, sorted=False).indices
                out[g.name] = torch.sort(top).values
        return out

    def prune(self, model: nn.Module, keep: Mapping[str, int]) -> tuple[SpecNet, ModelSpec]:
        """A new model with `keep` channels per group, weights copied from `model`'s kept channels."""
        spec = self.apply(keep)
        idx = self.select(model, keep)
        new = spec.build()
        src = dict(model.named_modules())
        dst = dict(new.named_modules())
        for unit in spec.convs():
            ug = self.units[unit.name]
            old_unit = self.convs[unit.name]
            i_in = idx[ug.input]
            i_out = idx[ug.output] if ug.output is not None else None
            conv_s, conv_d = src[old_unit.module], dst[unit.module]
            with torch.no_grad():
                w = conv_s.weight
                if ug.kind == "dwconv":
                    conv_d.weight.copy_(w[i_in])
                elif ug.kind == "fc":
                    conv_d.weight.copy_(w[:, i_in])
                    conv_d.bias.copy_(conv_s.bias)
                else:
                    assert i_out is not None
                    conv_d.weight.copy_(w[i_out][:, i_in])
                if old_unit.bn is not None and unit.bn is not None:
                    sel = i_in if ug.kind == "dwconv" else i_out
                    assert sel is not None
                    bn_s, bn_d = src[old_unit.bn], dst[unit.bn]
                    for name in ("weight", "bias", "running_mean", "running_var"):
                        getattr(bn_d, name).copy_(getattr(bn_s, name)[sel])
                    bn_d.num_batches_tracked.copy_(bn_s.num_batches_tracked)
        return new.train(model.training), spec


def _in_channels(w: Workload) -> int:
    if isinstance(w, Linear):
        return w.in_features
    return int(w.input[2])  # type: ignore[attr-defined]


def _conv_weight(model: nn.Module, unit: ConvUnit) -> torch.Tensor:
    return model.get_submodule(unit.module).weight  # type: ignore[return-value]


def _resize(layer: Layer, cin: int, n: Mapping[str, int], gout: str) -> Workload:
    w = layer.workload
    name = layer.name
    if isinstance(w, ConvLayer):
        cout = n[gout]
        groups = cin if w.groups > 1 else 1
        return ConvLayer(w.name, (*w.input[:2], cin), (*w.output[:2], cout), w.kernel, w.stride, groups, w.act)
    if isinstance(w, MBConv):
        mid = n[f"{name}.expand"] if w.expand != 1 else None
        return MBConv((*w.input[:2], cin), (*w.output[:2], n[gout]), w.expand, w.kernel, w.stride, w.idskip, mid)
    if isinstance(w, Logits):
        return Logits((*w.input[:2], cin), w.classes)
    if isinstance(w, Linear):
        return Linear(cin, w.out_features)
    raise ConfigError(f"layer {name!r}: cannot resize workload kind {w.kind!r}")


# --------------------------------------------------------------------------- rounding
def keep_channels(fraction: float, channels: int, divisor: int = 8, min_ratio: float = 0.2) -> int:
    """Channels kept for a kept fraction: a multiple of `divisor` (or all of them), at least
    `min_ratio` of the group (rounded up to the divisor), at most all."""
    want = fraction * channels
    return min(candidates(channels, divisor, min_ratio), key=lambda c: (abs(c - want), c))


def min_keep(channels: int, divisor: int = 8, min_ratio: float = 0.2) -> int:
    return int(min(channels, max(divisor, math.ceil(min_ratio * channels / divisor) * divisor)))


def candidates(channels: int, divisor: int = 8, min_ratio: float = 0.2) -> list[int]:
    """Every channel count a group may keep, ascending."""
    lo = min_keep(channels, divisor, min_ratio)
    vals = list(range(lo, channels + 1, divisor))
    if vals[-1] != channels:
        vals.append(channels)
    return vals
