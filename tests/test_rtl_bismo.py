"""BISMO overlay on the native Verilator harness, full configurations (bismo-edge, bismo-cloud).

Random GEMMs and convolutions at every supported bitwidth pair, signed and unsigned, must equal
numpy's integer results exactly; the RTL's array-busy counter must equal the pure-compute formula
ceil(M/Dm)*ceil(N/Dn)*ceil(K/Dk)*wbits*abits, including the cross-check vectors of
docs/ACCELERATORS.md; bad input gives one clear error. Builds are cached by content hash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from hil.errors import ConfigError, DeviceError, HilError
from hil.rtl.bismo import BismoAccelerator, BismoConfig
from hil.rtl.bismo.driver import CONFIG_DP_EN, REG_CONFIG, GemmOperands, plan_run
from hil.rtl.bismo.layers import depthwise_group
from hil.rtl.presets import BISMO_PRESETS, make_accelerator
from hil.rtl.sim_harness import SimHarness, SimTimeoutError
from hil.rtl.verilator_build import build_harness
from hil.workload import QuantLayer


def _rand(rng: np.random.Generator, bits: int, signed: bool, shape: tuple[int, ...]) -> np.ndarray:
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    return rng.integers(lo, hi, shape)


def _formula(acc: BismoAccelerator, m: int, k: int, n: int, wb: int, ab: int) -> int:
    c = acc.cfg
    return -(-m // c.dm) * -(-n // c.dn) * -(-k // c.dk) * wb * ab


def _reference_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int, depthwise: bool) -> np.ndarray:
    """Direct convolution by shifted windows, independent of the driver's im2col."""
    b, h, wd, _ = x.shape
    k = w.shape[1]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((b, ho, wo, w.shape[0]), dtype=np.int64)
    for ky in range(k):
        for kx in range(k):
            win = xp[:, ky : ky + stride * (ho - 1) + 1 : stride, kx : kx + stride * (wo - 1) + 1 : stride, :]
            out += win * w[:, ky, kx, 0] if depthwise else np.einsum("bhwc,oc->bhwo", win, w[:, ky, kx, :])
    return out


@pytest.fixture(scope="module")
def edge() -> Iterator[BismoAccelerator]:
    acc = make_accelerator("bismo-edge")
    yield acc
    acc.close()


@pytest.fixture(scope="module")
def cloud() -> Iterator[BismoAccelerator]:
    acc = make_accelerator("bismo-cloud")
    yield acc
    acc.close()


# ---------------------------------------------------------------- the cross-check vectors
@pytest.mark.parametrize(("bits", "expect"), [(8, 262_144), (2, 16_384)])
def test_accelerators_md_vectors_edge(edge: BismoAccelerator, bits: int, expect: int) -> None:
    r = edge.time_gemm(256, 1024, 256, bits, bits)
    assert r.compute_cycles == expect
    assert r.cycles > r.compute_cycles  # prologue and epilogue are real cycles too
    assert r.latency_ms == pytest.approx(r.cycles / 200e3)


@pytest.mark.slow
def test_accelerators_md_vector_cloud(cloud: BismoAccelerator) -> None:
    r = cloud.time_gemm(256, 1024, 256, 8, 8)
    assert r.compute_cycles == 65_536


# ---------------------------------------------------------------- functional, every bit pair
def test_random_gemms_every_bit_pair_signed_and_unsigned_edge(edge: BismoAccelerator) -> None:
    rng = np.random.default_rng(7)
    for wb in range(1, 9):
        for ab in range(1, 9):
            for ws in (False, True):
                for as_ in (False, True):
                    m, k, n = (int(v) for v in rng.integers(1, [20, 700, 20]))
                    w, a = _rand(rng, wb, ws, (m, k)), _rand(rng, ab, as_, (k, n))
                    c, r = edge.gemm(w, a, wb, ab, ws, as_)
                    assert np.array_equal(c, w @ a), (wb, ab, ws, as_, m, k, n)
                    assert r.compute_cycles == _formula(edge, m, k, n, wb, ab)


@pytest.mark.slow
def test_random_gemms_every_bit_pair_cloud(cloud: BismoAccelerator) -> None:
    # the 1024-bit port carries 4 buffer words per beat and a 16-column result row is half a beat
    rng = np.random.default_rng(8)
    for wb in range(1, 9):
        for ab in range(1, 9):
            ws, as_ = bool(wb % 2), bool(ab % 2 == 0)
            m, k, n = (int(v) for v in rng.integers(1, [40, 600, 40]))
            w, a = _rand(rng, wb, ws, (m, k)), _rand(rng, ab, as_, (k, n))
            c, r = cloud.gemm(w, a, wb, ab, ws, as_)
            assert np.array_equal(c, w @ a), (wb, ab, ws, as_, m, k, n)
            assert r.compute_cycles == _formula(cloud, m, k, n, wb, ab)


