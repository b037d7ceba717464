"""The ProxylessNAS supernet: one mixed op per searchable block, built from the LUT's workloads.

Every candidate path of block b is `build_module(slot.workload(op))`, the very module a LUT entry
times, so the supernet, the derived network (`hil.nets.models.proxyless_net`) and the LUT agree on
what an op is. Modules carry the derived network's names ('stem', 'block0', 'block1'..'block21',
'head', 'classifier'); a candidate lives at 'blockN.ops.<op name>' and its logit in 'blockN.alpha'.

Path binarization (Cai et al. 2019, section 3.2): a forward samples binary gates g from softmax(α),
so one path runs and only its activations are kept. The gradient of α goes through the gates:
dL/dα_i = Σ_j dL/dg_j · p_j (δ_ij − p_i), with dL/dg_j = <dL/dy, o_j> for y = Σ_j g_j o_j.

Modes of a forward (`Supernet.mode`):
- "weights": the sampled path runs as a plain module (weight steps; memory of one path);
- "full_v2": the sampled path runs inside an autograd function that keeps only its output; the
  backward recomputes every path, without a graph, to get dL/dg_j for all j (architecture steps);
- "two": two paths are sampled (multinomial over p), both run, gradients reach their two gates, and
  after the update their logits are shifted so their total probability mass is unchanged;
- "all": every path runs, weighted by softmax(α) (DARTS-style), only to measure its memory;
- "fixed": the argmax path of each block, deterministically (evaluation of the derived net);
- "largest": every block's largest op (7x7_MBConv6), the first phase of the warm-up.

Warm-up by inheritance (ours, not the paper's): trained from scratch under uniform path sampling, this
supernet stays at chance at the budgets this project affords. Every block that cannot be skipped picks
one of six independently initialised functions, and their compositions never agree (docs/NAS.md). So
the warm-up first trains the largest path alone, then `inherit_from_largest` copies its weights into
every smaller op: the centre of its kernels and its first channels. Each op keeps its own weights from
then on, as in the method; only their starting point differs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from hil.nets.proxyless import BlockSlot, ProxylessMobile, parse_op
from hil.nets.torch_build import build_module, conv_paths

MODES = ("weights", "full_v2", "two", "all", "fixed", "largest")
GRAD_MODES = ("full_v2", "two")


class _BinaryGatePath(torch.autograd.Function):
    """y = o_active(x); backward gives dL/dx through the active path only and dL/dg_j = <dL/dy, o_j(x)>
    for every path j, recomputed without keeping their graphs (full_v2)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, gates: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor],
                run_all: Callable[[torch.Tensor], list[torch.Tensor]], paths: list[nn.Module]) -> torch.Tensor:
        detached = x.detach().requires_grad_(x.requires_grad)
        with torch.enable_grad():
            out = run(detached)
        ctx.run_all = run_all
        ctx.paths = paths
        ctx.save_for_backward(detached, out)
        return out.detach()

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        detached, out = ctx.saved_tensors
        grad_x = None
        if detached.requires_grad:
            (grad_x,) = torch.autograd.grad(out, detached, grad_out)
        with torch.no_grad(), _frozen_bn_stats(ctx.paths):
            outs = ctx.run_all(detached.detach())
            grad_gates = torch.stack([(o * grad_out).sum() for o in outs])
        return grad_x, grad_gates, None, None, None


@contextlib.contextmanager
def _frozen_bn_stats(modules: list[nn.Module]) -> Iterator[None]:
    """The recomputation in backward must not count as another batch in the paths' BN running stats
    (the forward already did, for the sampled path): momentum 0 leaves them as they are."""
    bns = [m for mod in modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (mom, nbt) in zip(bns, saved, strict=True):
            m.momentum = mom
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)


