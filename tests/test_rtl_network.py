"""A whole network in one continuous RTL run vs the sum of its layers, and `hil validate` on an RTL device."""

from __future__ import annotations

import json

import pytest

from hil.rtl.presets import make_accelerator
from hil.workload import QuantLayer
from tests.hilcli import hil

LAYERS = [
    QuantLayer("conv", (16, 16, 8), (16, 16, 32), 3, 1, 1, 8, 4, True, True),
    QuantLayer("dwconv", (16, 16, 32), (8, 8, 32), 3, 2, 32, 2, 3),
    QuantLayer("conv", (8, 8, 32), (8, 8, 64), 1, 1, 1, 5, 8),
    QuantLayer("fc", (1, 1, 64), (1, 1, 10), 1, 1, 1, 8, 8),
]


def test_bismo_network_run_overlaps_layers_and_keeps_compute_exact():
    acc = make_accelerator("bismo-edge")
    try:
        per_layer = [acc.layer(q, 2) for q in LAYERS]
        net = acc.network(LAYERS, 2)
    finally:
        acc.close()
    # the array does exactly the same work, layer by layer or in one stream
    assert net.compute_cycles == sum(r.compute_cycles for r in per_layer)
    # one stream can only hide work (fetch of layer i+1 under execute of layer i), never add any
    assert net.cycles <= sum(r.cycles for r in per_layer)
    assert net.cycles >= max(r.cycles for r in per_layer)


@pytest.mark.slow
def test_validate_on_rtl_device_compares_layer_sum_with_network_runs(tmp_path):
    db = str(tmp_path / "rtl.db")
    space = ["--space", "mobilenet-v1-layers", "--bits", "4,8", "--resolution", "32", "--db", db]
    b = hil("lut", "build", "-d", "bismo-edge", *space, "--calibration-nets", "0", "--json")
    assert b.returncode == 0, b.stderr
    out = json.loads(b.stdout)
    assert out["entries"] == out["total"] > 0
    shown = json.loads(hil("lut", "show", "-d", "bismo-edge", *space, "--json").stdout)
    row = shown["rows"][0]
    assert row["provenance"] == "simulated" and row["metric_cycles"] > 0 and row["metric_energy_uj"] > 0
    v = hil("validate", "-d", "bismo-edge", *space, "--samples", "3", "--json")
    assert v.returncode == 0, v.stderr
    rep = json.loads(v.stdout)
    assert rep["n"] == 3
    for p in rep["points"]:
        # the network run overlaps layers: never slower than the sum of separately simulated layers
        assert p["measured_ms"] <= p["block_sum_ms"] * 1.0000001
