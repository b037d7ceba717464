"""Workloads: immutable, hashable descriptions of one unit of work to time.

Every workload has one canonical string key and a JSON form (`to_json` / `workload_from_json`).
MBConv blocks and the fixed layers of the ProxylessNAS space use ProxylessNAS's own key format
(`expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:5-stride:2-idskip:0`), so LUTs we
export can be read by its `LatencyEstimator`.

Shapes are per sample, channels last, like the keys. Batch size is not part of a workload: it is a
measurement setting, recorded in the device fingerprint, because a LUT is built for one batch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from hil.errors import ConfigError

Shape = tuple[int, ...]


def _shape(s: Shape) -> str:
    return "x".join(str(int(d)) for d in s)


_REGISTRY: dict[str, type[Workload]] = {}


@dataclass(frozen=True)
class Workload:
    """Base class. Subclasses set `kind` and implement `key`."""

    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            _REGISTRY[cls.kind] = cls

    @property
    def key(self) -> str:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind
        return d

    def __str__(self) -> str:
        return self.key


def _tuplify(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    if isinstance(v, dict) and "kind" in v:
        return workload_from_json(v)
    return v


def workload_from_json(d: dict[str, Any] | str) -> Workload:
    """Inverse of `Workload.to_json` (also accepts the JSON text)."""
    if isinstance(d, str):
        d = json.loads(d)
    d = dict(d)
    kind = d.pop("kind", None)
    cls = _REGISTRY.get(str(kind))
    if cls is None:
        raise ConfigError(f"unknown workload kind {kind!r} (known: {', '.join(sorted(_REGISTRY))})")
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"workload of kind {kind!r} has unknown field(s): {', '.join(sorted(unknown))}")
    try:
        return cls(**{k: _tuplify(v) for k, v in d.items()})
    except TypeError as e:
        raise ConfigError(f"workload of kind {kind!r}: {e}") from None


@dataclass(frozen=True)
class ConvLayer(Workload):
    """Conv + BN + activation. `name` 'Conv' and 'Conv_1' are ProxylessNAS's fixed layers."""

    kind: ClassVar[str] = "conv"
    name: str
    input: Shape  # H, W, C
    output: Shape  # H, W, C
    kernel: int = 3
    stride: int = 1
    groups: int = 1
    act: str = "relu6"

    @property
    def key(self) -> str:
        base = f"{self.name}-input:{_shape(self.input)}-output:{_shape(self.output)}"
        if self.name in ("Conv", "Conv_1"):
            return base
        return f"{base}-kernel:{self.kernel}-stride:{self.stride}-groups:{self.groups}-act:{self.act}"


@dataclass(frozen=True)
class MBConv(Workload):
    """MobileNetV2 inverted residual: 1x1 expand, kxk depthwise, 1x1 project, optional identity."""

    kind: ClassVar[str] = "mbconv"
    input: Shape
    output: Shape
    expand: int
    kernel: int
    stride: int
    idskip: int  # 1 when the identity shortcut is added
    # The middle (expanded) width when it is not input channels x expand: a channel-pruned block
    # (AMC). None otherwise, and normalized to None when equal, so an unpruned block has exactly
    # ProxylessNAS's key and JSON and compares equal to one built without it.
    mid: int | None = None

    def __post_init__(self) -> None:
        if self.mid is None:
            return
        if isinstance(self.mid, bool) or not isinstance(self.mid, int) or self.mid < 1:
            raise ConfigError(f"MBConv middle width must be a positive integer, got {self.mid!r}")
        if self.mid == self.input[2] * self.expand:
            object.__setattr__(self, "mid", None)
        elif self.expand == 1:
            raise ConfigError(f"an MBConv with expand 1 has no expansion conv: its middle width is its "
                              f"{self.input[2]} input channels, not {self.mid}")

    @property
    def width(self) -> int:
        """Channels of the expansion and depthwise convs."""
        return self.input[2] * self.expand if self.mid is None else self.mid

    @property
    def key(self) -> str:
        base = (
            f"expanded_conv-input:{_shape(self.input)}-output:{_shape(self.output)}"
            f"-expand:{self.expand}-kernel:{self.kernel}-stride:{self.stride}-idskip:{self.idskip}"
        )
        return base if self.mid is None else f"{base}-mid:{self.mid}"

    def to_json(self) -> dict[str, Any]:
        d = super().to_json()
        if self.mid is None:
            del d["mid"]  # the JSON of an unpruned block stays what it was (TFLite cache keys hash it)
        return d


@dataclass(frozen=True)
class Logits(Workload):
    """Global average pool + fully connected classifier (ProxylessNAS 'Logits')."""

    kind: ClassVar[str] = "logits"
    input: Shape  # H, W, C
    classes: int

    @property
    def key(self) -> str:
        return f"Logits-input:{_shape(self.input)}-output:{self.classes}"


@dataclass(frozen=True)
class Linear(Workload):
    kind: ClassVar[str] = "linear"
    in_features: int
    out_features: int

    @property
    def key(self) -> str:
        return f"fc-input:{self.in_features}-output:{self.out_features}"


@dataclass(frozen=True)
class QuantLayer(Workload):
    """A conv (groups=1), depthwise conv (groups=C_in) or FC (1x1 input, kernel 1) at given bitwidths.

    What the bit-flexible accelerators (and HAQ) time: one layer, weights at `wbits`, activations at
    `abits`, signed or not.
    """

    kind: ClassVar[str] = "qlayer"
    name: str
    input: Shape  # H, W, C
    output: Shape  # H, W, C
    kernel: int
    stride: int
    groups: int
    wbits: int
    abits: int
    wsigned: bool = True
    asigned: bool = False

    @property
    def key(self) -> str:
        return (
            f"{self.name}-input:{_shape(self.input)}-output:{_shape(self.output)}-kernel:{self.kernel}"
            f"-stride:{self.stride}-groups:{self.groups}-w:{self.wbits}{'s' if self.wsigned else 'u'}"
            f"-a:{self.abits}{'s' if self.asigned else 'u'}"
        )


@dataclass(frozen=True)
class Gemm(Workload):
    """M x K weights times K x N activations, at given bitwidths (ACCELERATORS.md conventions)."""

    kind: ClassVar[str] = "gemm"
    m: int
    k: int
    n: int
    wbits: int
    abits: int
    wsigned: bool = True
    asigned: bool = False

    @property
    def key(self) -> str:
        return (
            f"gemm-M:{self.m}-K:{self.k}-N:{self.n}-w:{self.wbits}{'s' if self.wsigned else 'u'}"
            f"-a:{self.abits}{'s' if self.asigned else 'u'}"
        )


@dataclass(frozen=True)
class Network(Workload):
    """A whole network: its layers in order. Timed end to end to validate LUT predictions."""

    kind: ClassVar[str] = "network"
    layers: tuple[Workload, ...] = field(default_factory=tuple)
    name: str = ""

    @property
    def key(self) -> str:
        digest = hashlib.sha256("|".join(w.key for w in self.layers).encode()).hexdigest()[:16]
        return f"network-{self.name + '-' if self.name else ''}{digest}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "layers": [w.to_json() for w in self.layers]}


def canonical_json(obj: Any) -> str:
    """The one serialization used for hashing: sorted keys, no spaces."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
