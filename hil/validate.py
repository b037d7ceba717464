"""Predicted vs measured: how well a LUT predicts whole networks on the same target.

Networks are sampled from the space with a fixed seed, measured end to end with the same protocol
(each twice, in randomized order, so repeatability can be told apart from model error), and
compared with the LUT prediction. Metrics follow MEASUREMENT.md: MAPE, RMSPE, RMSE, ±5% / ±10%
accuracy (nn-Meter's), Kendall's tau.

Network measurements are stored like any other (key `network-...`), so an interrupted validation
resumes too.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hil.errors import HilError, StoreError
from hil.latency import CALIBRATION_MODEL, LatencyModel, NetworkCalibration
from hil.measure import Measurement, MeasureSettings
from hil.store import Store
from hil.target import Target, fingerprint_class
from hil.workload import Network

# Calibration networks come from a seed stream disjoint from any validation seed a user passes.
CALIBRATION_SEED_OFFSET = 1_000_003


@dataclass
class Metrics:
    n: int
    mape: float  # %
    rmspe: float  # %
    rmse_ms: float
    within_5pct: float  # share in [0, 1]
    within_10pct: float
    kendall_tau: float
    mean_bias: float  # mean (pred - meas) / meas, %: negative = LUT underestimates

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def metrics(pred: Sequence[float], meas: Sequence[float]) -> Metrics:
    if len(pred) != len(meas) or not pred:
        raise ValueError("metrics need equal, non-empty prediction and measurement lists")
    rel = [(p - m) / m for p, m in zip(pred, meas, strict=True)]
    n = len(rel)
    tau = _tau(pred, meas) if n > 1 else float("nan")
    return Metrics(
        n=n,
        mape=100 * sum(abs(r) for r in rel) / n,
        rmspe=100 * math.sqrt(sum(r * r for r in rel) / n),
        rmse_ms=math.sqrt(sum((p - m) ** 2 for p, m in zip(pred, meas, strict=True)) / n),
        within_5pct=sum(abs(r) <= 0.05 for r in rel) / n,
        within_10pct=sum(abs(r) <= 0.10 for r in rel) / n,
        kendall_tau=tau,
        mean_bias=100 * sum(rel) / n,
    )


@dataclass
class ValidationReport:
    device: str
    space: str
    options: dict[str, Any]
    fingerprint_class: str
    # the LUT model: block sum + network calibration, refitted on the calibration networks measured
    # in the same sessions (the build's calibration when those are unknown)
    calibrated: Metrics
    raw_sum: Metrics  # plain sum of isolated block medians
    repeatability: dict[str, float]  # the same network measured twice
    calibration: dict[str, Any]  # the build's, as optimizers use it
    points: list[dict[str, Any]] = field(default_factory=list)
    build_calibrated: Metrics | None = None  # the LUT model with the build's calibration
    session_calibration: list[dict[str, Any]] = field(default_factory=list)  # one per pass

    def to_json(self) -> dict[str, Any]:
        d = {"device": self.device, "space": self.space, "options": self.options,
             "fingerprint_class": self.fingerprint_class, **self.calibrated.to_json(),
             "raw_sum": self.raw_sum.to_json(), "repeatability": self.repeatability,
             "calibration": self.calibration,
             "build_calibrated": self.build_calibrated.to_json() if self.build_calibrated else None,
             "session_calibration": self.session_calibration, "points": self.points}
        return d


def measure_networks(
    store: Store,
    target: Target,
    nets: Sequence[Network],
    settings: MeasureSettings,
    passes: int,
    seed: int,
    progress: Callable[[Measurement], None] | None = None,
    tag: str = "validation",
) -> list[dict[str, float]]:
    """Measure the networks `passes` times; each pass is one request to the device (one interleaved
    session), its records tagged `{tag}_pass`. Returns each pass's latencies by network key.

    Passes already in the store are reused, so an interrupted validation resumes.
    """
    cls = fingerprint_class(target.describe(settings))
    rng = random.Random(seed)
    field_ = f"{tag}_pass"
    wanted = {n.key for n in nets}

    def have() -> list[dict[str, float]]:
        out: list[dict[str, float]] = [{} for _ in range(passes)]
        for m in store.attempts(cls):
            p = m.metrics.get(field_)
            if m.ok and m.key in wanted and isinstance(p, int) and 0 <= p < passes:
                out[p][m.key] = m.latency_ms
        return out

    for p in range(passes):
        todo = [n for n in nets if n.key not in have()[p]]
        if not todo:
            continue
        rng.shuffle(todo)
        for m in target.measure(todo, settings):
            m.attempt = store.attempt_count(cls, m.key) + 1
            m.metrics[field_] = p
            store.add(m)
            if not m.ok:
                raise HilError(f"device {target.name!r}: network {m.key} failed: {m.error_kind}: {m.error}")
            if progress:
                progress(m)
    return have()


def calibrate(
    store: Store,
    target: Target,
    space: Any,
    settings: MeasureSettings,
    count: int,
    seed: int = 0,
    progress: Callable[[Measurement], None] | None = None,
) -> NetworkCalibration:
    """Fit the per-network calibration on `count` networks and keep it with the LUT."""
    import time

    cls = fingerprint_class(target.describe(settings))
    model = LatencyModel.from_store(store, target.name, cls)
    nets = space.sample(count, seed + CALIBRATION_SEED_OFFSET)
    measured = measure_networks(store, target, nets, settings, 1, seed, progress, tag="calibration")[0]
    sums = [model.block_sum(n.layers) for n in nets]
    meas = [measured[n.key] for n in nets]
    cal = NetworkCalibration.fit(sums, meas)
    params = {**cal.to_json(), "networks": [n.key for n in nets], "seed": seed + CALIBRATION_SEED_OFFSET}
    store.save_model(cls, CALIBRATION_MODEL, params, time.time())
    return cal


def _tau(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def lut_class(store: Store, target: Target, settings: MeasureSettings) -> str:
    """The fingerprint class these settings measure in, which must already hold a LUT."""
    fp = target.describe(settings)
    cls = fingerprint_class(fp)
    known = [c for c in store.classes(target.name) if c.entries]
    if any(c.fp_class == cls for c in known):
        return cls
    if not known:
        raise StoreError(f"no LUT for device {target.name!r} in {store.path}: run `hil lut build` first")
    other = known[-1].fingerprint_class
    diff = sorted(k for k in set(other) | set(fp["class"]) if other.get(k) != fp["class"].get(k))
    raise StoreError(
        f"no LUT for device {target.name!r} measured under these conditions (fingerprint class {cls}); "
        f"the store's LUTs differ in: {', '.join(diff)} — pass the same --batch and protocol options as the build"
    )


def _calibration_nets(space: Any, params: dict[str, Any]) -> list[Network]:
    """The held-out calibration networks the stored calibration was fitted on (none if unknown)."""
    keys = params.get("networks") or []
    seed = params.get("seed")
    if not keys or not isinstance(seed, int) or not hasattr(space, "sample"):
        return []
    nets = space.sample(len(keys), seed)
    return nets if [n.key for n in nets] == list(keys) else []


def validate(
    store: Store,
    target: Target,
    space: Any,
    settings: MeasureSettings,
    samples: int,
    seed: int = 0,
    progress: Callable[[Measurement], None] | None = None,
) -> ValidationReport:
    """Predicted vs measured on `samples` networks that the calibration never saw.

    Each pass measures them in one request together with the calibration networks, and the
    calibration is refitted on that pass's calibration networks: the model is judged at the host
    speed of the session that measured it (a shared VM's speed drifts between sessions by more than
    the model's error). The build's own calibration is scored too (`build_calibrated`).
    """
    cls = lut_class(store, target, settings)
    model = LatencyModel.from_store(store, target.name, cls)
    cal_params = store.load_model(cls, CALIBRATION_MODEL) or {}
    held_out = set(cal_params.get("networks", []))
    nets = [n for n in space.sample(samples + len(held_out), seed) if n.key not in held_out][:samples]
    # A simulation is deterministic: measuring twice would only show that it is, and it has no
    # session drift to calibrate away.
    simulated = getattr(target, "provenance", "measured") == "simulated"
    passes = 1 if simulated else 2
    cal_nets = [] if simulated else _calibration_nets(space, cal_params)
    measured = measure_networks(store, target, [*nets, *cal_nets], settings, passes, seed, progress)
    session_cals = []
    if len(cal_nets) >= 2:
        sums = [model.block_sum(n.layers) for n in cal_nets]
        session_cals = [NetworkCalibration.fit(sums, [measured[p][n.key] for n in cal_nets]) for p in range(passes)]
    pred_raw, pred_build, pred_session, meas, rep = [], [], [], [], []
    points = []
    for n in nets:
        xs = [measured[p][n.key] for p in range(passes)]
        m = _median(xs)
        s = model.block_sum(n.layers)
        pred_raw.append(s)
        pred_build.append(model.network(n.layers))
        pred_session.append(sum(c.apply(s) for c in session_cals) / len(session_cals) if session_cals
                            else pred_build[-1])
        meas.append(m)
        if len(xs) >= 2:
            rep.append(abs(xs[0] - xs[1]) / m)
        points.append({"network": n.key, "measured_ms": m, "predicted_ms": pred_session[-1],
                       "build_predicted_ms": pred_build[-1], "block_sum_ms": s, "attempts_ms": xs})
    repeat = {
        "n": len(rep),
        "mape": 100 * sum(rep) / len(rep) if rep else float("nan"),
        "within_5pct": sum(r <= 0.05 for r in rep) / len(rep) if rep else float("nan"),
        "within_10pct": sum(r <= 0.10 for r in rep) / len(rep) if rep else float("nan"),
        # the ranking of the first pass against the second: the ceiling of any predictor's tau here
        "kendall_tau": _tau([p["attempts_ms"][0] for p in points], [p["attempts_ms"][1] for p in points])
        if passes >= 2 and len(points) > 1 else float("nan"),
    }
    return ValidationReport(
        device=target.name, space=space.name, options=space.options(), fingerprint_class=cls,
        calibrated=metrics(pred_session, meas), raw_sum=metrics(pred_raw, meas), repeatability=repeat,
        calibration=model.calibration.to_json(), points=points,
        build_calibrated=metrics(pred_build, meas),
        session_calibration=[c.to_json() for c in session_cals],
    )


def plot(report: ValidationReport, path: str) -> None:
    """Scatter of predicted vs measured with y = x and the ±10% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meas = [p["measured_ms"] for p in report.points]
    pred = [p["predicted_ms"] for p in report.points]
    raw = [p["block_sum_ms"] for p in report.points]
    lo = min(meas + pred + raw) * 0.9
    hi = max(meas + pred + raw) * 1.1
    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=120)
    xs = [lo, hi]
    ax.fill_between(xs, [x * 0.9 for x in xs], [x * 1.1 for x in xs], color="tab:green", alpha=0.15, label="±10%")
    ax.plot(xs, xs, "k--", lw=1, label="y = x")
    ax.scatter(meas, raw, s=14, marker="x", color="tab:gray", label="plain block sum")
    ax.scatter(meas, pred, s=16, color="tab:blue", label="LUT model")
    c = report.calibrated
    ax.set_title(f"{report.device} · {report.space} {report.options.get('resolution', '')}\n"
                 f"±10%: {100 * c.within_10pct:.0f}%  τ = {c.kendall_tau:.2f}  MAPE {c.mape:.1f}%  (n = {c.n})",
                 fontsize=9)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
