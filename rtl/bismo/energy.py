"""Counter-based energy model of the BISMO overlay. ALL CONSTANTS ARE ASSUMED.

There are no published per-event energies for BISMO. Following docs/ACCELERATORS.md we reuse the
45 nm figures of the public Bit Fusion simulator in the same counter-based form:

- array: 235.1 pJ per non-stalled cycle of Bit Fusion's 16x32-FU array (8192 BitBricks of 2b x 2b,
  i.e. 32,768 one-bit AND-and-add positions), scaled to BISMO by its DM*DN*DK one-bit positions
  per cycle: 235.1 * DM*DN*DK / 32768 pJ per array-busy cycle (117.55 pJ for 8x8x256);
- LHS (weight) buffers at Bit Fusion's WBUF cost (read 0.021, write 0.029 pJ/bit), RHS
  (activation) buffers at IBUF cost (0.059 / 0.114), DPU result memories at OBUF cost
  (0.033 / 0.073);
- DRAM 15 pJ/bit.

Events come from the RTL's counters: array-busy cycles (each reads DM + DN buffer words), buffer
words written by the fetch stage, result tiles (DM*DN*32 bits written into and read from the
result memories), DRAM bytes read and written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

BITFUSION_ARRAY_PJ = 235.1
BITFUSION_ONE_BIT_POSITIONS = 16 * 32 * 16 * 4  # FUs x BitBricks x 2b*2b


@dataclass(frozen=True)
class BismoEnergyModel:
    array_pj_per_cycle: float
    lhs_read_pj_bit: float = 0.021
    lhs_write_pj_bit: float = 0.029
    rhs_read_pj_bit: float = 0.059
    rhs_write_pj_bit: float = 0.114
    res_read_pj_bit: float = 0.033
    res_write_pj_bit: float = 0.073
    dram_pj_bit: float = 15.0
    label: str = "assumed: Bit Fusion 45 nm simulator constants, array scaled by one-bit positions"

    @classmethod
    def for_array(cls, dm: int, dn: int, dk: int) -> BismoEnergyModel:
        return cls(array_pj_per_cycle=BITFUSION_ARRAY_PJ * dm * dn * dk / BITFUSION_ONE_BIT_POSITIONS)

    def breakdown_pj(
        self,
        *,
        dm: int,
        dn: int,
        dk: int,
        array_cycles: int,
        lhs_words_written: int,
        rhs_words_written: int,
        result_tiles: int,
        dram_read_bytes: int,
        dram_write_bytes: int,
    ) -> dict[str, float]:
        tile_bits = dm * dn * 32
        lhs_read, rhs_read = array_cycles * dm * dk, array_cycles * dn * dk  # bits
        return {
            "array": array_cycles * self.array_pj_per_cycle,
            "lhs_buffer": lhs_read * self.lhs_read_pj_bit + lhs_words_written * dk * self.lhs_write_pj_bit,
            "rhs_buffer": rhs_read * self.rhs_read_pj_bit + rhs_words_written * dk * self.rhs_write_pj_bit,
            "result_memory": result_tiles * tile_bits * (self.res_read_pj_bit + self.res_write_pj_bit),
            "dram": (dram_read_bytes + dram_write_bytes) * 8 * self.dram_pj_bit,
        }

    def to_json(self) -> dict[str, object]:
        return asdict(self)
