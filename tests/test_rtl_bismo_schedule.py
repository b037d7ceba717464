"""The numpy BISMO scheduler against the plain per-block one it replaced (issue 19): the instruction
streams must be identical word for word, so every cycle count and counter stays what it was.

No Verilator needed: the programs are compared, not run.
"""

from __future__ import annotations

import numpy as np
import pytest

from hil.errors import ConfigError
from hil.lut_builder.spaces.quant_layers import mobilenet_v1_layers
from hil.rtl.bismo import BismoConfig
from hil.rtl.bismo import layers as L
from hil.rtl.bismo.driver import GemmOperands, plan_run
from hil.rtl.bismo.schedule import GemmJob, Program, schedule
from hil.rtl.presets import preset_config
from tests.bismo_schedule_reference import schedule as reference_schedule


def assert_same(cfg: BismoConfig, jobs: list[GemmJob]) -> Program | None:
    try:
        want = reference_schedule(cfg, jobs)
    except ConfigError as e:
        with pytest.raises(ConfigError) as got:
            schedule(cfg, jobs)
        assert str(got.value) == str(e)
        return None
    got = schedule(cfg, jobs)
    for stream in ("fetch", "execute", "result"):
        a, b = getattr(got, stream), getattr(want, stream)
        assert a.dtype == b.dtype and a.shape == b.shape, stream
        assert np.array_equal(a, b), stream
    assert got.modes == want.modes
    assert got.planned_read_bytes == want.planned_read_bytes
    return got


def _jobs(cfg: BismoConfig, gemms: list[GemmOperands], bits: list[tuple[int, int, bool, bool]]) -> list[GemmJob]:
    """The jobs `plan_run` makes (addresses and all), without scheduling them."""
    from hil.rtl.bismo import driver

    seen: list[list[GemmJob]] = []

    def capture(c: BismoConfig, jobs: list[GemmJob]) -> Program:
        seen.append(jobs)
        return Program(*(np.zeros((0, 4), dtype="<u4") for _ in range(3)))

    real = driver.schedule
    driver.schedule = capture
    try:
        plan_run(cfg, gemms, *bits[0], with_data=False, per_gemm_bits=bits)
    finally:
        driver.schedule = real
    return seen[0]


@pytest.mark.parametrize("seed", range(3))
def test_random_programs_identical(seed: int) -> None:
    """Small buffers reach every mode (resident, re-fetched, split-K, untileable) and mixed sequences:
    jobs of other shapes and bits one after another, runs of one shape as a depthwise layer's groups."""
    rng = np.random.default_rng(seed)
    modes: set[str] = set()
    for _ in range(50):
        cfg = BismoConfig("t", int(rng.choice([2, 4, 8])), int(rng.choice([2, 4, 8])), 64,
                          int(rng.choice([8, 16, 32, 64, 128])), int(rng.choice([8, 16, 32, 64, 128])), 64, 100.0, 8.0)
        gemms: list[GemmOperands] = []
        bits: list[tuple[int, int, bool, bool]] = []
        for _ in range(int(rng.integers(1, 5))):
            gemms.append(GemmOperands(int(rng.integers(1, 40)), int(rng.integers(1, 600)), int(rng.integers(1, 40))))
            bits.append((int(rng.integers(1, 9)), int(rng.integers(1, 9)), bool(rng.integers(2)),
                         bool(rng.integers(2))))
            for _ in range(int(rng.integers(0, 4))):
                gemms.append(gemms[-1])
                bits.append(bits[-1])
        prog = assert_same(cfg, _jobs(cfg, gemms, bits))
        if prog is not None:
            modes.update(prog.modes)
    assert {"lhs-outer", "lhs-outer/rhs-resident", "rhs-outer/lhs-resident", "split-k"} <= modes


@pytest.mark.parametrize(("config", "batch"), [("bismo-edge", 1), ("bismo-cloud", 16)])
def test_lut_programs_identical(config: str, batch: int) -> None:
    """A sample of the MobileNet-V1 LUT entries on the presets (every layer kind, a spread of bits),
    and (on the edge) the whole network at mixed bits as one program (`network()`)."""
    cfg = preset_config(config)
    layers = mobilenet_v1_layers("2..8").workloads()
    gemms_all: list[GemmOperands] = []
    bits_all: list[tuple[int, int, bool, bool]] = []
    for i, q in enumerate(layers[::37 if batch == 1 else 97]):
        geo = L.geometry(q, batch)
        gemms = [GemmOperands(m, k, n) for m, k, n in L.gemm_shapes(geo, cfg.dm, cfg.dk)]
        bits = [(q.wbits, q.abits, q.wsigned, q.asigned)] * len(gemms)
        if i % 3 == 0 or batch > 1:
            assert_same(cfg, _jobs(cfg, gemms, bits))
        gemms_all += gemms
        bits_all += bits
    if batch == 1:
        assert_same(cfg, _jobs(cfg, gemms_all, bits_all))
