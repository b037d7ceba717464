"""A BISMO overlay configuration: the RTL's parameters, its clock and the harness's DRAM model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hil.errors import ConfigError
from hil.rtl.common import pow2
from hil.rtl.sim_harness import DramConfig, DramPages, harness_spec
from hil.rtl.verilator_build import HarnessSpec

SV_DIR = Path(__file__).resolve().parent / "sv"
SV_FILES = (
    "bismo_fifo.sv",
    "bismo_dpu.sv",
    "bismo_dpa.sv",
    "bismo_instr_reader.sv",
    "bismo_fetch.sv",
    "bismo_exec.sv",
    "bismo_result.sv",
    "bismo_top.sv",
)
MAIN_CPP = Path(__file__).resolve().parent / "harness_main.cpp"


@dataclass(frozen=True)
class BismoConfig:
    name: str
    dm: int  # DPA rows (LHS rows per tile)
    dn: int  # DPA columns (RHS rows per tile)
    dk: int  # bits per DPU operand word
    bm: int  # words per LHS buffer
    bn: int  # words per RHS buffer
    dram_bits: int  # DRAM port width in bits (DW)
    clock_mhz: float
    dram_bytes_per_cycle: float  # the harness DRAM model's bandwidth
    dram_latency: int = 32  # cycles
    dram_size: int = 1 << 30  # bytes (virtual: only written pages cost memory)
    max_bits: int = 8  # the driver supports 1..max_bits per operand
    dram_pages: DramPages | None = None  # row-buffer / turnaround model of the board's DRAM

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(msg: str) -> ConfigError:
            return ConfigError(f"BISMO configuration {self.name!r}: {msg}")

        for field in ("dm", "dn", "dk", "bm", "bn", "dram_bits"):
            v = getattr(self, field)
            if not pow2(v):
                raise bad(f"{field}={v} must be a power of two")
        if not 1 <= self.dm <= 128 or not 1 <= self.dn <= 128:
            raise bad("dm and dn must be 1..128")
        if self.dk < 64 or self.dram_bits < 32 or self.dram_bits > 4096:
            raise bad("dk must be >= 64 and the DRAM port 32..4096 bits")
        if self.bm > 65536 or self.bn > 65536 or self.bm < 4 or self.bn < 4:
            raise bad("bm and bn must be 4..65536 words")
        if self.dram_bits > self.dk:
            r = self.dram_bits // self.dk
            if self.dm % r or self.dn % r:
                raise bad(
                    f"a {self.dram_bits}-bit DRAM beat carries {r} words of {self.dk} bits: "
                    f"dm and dn must be multiples of {r}"
                )
        if self.dm * self.dk < self.dram_bits or self.dn * self.dk < self.dram_bits:
            raise bad("dm*dk and dn*dk must be at least the DRAM port width")
        if self.dram_bits < 128 and 128 % self.dram_bits:
            raise bad("the DRAM port must divide the 128-bit instruction")
        if not 1 <= self.max_bits <= 16:
            raise bad("max_bits must be 1..16")
        if self.clock_mhz <= 0 or self.dram_bytes_per_cycle <= 0 or self.dram_latency < 1:
            raise bad("clock, DRAM bandwidth and latency must be positive")
        if self.dram_pages is not None and self.dram_pages.row_bytes % self.beat_bytes:
            raise bad(f"a DRAM row of {self.dram_pages.row_bytes} B is not a multiple of the {self.beat_bytes}-B beat")

    @property
    def beat_bytes(self) -> int:
        return self.dram_bits // 8

    def rtl_parameters(self) -> dict[str, int]:
        return {"DM": self.dm, "DN": self.dn, "DK": self.dk, "BM": self.bm, "BN": self.bn, "DW": self.dram_bits}

    def harness_spec(self) -> HarnessSpec:
        return harness_spec(
            "bismo", "bismo_top", [SV_DIR / f for f in SV_FILES], MAIN_CPP, self.rtl_parameters()
        )

    def dram(self) -> DramConfig:
        return DramConfig(
            bytes_per_cycle=self.dram_bytes_per_cycle, latency=self.dram_latency, size=self.dram_size,
            pages=self.dram_pages,
        )

    def peak_binary_ops_per_cycle(self) -> int:
        return 2 * self.dm * self.dn * self.dk

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
