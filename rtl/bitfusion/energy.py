"""Counter-based energy model of the Bit Fusion RTL.

Energy = array energy per non-stalled array cycle + buffer bits read / written x energy per bit
+ DRAM bits x energy per bit, with every count taken from the RTL's own counters.

Constants: 45 nm figures of the public Bit Fusion simulator, as listed in ACCELERATORS.md. The
235.1 pJ per cycle is for the whole 16 x 32 array regardless of precision; other array sizes are
scaled by their number of fusion units (our assumption).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

SOURCE = "Bit Fusion public simulator, 45 nm (ACCELERATORS.md); array term scaled by N*M/512 (assumed)"


@dataclass(frozen=True)
class EnergyConstants:
    array_pj_per_cycle: float = 235.1  # whole 16x32 array, one non-stalled cycle
    array_units: int = 512  # fusion units the array figure is for
    wbuf_read_pj_per_bit: float = 0.021
    wbuf_write_pj_per_bit: float = 0.029
    ibuf_read_pj_per_bit: float = 0.059
    ibuf_write_pj_per_bit: float = 0.114
    obuf_read_pj_per_bit: float = 0.033
    obuf_write_pj_per_bit: float = 0.073
    dram_pj_per_bit: float = 15.0


BITFUSION_45NM = EnergyConstants()


def energy_breakdown_uj(
    counters: Mapping[str, int], units: int, beat_bytes: int, k: EnergyConstants = BITFUSION_45NM
) -> dict[str, float]:
    """Energy in microjoules per component, and the total, from the RTL counters."""
    pj = {
        "array": counters["compute"] * k.array_pj_per_cycle * units / k.array_units,
        "wbuf": counters["wbuf_rd_bits"] * k.wbuf_read_pj_per_bit + counters["wbuf_wr_bits"] * k.wbuf_write_pj_per_bit,
        "ibuf": counters["ibuf_rd_bits"] * k.ibuf_read_pj_per_bit + counters["ibuf_wr_bits"] * k.ibuf_write_pj_per_bit,
        "obuf": counters["obuf_rd_bits"] * k.obuf_read_pj_per_bit + counters["obuf_wr_bits"] * k.obuf_write_pj_per_bit,
        # every beat crosses the interface in full (a partly used beat still costs its 192 bits)
        "dram": (counters["rd_beats"] + counters["wr_beats"]) * beat_bytes * 8 * k.dram_pj_per_bit,
    }
    out = {name: v * 1e-6 for name, v in pj.items()}
    out["total"] = sum(out.values())
    return out


def constants_json(k: EnergyConstants = BITFUSION_45NM) -> dict[str, object]:
    return {"source": SOURCE, **asdict(k)}