def test_extreme_values_and_tile_edges(edge: BismoAccelerator) -> None:
    # most negative x most negative at 8 bits, all-ones rows, exact multiples of the tile sizes
    for wb, ab, ws, as_ in ((8, 8, True, True), (8, 8, False, False), (1, 1, True, True), (3, 8, True, False)):
        lo_w = -(1 << (wb - 1)) if ws else (1 << wb) - 1
        lo_a = -(1 << (ab - 1)) if as_ else (1 << ab) - 1
        for m, k, n in ((8, 256, 8), (16, 512, 9), (9, 257, 17)):
            w, a = np.full((m, k), lo_w), np.full((k, n), lo_a)
            c, _ = edge.gemm(w, a, wb, ab, ws, as_)
            assert np.array_equal(c, w @ a), (wb, ab, ws, as_, m, k, n)


CONV_CASES = [
    # name, H, Cin, Cout, k, stride, depthwise, wbits, abits, wsigned, asigned, batch
    ("conv", 9, 5, 11, 3, 1, False, 4, 3, True, False, 2),
    ("conv", 10, 3, 16, 3, 2, False, 8, 8, True, True, 1),
    ("pw", 6, 40, 24, 1, 1, False, 2, 5, False, True, 2),
    ("dw", 8, 13, 13, 3, 1, True, 3, 4, True, True, 2),
    ("dw", 9, 10, 10, 5, 2, True, 8, 2, True, False, 1),
    ("dw7", 7, 6, 6, 7, 1, True, 5, 6, False, False, 1),
    ("fc", 1, 300, 21, 1, 1, False, 6, 7, True, False, 3),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] + str(i) for i, c in enumerate(CONV_CASES)])
def test_layers_match_direct_convolution(edge: BismoAccelerator, case: tuple) -> None:
    name, h, cin, cout, k, s, dw, wb, ab, ws, as_, batch = case
    pad = (k - 1) // 2
    ho = (h + 2 * pad - k) // s + 1
    layer = QuantLayer(name, (h, h, cin), (ho, ho, cout), k, s, cin if dw else 1, wb, ab, ws, as_)
    rng = np.random.default_rng(hash(case) & 0xFFFF)
    x = _rand(rng, ab, as_, (batch, h, h, cin))
    w = _rand(rng, wb, ws, (cout, k, k, 1 if dw else cin))
    out, r = edge.run_layer(layer, x, w)
    assert np.array_equal(out, _reference_conv(x, w, s, pad, dw))
    # timing without operand values (and with the datapath off) is the same run: every counter equal
    t = edge.layer(layer, batch)
    assert (t.cycles, t.compute_cycles) == (r.cycles, r.compute_cycles)
    assert t.extra["counters"] == r.extra["counters"]
    assert t.compute_cycles == t.extra["formula_compute_cycles"]
    assert t.extra["layer"] == layer.key and t.dram_bytes > 0 and t.energy_uj > 0


@pytest.mark.parametrize("which", ["edge", "cloud"])
def test_timing_runs_switch_the_datapath_off_and_keep_every_counter(which: str, request: pytest.FixtureRequest) -> None:
    # Timing runs clear CONFIG.DP_EN (no buffer writes or reads, no DPA work); the same program on
    # data, with the datapath on, must give all 16 counters identical: cycles do not depend on it.
    acc: BismoAccelerator = request.getfixturevalue(which)
    rng = np.random.default_rng(5)
    for m, k, n, wb, ab in [(40, 700, 33, 3, 5), (16, 256, 300, 8, 8), (8, 4096, 8, 1, 2), (70, 300, 90, 2, 7)]:
        w, a = _rand(rng, wb, True, (m, k)), _rand(rng, ab, False, (k, n))
        c, r = acc.gemm(w, a, wb, ab, True, False)
        assert np.array_equal(c, w @ a)
        assert acc.regs.read_reg(REG_CONFIG) == CONFIG_DP_EN
        t = acc.time_gemm(m, k, n, wb, ab, True, False)
        assert acc.regs.read_reg(REG_CONFIG) == 0
        assert t.extra["counters"] == r.extra["counters"], (m, k, n, wb, ab)
        assert t.compute_cycles == _formula(acc, m, k, n, wb, ab)
    # and a data run after timing runs is still exact (the datapath comes back on)
    w, a = _rand(rng, 4, True, (24, 520)), _rand(rng, 6, True, (520, 20))
    assert np.array_equal(acc.gemm(w, a, 4, 6, True, True)[0], w @ a)


