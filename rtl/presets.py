"""Named accelerator configurations (the three HAQ hardware settings) and `make_accelerator`.

    acc = make_accelerator("bismo-edge")      # builds/loads the cached Verilator harness
    res = acc.time_gemm(256, 1024, 256, 8, 8)

DRAM bandwidths follow the port widths in docs/ACCELERATORS.md (one beat per cycle); DRAM
latencies are assumptions of the harness's model (labelled in docs/RTL_BISMO.md).
"""

from __future__ import annotations

from typing import Any

from hil.errors import ConfigError
from hil.rtl.accelerator import Accelerator
from hil.rtl.bismo.config import BismoConfig
from hil.rtl.bitfusion.config import BitFusionConfig

BISMO_PRESETS: dict[str, BismoConfig] = {
    # HW2: BISMO on the Zynq-7020 (PYNQ-Z1): 8x8x256 at 200 MHz, bm=bn=1024, 4 x 64-bit DRAM ports
    # modelled as one 256-bit port at 32 bytes/cycle.
    "bismo-edge": BismoConfig(
        name="bismo-edge", dm=8, dn=8, dk=256, bm=1024, bn=1024, dram_bits=256, clock_mhz=200.0,
        dram_bytes_per_cycle=32.0, dram_latency=32,
    ),
    # HW3: BISMO on the VU9P: 16x16x256 at ~208 MHz (fit), bm=bn=4096 (choice), 4 x 256-bit ports
    # modelled as one 1024-bit port at 128 bytes/cycle.
    "bismo-cloud": BismoConfig(
        name="bismo-cloud", dm=16, dn=16, dk=256, bm=4096, bn=4096, dram_bits=1024, clock_mhz=208.0,
        dram_bytes_per_cycle=128.0, dram_latency=64,
    ),
}

BITFUSION_PRESETS: dict[str, BitFusionConfig] = {
    # HW1: Bit Fusion, spatial: 16 x 32 fusion units at 500 MHz, WBUF/IBUF/OBUF 64/32/16 KiB (double
    # buffered), a 192-bit DRAM interface (24 bytes/cycle); HAQ's batch 16. DRAM latency 32 cycles is
    # an assumption of the harness model (docs/RTL_BITFUSION.md).
    "bitfusion-spatial": BitFusionConfig(
        name="bitfusion-spatial", rows=16, cols=32, wbuf_bytes=64 * 1024, ibuf_bytes=32 * 1024,
        obuf_bytes=16 * 1024, dram_bits=192, dram_latency=32, clock_mhz=500.0, batch=16,
    ),
}


def preset_names() -> list[str]:
    return sorted([*BISMO_PRESETS, *BITFUSION_PRESETS])


def make_accelerator(name: str, **kwargs: Any) -> Accelerator:
    """The accelerator of a named configuration, running on its (cached) Verilator harness."""
    if name in BISMO_PRESETS:
        from hil.rtl.bismo.driver import BismoAccelerator

        return BismoAccelerator(BISMO_PRESETS[name], **kwargs)
    if name in BITFUSION_PRESETS:
        from hil.rtl.bitfusion.driver import BitFusionAccelerator

        return BitFusionAccelerator(BITFUSION_PRESETS[name], **kwargs)
    raise ConfigError(f"unknown accelerator configuration {name!r} (known: {', '.join(preset_names())})")
