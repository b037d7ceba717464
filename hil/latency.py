"""LatencyModel: latency of a workload, an architecture, or the expectation over architecture choices.

A LUT maps workload keys to the accepted median latency (ms) of one fingerprint class. A missing key
is an error naming the key, never a silent default (ProxylessNAS's public code returned 200 ms).
A build that leveled its slices (MeasureSettings.level_keys) is read at its typical host speed:
`lut_latencies`.

Summing isolated block latencies misses what a whole network adds: per-network framework overhead
and the colder caches a block meets when its neighbours ran before it. `NetworkCalibration` models
that as `measured ≈ scale · Σ blocks + β · Σ weight bytes + offset`, fitted on whole networks
measured on the same target (see hil/validate.py and docs/LATENCY_MODEL.md) and stored with the
LUT; it is identity until fitted.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from hil.errors import MissingEntryError, StoreError
from hil.measure import Measurement
from hil.store import LutClass, Store
from hil.workload import Workload

CALIBRATION_MODEL = "network-calibration"
# Records of a class that are not LUT entries: drift references and whole networks.
NOT_LUT_PREFIXES = ("drift:", "network-")


@dataclass(frozen=True)
class NetworkCalibration:
    """`measured ≈ scale · Σ blocks + per_weight_byte_ms · Σ weight bytes + offset_ms`.

    The weight term is what a block's weights cost inside a network beyond what they cost timed alone:
    after scale and offset, a network's error grows with its weight bytes (the mechanism, presumably
    where in the cache hierarchy the weights are found, is not measured). On the 128 space it took the
    held-out networks' error from 1.0–1.45% to 0.8–1.0% (sd) with four builds' own calibrations
    (docs/LATENCY_MODEL.md). It is fitted only where the backend records each block's weight bytes
    (`metrics.weight_bytes`), else 0.
    """

    scale: float = 1.0
    offset_ms: float = 0.0
    fitted_on: int = 0  # networks the fit used (0: identity, not fitted)
    per_weight_byte_ms: float = 0.0

    def apply(self, block_sum_ms: Any, weight_bytes: Any = 0.0) -> Any:
        return self.scale * block_sum_ms + self.per_weight_byte_ms * weight_bytes + self.offset_ms

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> NetworkCalibration:
        return cls(float(d["scale"]), float(d["offset_ms"]), int(d["fitted_on"]),
                   float(d.get("per_weight_byte_ms", 0.0)))  # versions stored before the weight term: 0

    @classmethod
    def fit(cls, sums_ms: Sequence[float], measured_ms: Sequence[float],
            weight_bytes: Sequence[float] | None = None) -> NetworkCalibration:
        """Least squares on relative error: minimizes Σ ((scale·s + β·w + offset − m) / m)². The weight
        term needs every network's weight bytes and at least MIN_NETS_WEIGHT_TERM networks, and is
        kept only when β comes out positive (a weight never makes a network faster)."""
        import numpy as np

        s = np.asarray(sums_ms, dtype=float)
        m = np.asarray(measured_ms, dtype=float)
        if len(s) < 2:
            raise ValueError("need at least two networks to fit a calibration")
        if weight_bytes is not None and len(s) >= MIN_NETS_WEIGHT_TERM and all(w > 0 for w in weight_bytes):
            w = np.asarray(weight_bytes, dtype=float)
            a = np.stack([s / m, w / m, 1.0 / m], axis=1)
            (scale, beta, offset), *_ = np.linalg.lstsq(a, np.ones_like(m), rcond=None)
            if beta > 0:
                return cls(float(scale), float(offset), len(s), float(beta))
        a = np.stack([s / m, 1.0 / m], axis=1)
        (scale, offset), *_ = np.linalg.lstsq(a, np.ones_like(m), rcond=None)
        return cls(float(scale), float(offset), len(s))


# Three parameters on fewer networks than this would follow their noise.
MIN_NETS_WEIGHT_TERM = 6


@dataclass
class SliceFit:
    """log latency = workload + slice, fitted over a class's leveled attempts (`fit_slices`)."""

    workload_log: dict[str, float]  # per workload key (level workloads as `level:<key>`)
    slice_log: dict[str, float]  # per slice id, 0 at the median slice of its build
    residual_sd: float  # what is left per observation