def test_conv_and_depthwise_at_every_bit_pair(edge: BismoAccelerator) -> None:
    rng = np.random.default_rng(11)
    for wb in range(1, 9):
        for ab in range(1, 9):
            ws, as_ = bool((wb + ab) % 2), bool(wb * ab % 3 == 0)
            for dw in (False, True):
                cin, cout = (6, 6) if dw else (4, 5)
                layer = QuantLayer("c", (5, 5, cin), (5, 5, cout), 3, 1, cin if dw else 1, wb, ab, ws, as_)
                x = _rand(rng, ab, as_, (2, 5, 5, cin))
                w = _rand(rng, wb, ws, (cout, 3, 3, 1 if dw else cin))
                out, r = edge.run_layer(layer, x, w)
                assert np.array_equal(out, _reference_conv(x, w, 1, 1, dw)), layer.key
                assert r.compute_cycles == r.extra["formula_compute_cycles"]


def test_depthwise_mapping_packs_channels_into_one_word() -> None:
    # 8 channels x 3x3 = 72 bits fit one 256-bit word: groups of 8 on an 8-row array
    assert depthwise_group(32, 3, 8, 256) == 8
    # 7x7: 5 channels (245 bits) per word beats 8 channels over two words
    assert depthwise_group(1024, 7, 8, 256) == 5
    assert depthwise_group(3, 3, 8, 256) == 3


# ---------------------------------------------------------------- scheduling and counters
def test_weight_stationary_reuse_and_counters(edge: BismoAccelerator) -> None:
    r = edge.time_gemm(64, 512, 4096, 4, 4)  # small weights, many activation tiles
    c = r.extra["counters"]
    assert set(r.stage_cycles) < set(c) and r.stage_cycles["exec_busy"] == r.compute_cycles
    cfg = edge.cfg
    lhs_words = 8 * 4 * 2 * 8  # stripes x planes x words x rows: fetched exactly once
    assert c["lhs_words_written"] == lhs_words
    assert r.extra["modes"] == ["rhs-outer/lhs-resident"]
    assert c["result_tiles"] == 8 * 512
    assert c["dram_write_bytes"] == 64 * 4096 * 4
    assert r.dram_bytes == c["dram_read_beats"] * cfg.beat_bytes + c["dram_write_bytes"]
    assert 0 < r.utilization["array"] <= 1 and c["total"] == r.cycles
    parts = r.extra["energy_breakdown_uj"]
    assert r.energy_uj == pytest.approx(sum(parts.values()))
    assert parts["array"] == pytest.approx(r.compute_cycles * 117.55e-6)


@pytest.mark.parametrize("config", ["bismo-edge", "bismo-cloud"])
def test_words_written_count_every_operand_beat(config: str) -> None:
    """The buffer-word counters (the energy model's buffer writes) against the DRAM beats that carry
    operands: one word per beat on the edge, four per 1024-bit beat on the cloud array."""
    acc = make_accelerator(config)
    try:
        for m, k, n, wb, ab in ((64, 512, 4096, 4, 4), (200, 1000, 300, 3, 7)):
            c = acc.time_gemm(m, k, n, wb, ab).extra["counters"]
            words = c["lhs_words_written"] + c["rhs_words_written"]
            assert words > 0
            assert words * acc.cfg.dk == (c["dram_read_beats"] - c["instruction_read_beats"]) * acc.cfg.dram_bits
    finally:
        acc.close()


def test_split_k_when_a_stripe_exceeds_half_a_buffer(edge: BismoAccelerator) -> None:
    # 8-bit rows of 512 words need 4096 buffer words > bm/2 = 512
    rng = np.random.default_rng(3)
    m, k, n = 9, 512 * 256 + 100, 3
    w, a = _rand(rng, 8, True, (m, k)), _rand(rng, 8, False, (k, n))
    c, r = edge.gemm(w, a, 8, 8, True, False)
    assert r.extra["modes"] == ["split-k"]
    assert np.array_equal(c, w @ a)
    assert r.compute_cycles == _formula(edge, m, k, n, 8, 8)


