"""Named accelerator configurations (the three HAQ hardware settings) and `make_accelerator`.

    acc = make_accelerator("bismo-edge")      # builds/loads the cached Verilator harness
    res = acc.time_gemm(256, 1024, 256, 8, 8)

The DRAM behind each accelerator follows its board (sources in docs/RTL_BISMO.md, "Memory presets"):
bandwidth from the memory part and bus, a page model (row size, banks, row-miss and turnaround
penalties) from the DRAM standard's timings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hil.errors import ConfigError
from hil.rtl.accelerator import Accelerator
from hil.rtl.bismo.config import BismoConfig
from hil.rtl.bitfusion.config import BitFusionConfig
from hil.rtl.sim_harness import DramPages

# PYNQ-Z1 (Digilent reference manual): one IS43TR16256A-125KBL DDR3 part, 16-bit bus at 525 MHz
# (1050 MT/s) = 2.1 GB/s peak, i.e. 10.5 B per 200 MHz accelerator cycle. The four 64-bit HP ports
# (UG585 ch. 5) carry 4 x 8 B per PL cycle, so the DDR, not the ports, is the limit. Page model:
# a x16 4 Gb DDR3 part has 8 banks of 2 KiB rows; tRP + tRCD = 2 x 13.75 ns (DDR3-1600 11-11-11 bin
# of the -125K part) = 27.5 ns = 6 cycles at 200 MHz; bus turnaround ~4 cycles (tWTR 7.5 ns plus the
# write/read latencies at 525 MHz; our estimate). Read latency 32 cycles: assumed.
PYNQ_Z1_DDR3 = DramPages(row_bytes=2048, banks=8, row_miss=6, turnaround=4)
# VU9P cloud board (AWS F1, aws-fpga HDK release notes): four DDR4 RDIMM channels, each behind a
# 512-bit AXI4 port at 250 MHz (16 GB/s), 64 GB/s in all = 308 B per 208 MHz cycle: more than BISMO's
# four 256-bit ports move (128 B/cycle), so the ports stay the limit. Page model (assumed): 8 KiB DIMM
# rows (eight x8 parts of 1 KiB) on each of the 4 channels striped beat-wise = 32 KiB rows, 16 banks;
# tRP + tRCD = 2 x 14 ns (DDR4-2133 15-15-15) = 6 cycles at 208 MHz; turnaround 2 cycles.
F1_DDR4 = DramPages(row_bytes=32768, banks=16, row_miss=6, turnaround=2)

BISMO_PRESETS: dict[str, BismoConfig] = {
    # HW2: BISMO on the Zynq-7020 (PYNQ-Z1): 8x8x256 at 200 MHz, bm=bn=1024, 4 x 64-bit HP ports
    # modelled as one 256-bit port, fed by the board's single 16-bit DDR3 part (10.5 B/cycle).
    "bismo-edge": BismoConfig(
        name="bismo-edge", dm=8, dn=8, dk=256, bm=1024, bn=1024, dram_bits=256, clock_mhz=200.0,
        dram_bytes_per_cycle=10.5, dram_latency=32, dram_pages=PYNQ_Z1_DDR3,
    ),
    # HW3: BISMO on the VU9P: 16x16x256 at ~208 MHz (fit), bm=bn=4096 (choice), 4 x 256-bit ports
    # modelled as one 1024-bit port at 128 bytes/cycle (the board's DDR4 channels move more).
    "bismo-cloud": BismoConfig(
        name="bismo-cloud", dm=16, dn=16, dk=256, bm=4096, bn=4096, dram_bits=1024, clock_mhz=208.0,
        dram_bytes_per_cycle=128.0, dram_latency=64, dram_pages=F1_DDR4,
    ),
}

BITFUSION_PRESETS: dict[str, BitFusionConfig] = {
    # HW1: Bit Fusion, spatial: 16 x 32 fusion units at 500 MHz, WBUF/IBUF/OBUF 64/32/16 KiB (double
    # buffered), the paper's 192-bit DRAM interface (24 bytes/cycle); HAQ's batch 16. No page model:
    # the paper gives the interface width only (no DRAM part) and the public simulator models none.
    # DRAM latency 32 cycles is an assumption of the harness model (docs/RTL_BITFUSION.md).
    "bitfusion-spatial": BitFusionConfig(
        name="bitfusion-spatial", rows=16, cols=32, wbuf_bytes=64 * 1024, ibuf_bytes=32 * 1024,
        obuf_bytes=16 * 1024, dram_bits=192, dram_latency=32, clock_mhz=500.0, batch=16,
    ),
}


def preset_names() -> list[str]:
    return sorted([*BISMO_PRESETS, *BITFUSION_PRESETS])


# Parameters an inventory may not override: the preset's identity and its board's DRAM page model.
FIXED = ("name", "dram_pages")


def preset_config(name: str, overrides: Mapping[str, int | float] | None = None) -> BismoConfig | BitFusionConfig:
    """A named configuration with the inventory's parameter overrides applied and checked: what
    `make_accelerator` runs, made without building anything (so `hil inventory check` can apply it)."""
    base: BismoConfig | BitFusionConfig | None = BISMO_PRESETS.get(name) or BITFUSION_PRESETS.get(name)
    if base is None:
        raise ConfigError(f"unknown accelerator configuration {name!r} (known: {', '.join(preset_names())})")
    if not overrides:
        return base
    known = sorted(f.name for f in dataclasses.fields(base) if f.name not in FIXED)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigError(f"accelerator {name!r} has no parameter {', '.join(map(repr, unknown))} to override "
                          f"(known: {', '.join(known)})")
    try:
        return dataclasses.replace(base, **dict(overrides))  # the config validates itself
    except (TypeError, ValueError) as e:
        raise ConfigError(f"accelerator {name!r} with overrides {dict(overrides)}: {e}") from None


def make_accelerator(name: str, overrides: Mapping[str, int | float] | None = None, **kwargs: Any) -> Accelerator:
    """The accelerator of a named configuration (with parameter overrides), running on its (cached)
    Verilator harness; `kwargs` go to the driver (e.g. `max_cycles`)."""
    cfg = preset_config(name, overrides)
    if isinstance(cfg, BismoConfig):
        from hil.rtl.bismo.driver import BismoAccelerator

        return BismoAccelerator(cfg, **kwargs)
    from hil.rtl.bitfusion.driver import BitFusionAccelerator

    return BitFusionAccelerator(cfg, **kwargs)
