"""Build the native Verilator harness of the Bit Fusion RTL (cached by RTL + config + Verilator)."""

from __future__ import annotations

from pathlib import Path

from hil.rtl.bitfusion.config import BitFusionConfig
from hil.rtl.sim_harness import harness_spec
from hil.rtl.verilator_build import HarnessSpec, build_harness

SV_DIR = Path(__file__).resolve().parent / "sv"
MAIN_CPP = Path(__file__).resolve().parent / "harness_main.cpp"
TOP = "bitfusion_top"


def sv_sources() -> list[Path]:
    """The RTL in compile order."""
    names = ["bf_pkg.sv", "bf_datapath.sv", "bf_compute.sv", "bf_load.sv", "bf_store.sv", "bitfusion_top.sv"]
    return [SV_DIR / n for n in names]


def spec(cfg: BitFusionConfig) -> HarnessSpec:
    return harness_spec("bitfusion", TOP, sv_sources(), MAIN_CPP, cfg.rtl_parameters())


def build(cfg: BitFusionConfig) -> Path:
    """The harness executable for `cfg` (built on first use; RtlBuildError shows the compiler's output)."""
    return build_harness(spec(cfg))