class Identity(nn.Module):
    """The zero op of a block that can be skipped: such a block has a residual, so skipping it is x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class MixedOp(nn.Module):
    """The candidate paths of one searchable block and their architecture logits α."""

    def __init__(self, slot: BlockSlot) -> None:
        super().__init__()
        self.slot = slot
        self.choices: tuple[str, ...] = slot.choices
        ops: dict[str, nn.Module] = {}
        for op in self.choices:
            w = slot.workload(op)
            ops[op] = Identity() if w is None else build_module(w)
        self.ops = nn.ModuleDict(ops)
        self.alpha = nn.Parameter(torch.zeros(len(self.choices)))
        sizes = {op: ke for op in self.choices if (ke := parse_op(op)) is not None}
        self.largest = max(sizes, key=lambda op: (sizes[op][1], sizes[op][0]))  # expand, then kernel
        self.mode = "weights"
        self.generator: torch.Generator | None = None
        # Set by a forward that sampled gates; read by `alpha_grad_from_gates`.
        self.gates: torch.Tensor | None = None
        self.sampled: list[int] = []

    def probs(self) -> torch.Tensor:
        return torch.softmax(self.alpha, dim=0)

    def _path(self, i: int) -> nn.Module:
        return self.ops[self.choices[i]]

    def _sample(self, n: int) -> list[int]:
        p = self.probs().detach().cpu()
        return [int(i) for i in torch.multinomial(p, n, replacement=False, generator=self.generator)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.gates, self.sampled = None, []
        if self.mode == "fixed":
            return self._path(int(self.alpha.detach().argmax()))(x)
        if self.mode == "largest":
            return self.ops[self.largest](x)
        if self.mode == "all":
            p = self.probs()
            return sum(p[i] * self._path(i)(x) for i in range(len(self.choices)))  # type: ignore[return-value]
        if self.mode == "weights":
            (i,) = self._sample(1)
            self.sampled = [i]
            return self._path(i)(x)
        if self.mode == "full_v2":
            (i,) = self._sample(1)
            self.sampled = [i]
            gates = torch.zeros(len(self.choices), device=x.device, requires_grad=True)
            self.gates = gates
            paths = [self._path(j) for j in range(len(self.choices))]
            # Gates multiply the chosen output by 1 in value: their gradient is what the backward adds.
            y = _BinaryGatePath.apply(x, gates, paths[i], lambda t: [m(t) for m in paths], paths)
            return y
        if self.mode == "two":
            pair = self._sample(2)
            sub = torch.softmax(self.alpha.detach()[pair], dim=0).cpu()
            first = int(torch.multinomial(sub, 1, generator=self.generator))
            active, inactive = pair[first], pair[1 - first]
            self.sampled = [active, inactive]
            gates = torch.zeros(len(self.choices), device=x.device)
            gates[active] = 1.0
            gates.requires_grad_(True)
            self.gates = gates
            return gates[active] * self._path(active)(x) + gates[inactive] * self._path(inactive)(x)
        raise ValueError(f"unknown mixed-op mode {self.mode!r} (known: {', '.join(MODES)})")

    def alpha_grad_from_gates(self) -> None:
        """Add dL/dα from the gates' gradient of the last backward (full_v2 or two)."""
        if self.gates is None or self.gates.grad is None:
            return
        gg = self.gates.grad.detach().to(self.alpha.device)
        if self.mode == "two":
            idx = torch.tensor(sorted(self.sampled), device=self.alpha.device)
            p = torch.softmax(self.alpha.detach()[idx], dim=0)
            g = gg[idx]
            sub = p * (g - (g * p).sum())  # Σ_j g_j p_j (δ_ij − p_i)
            grad = torch.zeros_like(self.alpha).index_add_(0, idx, sub)
        else:
            p = self.probs().detach()
            grad = p * (gg - (gg * p).sum())
        self.alpha.grad = grad if self.alpha.grad is None else self.alpha.grad + grad

    def rescale_after_step(self, old_alpha: torch.Tensor) -> None:
        """'two' mode: shift the two updated logits so their summed probability mass stays as before
        the step (the public code's `rescale_updated_arch_param`); other blocks' paths keep theirs."""
        if self.mode != "two" or len(self.sampled) != 2:
            return
        idx = torch.tensor(sorted(self.sampled), device=self.alpha.device)
        with torch.no_grad():
            offset = torch.logsumexp(self.alpha[idx], 0) - torch.logsumexp(old_alpha[idx], 0)
            self.alpha[idx] -= offset

    def chosen(self) -> str:
        return self.choices[int(self.alpha.detach().argmax())]

    @torch.no_grad()
    def inherit_from_largest(self) -> None:
        """Start every other MBConv op from the largest op's weights: the centre of each kernel, the
        first output (and input) channels of each conv, the matching entries of each batch norm."""
        src = self.ops[self.largest]
        src_layout = conv_paths(self.slot.workload(self.largest))  # type: ignore[arg-type]
        for op in self.choices:
            w = self.slot.workload(op)
            if op == self.largest or w is None:
                continue
            dst = self.ops[op]
            layout = conv_paths(w)
            if len(layout) != len(src_layout):
                raise ValueError(f"{op} and {self.largest} differ in layout; cannot inherit")
            for (sc, sb), (dc, db) in zip(src_layout, layout, strict=True):
                _inherit_conv(src.get_submodule(sc), dst.get_submodule(dc))
                if sb is not None and db is not None:
                    _inherit_bn(src.get_submodule(sb), dst.get_submodule(db))


