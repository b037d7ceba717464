"""Predicted vs measured: how well the stored latency model predicts whole networks on its target.

The prediction scored is exactly the one an optimizer receives: `LatencyModel.from_store(...)`,
the LUT with the newest stored calibration version. Nothing measured during validation changes it.

Networks are sampled from the space with a fixed seed (never the calibration's networks), measured
end to end with the same protocol in three passes (`DEFAULT_PASSES`), so repeatability can be told
apart from model error. A pass is cut into sessions of about `--slice-time` seconds (docs/MEASUREMENT.md), so a kill
loses at most one of them. Each session also times:
- the space's reference network, for speedups: a ratio of two networks timed in one session
  cancels the host's drift, which is what a search relies on;
- the drift-reference workload, to compare this session's host speed with the calibration's.
The pass's first session also times the stored calibration's held-out networks, whose refit shows
the model "re-anchored in this session" (a secondary figure: no optimizer has it).

Metrics follow MEASUREMENT.md: MAPE, RMSPE, RMSE, ±5% / ±10% accuracy (nn-Meter's), Kendall's tau.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hil.calibration import (
    DRIFT_PREFIX,
    SampledSpace,
    Session,
    calibration_networks,
    drift_reference,
    fit_session,
    measure_session,
    reference_network,
)
from hil.errors import ConfigError, StoreError
from hil.latency import CALIBRATION_MODEL, LatencyModel, NetworkCalibration, fit_levels
from hil.measure import MIN_SLICE, Measurement, MeasureSettings, expected_timing_s
from hil.store import Store
from hil.target import Target, fingerprint_class
from hil.workload import Network


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
class SpeedupMetrics:
    """Predicted vs measured speedup over one reference network, both measured in one session."""

    n: int
    median_abs_err: float  # %, of |predicted / measured speedup - 1|
    p90_abs_err: float  # %
    within_5pct: float  # share in [0, 1]
    within_10pct: float
    kendall_tau: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def speedup_metrics(pred: Sequence[float], meas: Sequence[float]) -> SpeedupMetrics:
    import numpy as np

    err = [abs(p / m - 1) for p, m in zip(pred, meas, strict=True)]
    n = len(err)
    return SpeedupMetrics(
        n=n, median_abs_err=100 * float(np.percentile(err, 50)), p90_abs_err=100 * float(np.percentile(err, 90)),
        within_5pct=sum(e <= 0.05 for e in err) / n, within_10pct=sum(e <= 0.10 for e in err) / n,
        kendall_tau=_tau(pred, meas) if n > 1 else float("nan"),
    )


@dataclass
class ValidationReport:
    device: str
    space: str
    options: dict[str, Any]
    fingerprint_class: str
    stored: Metrics  # the headline: LatencyModel.from_store's predictions, as an optimizer gets them
    raw_sum: Metrics  # plain sum of isolated block medians
    unleveled: Metrics | None  # the stored model against the measurements as timed, each session's speed
    repeatability: dict[str, float]  # the same networks' passes against each other, pairwise
    calibration: dict[str, Any]  # the stored calibration version that `stored` used
    speedup: dict[str, Any] = field(default_factory=dict)  # over the reference network, per session
    drift_reference: dict[str, Any] = field(default_factory=dict)  # the host's speed: stored vs now
    points: list[dict[str, Any]] = field(default_factory=list)
    reanchored: Metrics | None = None  # calibration refitted in each validation session (secondary)
    session_calibration: list[dict[str, Any]] = field(default_factory=list)  # one per pass
    sessions: list[str] = field(default_factory=list)
    leveling: dict[str, Any] = field(default_factory=dict)  # the sessions' fitted levels

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "space": self.space, "options": self.options,
                "fingerprint_class": self.fingerprint_class, "model": "stored", **self.stored.to_json(),
                "raw_sum": self.raw_sum.to_json(),
                "unleveled": self.unleveled.to_json() if self.unleveled else None,
                "reanchored_in_session": self.reanchored.to_json() if self.reanchored else None,
                "speedup": self.speedup, "repeatability": self.repeatability, "calibration": self.calibration,
                "drift_reference": self.drift_reference, "session_calibration": self.session_calibration,
                "sessions": self.sessions, "leveling": self.leveling, "points": self.points}


def _tau(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def _pairwise_tau(points: Sequence[dict[str, Any]], field_: str, passes: int) -> float:
    if passes < 2 or len(points) < 2:
        return float("nan")
    return statistics.fmean(_tau([p[field_][i] for p in points], [p[field_][j] for p in points])
                            for i, j in itertools.combinations(range(passes), 2))


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


# Passes a measured device's networks are timed in. Three, so that a network's median is robust to a
# transient that slowed it in one pass alone: at 224 one network read 17.2 ms in one pass and 15.9 ms
# in the other, the reference network steady beside it (2026-12-04, docs/BENCHMARKS.md).
DEFAULT_PASSES = 3


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


def _calibration_info(store: Store, cls: str) -> dict[str, Any]:
    versions = store.model_versions(cls, CALIBRATION_MODEL)
    if not versions:
        return {"version": 0, "kind": "none", "scale": 1.0, "offset_ms": 0.0, "fitted_on": 0}
    v = versions[-1]
    return {"version": v.version, "versions": len(versions), "created_at": v.created_at,
            "kind": v.params.get("kind", "build"), "scale": v.params["scale"], "offset_ms": v.params["offset_ms"],
            "per_weight_byte_ms": v.params.get("per_weight_byte_ms", 0.0), "fitted_on": v.params["fitted_on"],
            "drift_reference": v.params.get("drift_reference"),
            "build_drift_reference": next((x.params.get("drift_reference") for x in versions
                                           if x.params.get("kind", "build") == "build"), None)}


def validation_parts(
    nets: Sequence[Network],
    cal_nets: Sequence[Network],
    ref: Network,
    model: LatencyModel,
    settings: MeasureSettings,
    with_drift: bool = True,
    order_seed: int | None = None,
) -> list[list[Network]]:
    """A validation pass cut into sessions (parts) the way a request is cut into slices: about
    `settings.slice_s` seconds of expected timing each (the stored model's prediction under the
    protocol) and at least MIN_SLICE workloads, counting the reference network and the drift
    reference that every part also times. The calibration's networks open part 0, together, so an
    in-session refit sees one host state. `slice_s` None: the whole pass is one part.

    With `order_seed`, the scored networks are shuffled by it first: each pass cuts its parts from
    another order, so every session shares networks with sessions of the other pass and the sessions'
    levels are fitted from all of them (`hil.latency.fit_levels`), not from the reference alone.

    Depends only on the networks, the stored model, the settings and `order_seed`, so a rerun cuts
    the same parts and reuses those that were stored whole.
    """
    extra = 1 + int(with_drift)  # the reference network and the drift reference
    ref_s = expected_timing_s(model.network(ref.layers) / 1e3, settings)
    scored = list(nets)
    if order_seed is not None:
        random.Random(order_seed).shuffle(scored)
    queue = [*cal_nets, *scored]
    parts: list[list[Network]] = []
    part: list[Network] = []
    spent = ref_s
    for i, n in enumerate(queue):
        part.append(n)
        spent += expected_timing_s(model.network(n.layers) / 1e3, settings)
        left = len(queue) - i - 1
        full = (settings.slice_s is not None and spent >= settings.slice_s and i + 1 >= len(cal_nets)
                and len(part) + extra >= MIN_SLICE and left + extra >= MIN_SLICE)
        if left == 0 or full:
            parts.append(part)
            part, spent = [], ref_s
    return parts


def validate(
    store: Store,
    target: Target,
    space: SampledSpace,
    settings: MeasureSettings,
    samples: int,
    seed: int = 0,
    progress: Callable[[Measurement], None] | None = None,
    passes: int = DEFAULT_PASSES,
) -> ValidationReport:
    """Predicted (the stored model) vs measured on `samples` networks the calibration never saw.

    Each pass is cut into sessions of about `settings.slice_s` seconds (validation_parts), each
    timing its share of the scored networks (the calibration's held-out networks in the first),
    the reference network and the drift reference. A rerun reuses a part's session only whole and
    only if it ended after the newest calibration version was stored.
    """
    if not isinstance(space, SampledSpace):
        raise ConfigError(f"search space {getattr(space, 'name', space)!r} cannot sample networks to validate")
    cls = lut_class(store, target, settings)
    # What an optimizer receives; fixed before anything is measured.
    model = LatencyModel.from_store(store, target.name, cls)
    cal_info = _calibration_info(store, cls)
    cal_params = store.load_model(cls, CALIBRATION_MODEL) or {}
    held_out = set(cal_params.get("networks", []))
    ref, ref_how = reference_network(space)
    nets = [n for n in space.sample(samples + len(held_out) + 1, seed)
            if n.key not in held_out and n.key != ref.key][:samples]
    # A simulation is deterministic: measuring twice would only show that it is, and it has no
    # session drift to calibrate away.
    simulated = target.provenance == "simulated"
    if not simulated and passes < 2:
        raise ConfigError(f"validation needs at least 2 passes on a measured device (got {passes}): "
                          "repeatability is two passes against each other")
    passes = 1 if simulated else passes
    cal_nets = [] if simulated else calibration_networks(space, cal_params)
    drift = None if simulated else drift_reference(space)
    reuse_after = float(cal_info.get("created_at", 0.0))
    # pass 0 in the sampled order, every later pass in its own: sessions that overlap across passes
    parts = [validation_parts(nets, cal_nets, ref, model, settings, with_drift=drift is not None,
                              order_seed=None if p == 0 else seed + p)
             for p in range(passes)]
    part_of = [{n.key: k for k, part in enumerate(pp) for n in part} for pp in parts]
    # sessions[p][k]: pass p, part k. A kill loses at most the part being timed; a rerun reuses
    # every part that was stored whole.
    sessions: list[list[Session]] = [
        [measure_session(store, target, [*part, ref], settings, "validation", p, drift, seed + p + 1000 * k,
                         reuse_after=reuse_after, progress=progress)
         for k, part in enumerate(parts[p])]
        for p in range(passes)
    ]
    session_cals: list[NetworkCalibration] = []
    if len(cal_nets) >= 2:
        # the calibration networks are all in part 0 (validation_parts), so each refit has one host state
        session_cals = [fit_session(model, cal_nets, pass_[0]) for pass_ in sessions]
    pred_raw, pred_stored, pred_session, meas, meas_unleveled, rep = [], [], [], [], [], []
    sp_pred, sp_meas, sp_raw = [], [], []
    points = []
    ref_pred = model.network(ref.layers)
    ref_sum = model.block_sum(ref.layers)
    every = [sess for pass_ in sessions for sess in pass_]
    # Leveling: the host's speed moves between the ~10 s sessions of a validation as it does between
    # a build's slices (docs/MEASUREMENT.md), so each session's level is fitted from every network it
    # timed (log time = network + session, `fit_levels`: the reference network is in every session,
    # and the passes' different cuts put each network beside other networks in each pass), and each
    # network is carried to the validation's typical speed (the median session). The raw times stay
    # in `attempts_ms` and are scored too (`unleveled`), as is the leveling through the reference
    # network alone (`leveling.reference_only`).
    level_fit = fit_levels([(k, sess.id, math.log(v)) for sess in every for k, v in sess.latency_ms.items()
                            if not k.startswith(DRIFT_PREFIX) and v > 0])
    level = {sess.id: math.exp(level_fit.slice_log[sess.id]) for sess in every}
    ref_typical = _median([sess.latency_ms[ref.key] for sess in every])
    meas_by_ref = []
    for n in nets:
        own = [pass_[part_of[p][n.key]] for p, pass_ in enumerate(sessions)]  # the session that timed n, per pass
        xs = [sess.latency_ms[n.key] for sess in own]
        lv = [sess.latency_ms[n.key] / level[sess.id] for sess in own]
        meas_by_ref.append(_median([sess.latency_ms[n.key] * ref_typical / sess.latency_ms[ref.key] for sess in own]))
        m = _median(lv)
        s = model.block_sum(n.layers)
        pred_raw.append(s)
        pred_stored.append(model.network(n.layers))
        if session_cals:
            # each refit carried from its part 0's host speed to the typical one by that session's level
            pred_session.append(sum(c.apply(s, model.weight_sum(n.layers) or 0.0) / level[pass_[0].id]
                                    for c, pass_ in zip(session_cals, sessions, strict=True))
                                / len(session_cals))
        meas.append(m)
        meas_unleveled.append(_median(xs))
        if len(lv) >= 2:
            rep.append(statistics.fmean(abs(a - b) / m for a, b in itertools.combinations(lv, 2)))
        # speedup over the reference, measured within each session (the host's drift cancels)
        sp = _median([sess.latency_ms[ref.key] / sess.latency_ms[n.key] for sess in own])
        sp_meas.append(sp)
        sp_pred.append(ref_pred / pred_stored[-1])
        sp_raw.append(ref_sum / s)
        points.append({"network": n.key, "measured_ms": m, "predicted_ms": pred_stored[-1], "block_sum_ms": s,
                       "reanchored_ms": pred_session[-1] if session_cals else None, "attempts_ms": xs,
                       "leveled_ms": lv, "unleveled_ms": meas_unleveled[-1],
                       "reference_ms": [sess.latency_ms[ref.key] for sess in own],
                       "measured_speedup": sp, "predicted_speedup": sp_pred[-1],
                       "sessions": [sess.id for sess in own]})
    repeat = {
        "n": len(rep),
        "mape": 100 * sum(rep) / len(rep) if rep else float("nan"),
        "within_5pct": sum(r <= 0.05 for r in rep) / len(rep) if rep else float("nan"),
        "within_10pct": sum(r <= 0.10 for r in rep) / len(rep) if rep else float("nan"),
        # repeatability tau: how two noisy passes rank the networks against each other (the mean
        # over pairs of passes). Not a ceiling of a model's tau (a model that predicts the true
        # latencies is compared with the median of the passes, which is less noisy than any one).
        "kendall_tau": _pairwise_tau(points, "leveled_ms", passes),
        "kendall_tau_unleveled": _pairwise_tau(points, "attempts_ms", passes),
        "passes": passes,
    }
    speedup = {"reference": ref.key, "reference_chosen": ref_how,
               "reference_measured_ms": [sess.latency_ms[ref.key] for sess in every],
               "reference_predicted_ms": ref_pred,
               **speedup_metrics(sp_pred, sp_meas).to_json(),
               "raw_sum": speedup_metrics(sp_raw, sp_meas).to_json()}
    drift_ref: dict[str, Any] = {}
    if drift is not None:
        now = [sess.latency_ms[DRIFT_PREFIX + drift.key] for sess in every]
        stored = (cal_info.get("drift_reference") or {}).get("latency_ms")
        build = (cal_info.get("build_drift_reference") or {}).get("latency_ms")
        drift_ref = {"key": drift.key, "build_ms": build, "calibration_ms": stored, "validation_ms": now,
                     "validation_vs_calibration": _median(now) / stored if stored else None}
    return ValidationReport(
        device=target.name, space=space.name, options=space.options(), fingerprint_class=cls,
        stored=metrics(pred_stored, meas), raw_sum=metrics(pred_raw, meas), repeatability=repeat,
        unleveled=metrics(pred_stored, meas_unleveled),
        calibration=cal_info, speedup=speedup, drift_reference=drift_ref, points=points,
        reanchored=metrics(pred_session, meas) if session_cals else None,
        session_calibration=[c.to_json() for c in session_cals], sessions=[s.id for s in every],
        leveling={"method": "fit: log time = network + session", "residual_sd": level_fit.residual_sd,
                  "session_levels": level,
                  # the stored model against each network carried through its session's reference
                  # network only, as validation leveled before the fit
                  "reference_only": metrics(pred_stored, meas_by_ref).to_json()},
    )

@dataclass
class LutComparison:
    """One LUT's entries (`against`, e.g. the simulated accelerator) as predictions of another's
    (`device`, e.g. the board), key by key."""

    device: str
    against: str
    fingerprint_classes: dict[str, str]
    only_device: list[str]  # keys only `device` measured
    only_against: list[str]
    metrics: Metrics
    points: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "against": self.against, "fingerprint_classes": self.fingerprint_classes,
                **self.metrics.to_json(), "only_device": self.only_device, "only_against": self.only_against,
                "points": self.points}


def compare_luts(store: Store, device: str, against: str, keys: Sequence[str], batch: int | None = None
                 ) -> LutComparison:
    """Score `against`'s LUT entry by entry against `device`'s, on the keys of one space: what a user
    with a board checks first — does the simulation rank and size the layers as the board does?
    Reads the store only; nothing is measured."""
    from hil.latency import lut_latencies, select_class

    classes = {name: select_class(store, name, keys, batch=batch) for name in (device, against)}
    luts = {name: lut_latencies(store, c.fp_class) for name, c in classes.items()}
    wanted = list(dict.fromkeys(keys))
    common = [k for k in wanted if k in luts[device] and k in luts[against]]
    if not common:
        raise StoreError(f"the LUTs of {device!r} and {against!r} in {store.path} share no entry of this space: "
                         "build both with the same space options (and --batch)")
    pred = [luts[against][k] for k in common]
    meas = [luts[device][k] for k in common]
    return LutComparison(
        device=device, against=against, fingerprint_classes={n: c.fp_class for n, c in classes.items()},
        only_device=[k for k in wanted if k in luts[device] and k not in luts[against]],
        only_against=[k for k in wanted if k in luts[against] and k not in luts[device]],
        metrics=metrics(pred, meas),
        points=[{"key": k, "measured_ms": m, "predicted_ms": p} for k, p, m in zip(common, pred, meas, strict=True)],
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
    ax.scatter(meas, pred, s=16, color="tab:blue", label=f"stored model (calibration v{report.calibration['version']})")
    c = report.stored
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
