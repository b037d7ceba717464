"""The register interface every accelerator driver talks to: MMIO registers and DRAM buffers.

On a board it is PYNQ's (`pynq.MMIO` + `pynq.allocate`); without one it is the native Verilator
harness of the same RTL. The driver code above this seam is identical for both, which is what makes
the simulated device a drop-in substitute for the board.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class RegisterInterface(Protocol):
    def write_reg(self, index: int, value: int) -> None:
        """Write a 32-bit register (index in 32-bit words)."""
        ...

    def read_reg(self, index: int) -> int: ...

    def write_mem(self, addr: int, data: np.ndarray) -> None:
        """Copy bytes into accelerator-visible DRAM at byte address `addr`."""
        ...

    def read_mem(self, addr: int, nbytes: int) -> np.ndarray:
        """Read bytes back from accelerator DRAM (uint8 array)."""
        ...

    def run_until_done(self, max_cycles: int) -> int:
        """Let the accelerator run until it raises done; the cycles it took. Raises past max_cycles.

        On a board this polls the status register; in simulation the harness runs the clock itself.
        """
        ...

    def close(self) -> None: ...
