"""A Bit Fusion configuration: array shape, buffer sizes, DRAM port, clock, batch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hil.errors import ConfigError
from hil.rtl.common import pow2
from hil.rtl.sim_harness import DramConfig, DramPages


@dataclass(frozen=True)
class BitFusionConfig:
    name: str = "bitfusion-spatial"
    rows: int = 16  # N: fusion-unit rows (input channels)
    cols: int = 32  # M: columns (output channels)
    wbuf_bytes: int = 64 * 1024  # both halves of the double buffer
    ibuf_bytes: int = 32 * 1024
    obuf_bytes: int = 16 * 1024
    dram_bits: int = 192  # DRAM beat (interface width per cycle)
    dram_latency: int = 32  # cycles from read request to data (harness DRAM model)
    dram_bytes_per_cycle: float = 0.0  # 0: one beat per cycle
    clock_mhz: float = 500.0
    batch: int = 16
    read_queue: int = 64  # DRAM reads the load engine keeps in flight
    mem_bytes: int = 512 << 20  # DRAM model size
    dram_pages: DramPages | None = None  # row-buffer / turnaround model (None: bandwidth and latency only)

    def __post_init__(self) -> None:
        where = f"Bit Fusion config {self.name!r}"
        if not (pow2(self.rows) and pow2(self.cols) and self.rows >= 2 and self.cols >= 4):
            raise ConfigError(f"{where}: rows and cols must be powers of 2 (rows >= 2, cols >= 4)")
        if self.dram_bits % 32 or not 32 <= self.dram_bits <= 256:
            raise ConfigError(f"{where}: dram_bits must be a multiple of 32 in 32..256")
        if self.wb_half < 4 or self.wb_half % 4 or not pow2(self.wb_half):
            raise ConfigError(f"{where}: wbuf_bytes gives {self.wb_half} B per unit and half (need a power of 2 >= 4)")
        if self.ib_half < 4 or not pow2(self.ib_half):
            raise ConfigError(f"{where}: ibuf_bytes gives {self.ib_half} B per row and half (need a power of 2 >= 4)")
        if self.ob_entries < 1 or not pow2(self.ob_entries):
            raise ConfigError(
                f"{where}: obuf_bytes gives {self.ob_entries} accumulators per column half, not a power of 2"
            )
        if not pow2(self.read_queue):
            raise ConfigError(f"{where}: read_queue must be a power of 2")
        if self.clock_mhz <= 0 or self.batch < 1 or self.dram_latency < 1:
            raise ConfigError(f"{where}: clock_mhz, batch and dram_latency must be positive")

    # --- derived geometry ---
    @property
    def beat_bytes(self) -> int:
        return self.dram_bits // 8

    @property
    def bytes_per_cycle(self) -> float:
        return self.dram_bytes_per_cycle or float(self.beat_bytes)

    @property
    def wb_half(self) -> int:
        """Bytes of one fusion unit's WBUF bank in one half."""
        return self.wbuf_bytes // (self.rows * self.cols * 2)

    @property
    def ib_half(self) -> int:
        """Bytes of one row's IBUF bank in one half."""
        return self.ibuf_bytes // (self.rows * 2)

    @property
    def ob_entries(self) -> int:
        """32-bit accumulators of one column's OBUF bank in one half."""
        return self.obuf_bytes // (self.cols * 4 * 2)

    def dram(self) -> DramConfig:
        return DramConfig(
            bytes_per_cycle=self.bytes_per_cycle,
            latency=self.dram_latency,
            size=self.mem_bytes,
            max_outstanding=max(256, self.read_queue),
            pages=self.dram_pages,
        )

    def rtl_parameters(self) -> dict[str, int]:
        return {
            "N": self.rows,
            "M": self.cols,
            "DW": self.dram_bits,
            "WBUF_BYTES": self.wbuf_bytes,
            "IBUF_BYTES": self.ibuf_bytes,
            "OBUF_BYTES": self.obuf_bytes,
            "RDQ": self.read_queue,
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