def _inherit_conv(src: nn.Module, dst: nn.Module) -> None:
    assert isinstance(src, nn.Conv2d) and isinstance(dst, nn.Conv2d)
    o, i, kh, kw = dst.weight.shape
    w = src.weight[:o, :i]
    top, left = (w.shape[2] - kh) // 2, (w.shape[3] - kw) // 2
    dst.weight.copy_(w[:, :, top: top + kh, left: left + kw])
    if dst.bias is not None and src.bias is not None:
        dst.bias.copy_(src.bias[:o])


def _inherit_bn(src: nn.Module, dst: nn.Module) -> None:
    assert isinstance(src, nn.BatchNorm2d) and isinstance(dst, nn.BatchNorm2d)
    n = dst.num_features
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[:n])


class Supernet(nn.Module):
    """The ProxylessNAS mobile supernet of one family geometry (resolution, width, channels, classes)."""

    def __init__(self, family: ProxylessMobile) -> None:
        super().__init__()
        self.family = family
        self.stem = build_module(family.first_conv)
        self.block0 = build_module(family.first_block)
        self.block_names = [f"block{slot.index + 1}" for slot in family.slots]
        for name, slot in zip(self.block_names, family.slots, strict=True):
            self.add_module(name, MixedOp(slot))
        self.head = build_module(family.last_conv)
        self.classifier = build_module(family.logits)
        self._mode = "weights"

    def mixed_ops(self) -> Iterator[tuple[str, MixedOp]]:
        for name in self.block_names:
            yield name, self.get_submodule(name)  # type: ignore[misc]

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown supernet mode {mode!r} (known: {', '.join(MODES)})")
        self._mode = mode
        for _, m in self.mixed_ops():
            m.mode = mode

    def set_generator(self, generator: torch.Generator) -> None:
        for _, m in self.mixed_ops():
            m.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block0(self.stem(x))
        for _, m in self.mixed_ops():
            x = m(x)
        return self.classifier(self.head(x))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [m.alpha for _, m in self.mixed_ops()]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.endswith(".alpha")]

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if not n.endswith(".alpha")]

    def probs(self) -> list[torch.Tensor]:
        """softmax(α) of every block, differentiable."""
        return [m.probs() for _, m in self.mixed_ops()]

    def alpha_grads_from_gates(self) -> None:
        for _, m in self.mixed_ops():
            m.alpha_grad_from_gates()

    def rescale_after_step(self, old: Sequence[torch.Tensor]) -> None:
        for (_, m), a in zip(self.mixed_ops(), old, strict=True):
            m.rescale_after_step(a)

    def inherit_from_largest(self) -> None:
        for _, m in self.mixed_ops():
            m.inherit_from_largest()

    def derive(self) -> tuple[str, ...]:
        """The architecture of the argmax op per block."""
        return tuple(m.chosen() for _, m in self.mixed_ops())

    def alpha_table(self) -> dict[str, dict[str, float]]:
        """{block: {op: probability}}, for logs."""
        return {name: {op: float(p) for op, p in zip(m.choices, m.probs().detach().cpu(), strict=True)}
                for name, m in self.mixed_ops()}