def fit_slices(records: Iterable[Measurement]) -> SliceFit:
    """Least squares over every attempt timed in a leveled slice (`metrics.slice`) and every slice's
    level-workload medians. The level workloads, timed in every slice of a build, tie its slices
    together; a workload timed in several slices (a noisy key's attempts) sharpens the estimate.
    Slices that share no workload (two builds levelled by different workloads: another space in the
    class, AMC's entries measured as it goes) are fitted apart, each group centred on its own median
    slice, so one build never shifts another's entries."""
    obs: list[tuple[str, str, float]] = []  # (workload, slice, log ms)
    seen: set[str] = set()
    for m in records:
        s = m.metrics.get("slice") if m.ok else None
        if not (isinstance(s, dict) and s.get("level_ms")) or m.latency_ms <= 0:
            continue
        sid = str(s["id"])
        obs.append((m.key, sid, math.log(m.latency_ms)))
        if sid not in seen:
            seen.add(sid)
            obs += [(f"level:{k}", sid, math.log(v)) for k, v in s["level_ms"].items() if v and v > 0]
    return fit_levels(obs)


def fit_levels(obs: Sequence[tuple[str, str, float]]) -> SliceFit:
    """log value = workload + slice by least squares over (workload, slice, log value) observations:
    each slice's level of the host's speed, fitted from every workload it timed. Slices joined by no
    shared workload are fitted apart, each group centred on its own median slice. Used for a build's
    slices (`fit_slices`) and a validation's sessions (hil.validate)."""
    import numpy as np

    # slices joined by a shared workload form one group (union-find over slice ids)
    parent = {sid: sid for _, sid, _ in obs}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[str, str] = {}
    for k, sid, _ in obs:
        parent[root(sid)] = root(first.setdefault(k, sid))
    fit = SliceFit({}, {}, 0.0)
    residuals: list[float] = []
    for group in {root(sid) for sid in parent}:
        rows = [o for o in obs if root(o[1]) == group]
        keys = sorted({k for k, _, _ in rows})
        sids = sorted({sid for _, sid, _ in rows})
        col = {k: i for i, k in enumerate(keys)} | {sid: len(keys) + j for j, sid in enumerate(sids)}
        a = np.zeros((len(rows), len(col)))
        for i, (k, sid, _) in enumerate(rows):
            a[i, col[k]] = a[i, col[sid]] = 1.0
        y = np.array([v for _, _, v in rows])
        # the design fixes workload + slice, not each alone: any solution, then centred on the median slice
        x, *_ = np.linalg.lstsq(a, y, rcond=None)
        centre = float(np.median(x[len(keys):]))
        fit.workload_log.update({k: float(x[i]) + centre for i, k in enumerate(keys)})
        fit.slice_log.update({sid: float(x[len(keys) + j]) - centre for j, sid in enumerate(sids)})
        residuals += list(y - a @ x)
    fit.residual_sd = float(np.std(residuals)) if residuals else 0.0
    return fit


def slice_levels(records: Iterable[Measurement]) -> dict[str, float]:
    """Each leveled slice's host slowness relative to its build's typical one (`fit_slices`). Two
    builds at 128 agreed entry by entry to 2.4–3.8% (sd) read this way, against 3.3–4.9% with the
    level workloads' ratio alone and 5.0–5.1% unleveled (docs/MEASUREMENT.md)."""
    return {sid: math.exp(e) for sid, e in fit_slices(records).slice_log.items()}


def lut_latencies(store: Store, fp_class: str, lut: Mapping[str, Measurement] | None = None) -> dict[str, float]:
    """Latency (ms) per key of a class's LUT: what every consumer of the table reads.

    A key whose every successful attempt was timed in a leveled slice (`metrics.slice`, see
    MeasureSettings.level_keys) is the geometric mean of its attempts, each divided by its slice's
    level (`slice_levels`): the host's speed moves between the ~10 s slices of a build more than a
    median of 100 runs does, and the slices' levels take that out. Any other key (built before
    leveling, on a sequential target, or simulated) is its accepted attempt's median, as stored.
    """
    lut = store.lut(fp_class) if lut is None else lut
    out = {k: m.latency_ms for k, m in lut.items()}
    if not any(isinstance(m.metrics.get("slice"), dict) for m in lut.values()):
        return out
    records = [m for m in store.attempts(fp_class) if m.ok]
    level = slice_levels(records)
    by_key: dict[str, list[Measurement]] = {}
    for m in records:
        by_key.setdefault(m.key, []).append(m)
    for k in out:
        sids = [(m.metrics.get("slice") or {}).get("id") for m in by_key.get(k, [])]
        if sids and all(s in level for s in sids):
            out[k] = math.exp(statistics.fmean(math.log(m.latency_ms / level[s])
                                               for m, s in zip(by_key[k], sids, strict=True)))
    return out