def test_describe_names_the_configuration(edge: BismoAccelerator) -> None:
    d = edge.describe()
    assert d["name"] == "bismo-edge" and d["dm"] == 8 and d["dram_bits"] == 256
    assert len(d["rtl_hash"]) == 20 and d["verilator"] and "assumed" in d["energy_model"]
    # the class names the simulated machine, the record's state the binary (host flags, PGO) that ran it
    spec = edge._trained(edge._harness_spec())
    assert d["rtl_hash"] == spec.model_digest() != spec.digest()
    assert edge.build == {"harness": f"bismo-{spec.digest()}", "pgo": spec.pgo()}
    assert edge.supported_bits == tuple(range(1, 9)) and edge.clock_mhz == 200.0


# ---------------------------------------------------------------- bad input
def test_unsupported_bitwidths_and_values_are_clear_errors(edge: BismoAccelerator) -> None:
    with pytest.raises(ConfigError, match="wbits=9 is not supported"):
        edge.time_gemm(8, 8, 8, 9, 8)
    with pytest.raises(ConfigError, match="abits=0 is not supported"):
        edge.time_gemm(8, 8, 8, 8, 0)
    with pytest.raises(ConfigError, match="outside the signed 4-bit range"):
        edge.gemm(np.full((2, 2), 8), np.ones((2, 2), int), 4, 4, True, False)
    with pytest.raises(ConfigError, match="outside the unsigned 2-bit range"):
        edge.gemm(np.ones((2, 2), int), np.full((2, 2), -1), 4, 2, True, False)
    with pytest.raises(ConfigError, match="groups=2"):
        edge.layer(QuantLayer("g", (4, 4, 4), (4, 4, 4), 3, 1, 2, 8, 8), 1)
    with pytest.raises(ConfigError, match="does not follow"):
        edge.layer(QuantLayer("bad", (8, 8, 4), (5, 5, 4), 3, 1, 1, 8, 8), 1)
    with pytest.raises(ConfigError, match="w:9s"):
        edge.layer(QuantLayer("b9", (4, 4, 4), (4, 4, 4), 3, 1, 1, 9, 8), 1)
    # still serving afterwards
    assert edge.time_gemm(8, 256, 8, 1, 1).compute_cycles == 1


def test_untileable_gemm_and_too_little_dram_are_refused() -> None:
    # refused while planning, before any hardware is touched
    tiny = BismoConfig("tiny", 2, 2, 64, 8, 8, 64, 100.0, 8.0, dram_size=1 << 16)
    with pytest.raises(ConfigError, match="cannot be tiled"):
        plan_run(tiny, [GemmOperands(4, 64, 4)], 8, 8, True, False, with_data=False)  # 8 words > bm/2
    with pytest.raises(ConfigError, match=r"needs at least .* bytes of accelerator DRAM"):
        plan_run(tiny, [GemmOperands(512, 512, 512)], 2, 2, True, False, with_data=False)
    plan = plan_run(tiny, [GemmOperands(4, 64, 4)], 4, 4, True, False, with_data=False)
    assert plan.prog.modes == ["lhs-outer/rhs-resident"]


def test_cycle_limit_is_a_clear_error_and_the_harness_recovers() -> None:
    cfg = BISMO_PRESETS["bismo-edge"]
    acc = BismoAccelerator(cfg, max_cycles=1000)
    try:
        with pytest.raises(SimTimeoutError, match="did not raise done within 1,000 cycles"):
            acc.time_gemm(256, 1024, 256, 8, 8)
        acc.max_cycles = None  # the driver reset the simulator after the timeout
        assert acc.time_gemm(16, 256, 16, 2, 2).compute_cycles == 2 * 2 * 4
    finally:
        acc.close()


def test_a_harness_of_another_configuration_is_refused() -> None:
    edge_cfg = BISMO_PRESETS["bismo-edge"]
    other = dataclasses.replace(edge_cfg, name="edge-bm512", bm=512)
    exe = build_harness(edge_cfg.harness_spec())
    with pytest.raises(DeviceError, match="hardware has bm = 1024, the configuration says 512"):
        BismoAccelerator(other, regs=SimHarness(exe, edge_cfg.dram()))


def test_invalid_configurations_are_refused() -> None:
    with pytest.raises(ConfigError, match="power of two"):
        BismoConfig("x", 3, 8, 256, 1024, 1024, 256, 200.0, 32.0)
    with pytest.raises(ConfigError, match="multiples of 4"):
        BismoConfig("x", 2, 8, 256, 1024, 1024, 1024, 200.0, 128.0)
    with pytest.raises(HilError, match="unknown accelerator configuration 'bismo-nano'"):
        make_accelerator("bismo-nano")
