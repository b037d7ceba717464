"""The AXI shell's register block (docs/PYNQ.md) around BISMO, in cocotb against cocotbext-axi's
AXI-Lite master. The AXI master for DRAM is not written yet."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cocotb_tools.runner")
pytest.importorskip("cocotbext.axi", reason="cocotbext-axi is not installed (pip install cocotbext-axi)")

from hil.rtl.bismo.config import SV_DIR, SV_FILES
from tests.cocotb_run import run_cocotb

SHELL_DIR = Path(__file__).resolve().parents[1] / "rtl" / "shell"
SMALL = {"DM": 2, "DN": 2, "DK": 64, "BM": 64, "BN": 64, "DW": 32}


def test_axi_lite_register_block_around_bismo(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = [SHELL_DIR / "sv" / "hil_axil_regs.sv", SHELL_DIR / "sv" / "bismo_axil.sv"]
    sources = [*(SV_DIR / f for f in SV_FILES), *shell]
    run_cocotb("shell", "bismo_axil", sources, SMALL, ["registers_over_axi_lite",
               "start_and_done_with_concurrent_traffic"], SHELL_DIR / "tests", "cocotb_shell", {}, monkeypatch,
               includes=[SV_DIR / "bismo_top_regs.svh"])


def test_axi_board_top_runs_a_gemm(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = [SHELL_DIR / "sv" / f for f in ("hil_axil_regs.sv", "hil_axi_master.sv", "bismo_axi.sv")]
    run_cocotb("shell", "bismo_axi", [*(SV_DIR / f for f in SV_FILES), *shell], SMALL, ["gemm_through_axi"],
               SHELL_DIR / "tests", "cocotb_shell", {}, monkeypatch, includes=[SV_DIR / "bismo_top_regs.svh"])
