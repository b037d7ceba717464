"""Predicted vs measured speedup of one network over another on one device.

The one speedup every tool reports (`hil speedup`, `hil amc speedup`, benchmarks): the prediction is
the latency model the caller ranks networks with (for an optimizer, the stored model,
`LatencyModel.from_store`); the measurement times both whole networks in one session
(`hil.calibration.measure_session`: one request, one slice of interleaved rounds), so the host's
speed changes fall on both alike and cancel in their ratio. The records are stored, tagged
`speedup_pass`, and never become LUT entries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hil.calibration import measure_session
from hil.errors import ConfigError
from hil.latency import LatencyModel
from hil.measure import Measurement, MeasureSettings
from hil.store import Store
from hil.target import Target
from hil.workload import Network


@dataclass(frozen=True)
class Side:
    """One network of the pair: what the model predicts and what the session measured."""

    network: str  # the Network key
    predicted_ms: float
    measured_ms: float
    block_sum_ms: float  # the plain sum of the LUT's blocks, before calibration


@dataclass(frozen=True)
class Speedup:
    session: str
    base: Side
    candidate: Side

    @property
    def predicted(self) -> float:
        return self.base.predicted_ms / self.candidate.predicted_ms

    @property
    def measured(self) -> float:
        return self.base.measured_ms / self.candidate.measured_ms

    @property
    def error(self) -> float:
        """Relative error of the predicted speedup (+: the model promises more than the device gives)."""
        return self.predicted / self.measured - 1

    def to_json(self) -> dict[str, Any]:
        side = lambda s: {"network": s.network, "predicted_ms": s.predicted_ms,  # noqa: E731
                          "measured_ms": s.measured_ms, "block_sum_ms": s.block_sum_ms}
        return {"session": self.session, "base": side(self.base), "candidate": side(self.candidate),
                "predicted_speedup": self.predicted, "measured_speedup": self.measured,
                "plain_sum_speedup": self.base.block_sum_ms / self.candidate.block_sum_ms,
                "error": self.error}


def measure_speedup(
    store: Store,
    target: Target,
    model: LatencyModel,
    base: Network,
    candidate: Network,
    settings: MeasureSettings,
    seed: int = 0,
    progress: Callable[[Measurement], None] | None = None,
) -> Speedup:
    """Predict with `model`, then time both networks in one session on `target`."""
    if base.key == candidate.key:
        raise ConfigError("the base and the candidate are the same network")
    pred = {n.key: (model.network(n.layers), model.block_sum(n.layers)) for n in (base, candidate)}
    session = measure_session(store, target, [base, candidate], settings, "speedup", 0, seed=seed,
                              progress=progress)
    sides = [Side(n.key, pred[n.key][0], session.latency_ms[n.key], pred[n.key][1]) for n in (base, candidate)]
    return Speedup(session.id, sides[0], sides[1])