def select_class(store: Store, device: str, keys: Iterable[str] | None = None, batch: int | None = None) -> LutClass:
    """The fingerprint class of `device` (at `batch`, when given) whose LUT covers the most of `keys`
    (latest on a tie)."""
    classes = [c for c in store.classes(device) if not _is_drift_only(store, c)]
    if not classes:
        raise StoreError(f"no LUT for device {device!r} in {store.path}: run `hil lut build --device {device}` first")
    if batch is not None:
        batches = sorted({c.fingerprint_class.get("batch") for c in classes}, key=str)
        classes = [c for c in classes if c.fingerprint_class.get("batch") == batch]
        if not classes:
            raise StoreError(f"no LUT for device {device!r} at batch {batch} in {store.path} (it has batch "
                             f"{', '.join(map(str, batches))}): run `hil lut build --device {device} --batch {batch}`")
    if keys is None:
        return classes[-1]
    wanted = set(keys)
    best = max(enumerate(classes), key=lambda ic: (len(wanted & set(store.lut(ic[1].fp_class))), ic[0]))
    return best[1]


def _is_drift_only(store: Store, c: LutClass) -> bool:
    return all(k.startswith("drift:") for k in store.lut(c.fp_class)) if c.entries else True


class LatencyModel:
    """Latency predictions from one LUT (one device, one fingerprint class)."""

    def __init__(
        self,
        table: Mapping[str, float],
        device: str = "",
        fp_class: str = "",
        calibration: NetworkCalibration | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self.table = dict(table)
        self.device = device
        self.fp_class = fp_class
        self.calibration = calibration or NetworkCalibration()
        self.weights: dict[str, float] = dict(weights or {})  # weight bytes per key, where recorded

    @classmethod
    def from_store(cls, store: Store, device: str, fp_class: str | None = None,
                   keys: Iterable[str] | None = None) -> LatencyModel:
        if fp_class is None:
            fp_class = select_class(store, device, keys).fp_class
        # Whole networks measured for calibration, validation or speedups share the class but are
        # not LUT entries: a prediction must never be a network's own measurement.
        lut = store.lut(fp_class)
        table = {k: v for k, v in lut_latencies(store, fp_class, lut).items() if not k.startswith(NOT_LUT_PREFIXES)}
        weights = {k: float(lut[k].metrics["weight_bytes"]) for k in table
                   if isinstance(lut[k].metrics.get("weight_bytes"), (int, float))}
        params = store.load_model(fp_class, CALIBRATION_MODEL)
        cal = NetworkCalibration.from_json(params) if params else None
        return cls(table, device, fp_class, cal, weights)

    def latency(self, w: Workload | str) -> float:
        """Latency of one workload (ms). Raises MissingEntryError naming the key."""
        key = w if isinstance(w, str) else w.key
        try:
            return self.table[key]
        except KeyError:
            raise MissingEntryError(key, self.device, "build the LUT for this space and options") from None

    def block_sum(self, layers: Iterable[Workload | str]) -> float:
        return sum(self.latency(w) for w in layers)

    def weight_sum(self, layers: Iterable[Workload | str]) -> float | None:
        """The layers' weight bytes, or None when a layer's were not recorded."""
        keys = [w if isinstance(w, str) else w.key for w in layers]
        return sum(self.weights[k] for k in keys) if all(k in self.weights for k in keys) else None

    def cost(self, w: Workload | str) -> float:
        """One block's calibrated share of a network's latency (ms): everything but the offset."""
        key = w if isinstance(w, str) else w.key
        c = self.calibration
        return c.scale * self.latency(key) + c.per_weight_byte_ms * self.weights.get(key, 0.0)

    def network(self, layers: Iterable[Workload | str]) -> float:
        """Predicted end-to-end latency of a network given its layers (ms), calibrated."""
        return float(sum(self.cost(w) for w in layers) + self.calibration.offset_ms)

    def expected(
        self,
        fixed: Iterable[Workload],
        candidates: Sequence[Sequence[Workload | None]],
        probs: Sequence[Any],
    ) -> Any:
        """E[latency] = fixed + Σ_blocks Σ_ops p_op · cost(op) + offset (ProxylessNAS, calibrated).

        `candidates[b][i]` is op i of block b (None for the zero op, latency 0); `probs[b]` its
        probabilities: floats or a torch tensor (the result is then differentiable in them).
        """
        total: Any = sum(self.cost(w) for w in fixed)
        for ops, p in zip(candidates, probs, strict=True):
            lat = [0.0 if op is None else self.cost(op) for op in ops]
            if hasattr(p, "new_tensor"):  # torch: keep the graph
                total = total + (p * p.new_tensor(lat)).sum()
            else:
                total = total + sum(pi * li for pi, li in zip(p, lat, strict=True))
        return total + self.calibration.offset_ms
