"""One driver, two buses: what an accelerator driver needs from the hardware, and two providers.

A `Bus` is the accelerator's control register block plus DRAM the accelerator can reach:

- `VerilatorBus`: the native Verilator harness (hil.rtl.sim_harness) of our RTL, today's path;
- `PynqBus`: a board, through PYNQ's own API: `pynq.Overlay(bitfile)`, the IP's `MMIO`
  (`read`/`write` at byte offset 4 x index), `pynq.allocate` buffers with `.physical_address`,
  `flush()` and `invalidate()`. `pynq` is imported only when a PynqBus is made.

`BusRegisters` turns a bus into the `RegisterInterface` the drivers (hil.rtl.bismo.driver,
hil.rtl.bitfusion.driver) already speak: one DRAM window the size of the configuration's DRAM,
allocated once; the drivers' 0-based DRAM addresses are offsets in it. On a board the AXI shell
(docs/PYNQ.md, rtl/regmap.py `SHELL`) adds the window's physical address to every master address;
in simulation the window starts at address 0, so the drivers' cycle counts are exactly today's.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from hil.errors import DeviceError, NoBoardError
from hil.rtl.regmap import SHELL, RegisterMap

PAGE = 4096
__all__ = ["Bus", "BusRegisters", "DramBuffer", "NoBoardError", "PynqBus", "VerilatorBus"]


class DramBuffer(Protocol):
    """Accelerator-visible memory: `physical_address` is what the accelerator's master puts on the bus."""

    physical_address: int
    nbytes: int

    def write(self, offset: int, data: np.ndarray | bytes) -> None: ...

    def read(self, offset: int, nbytes: int) -> np.ndarray: ...

    def flush(self) -> None:
        """Make CPU writes visible to the accelerator (cache write-back)."""
        ...

    def invalidate(self) -> None:
        """Make the accelerator's writes visible to the CPU (drop stale cache lines)."""
        ...


class Bus(Protocol):
    def read_reg(self, index: int) -> int: ...

    def write_reg(self, index: int, value: int) -> None: ...

    def allocate(self, nbytes: int) -> DramBuffer: ...

    def wait_done(self, max_cycles: int) -> int:
        """Wait for the accelerator's done; the cycles it ran. Raises past `max_cycles`."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------- Verilator


class _HarnessBuffer:
    """A window of the harness's DRAM model. The model is the memory the RTL reads, with no cache in
    between, so flush and invalidate have nothing to do."""

    def __init__(self, harness: Any, physical_address: int, nbytes: int) -> None:
        self._h = harness
        self.physical_address = physical_address
        self.nbytes = nbytes

    def _check(self, offset: int, n: int) -> None:
        if offset < 0 or offset + n > self.nbytes:
            raise DeviceError(self._h.name, f"DRAM access {offset:#x}+{n} outside a {self.nbytes}-byte buffer")

    def write(self, offset: int, data: np.ndarray | bytes) -> None:
        raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        self._check(offset, len(raw))
        self._h.write_mem(self.physical_address + offset, raw)

    def read(self, offset: int, nbytes: int) -> np.ndarray:
        self._check(offset, nbytes)
        return self._h.read_mem(self.physical_address + offset, nbytes)

    def flush(self) -> None:
        pass

    def invalidate(self) -> None:
        pass


class VerilatorBus:
    """The native harness as a Bus. Buffers are handed out from address 0 up, page-aligned, so a
    single window of the whole DRAM is exactly the address space the drivers use today."""

    def __init__(self, harness: Any) -> None:
        self.harness = harness
        self.name = harness.name
        self._next = 0

    def read_reg(self, index: int) -> int:
        return self.harness.read_reg(index)

    def write_reg(self, index: int, value: int) -> None:
        self.harness.write_reg(index, value)

    def read_regs(self, indices: list[int]) -> list[int]:
        return self.harness.read_regs(indices)  # one pipe round trip for many reads

    def allocate(self, nbytes: int) -> DramBuffer:
        base = self._next
        if base + nbytes > self.harness.mem_bytes:
            raise DeviceError(self.name, f"cannot allocate {nbytes} bytes: the DRAM model has "
                              f"{self.harness.mem_bytes - base} left")
        self._next = -(-(base + nbytes) // PAGE) * PAGE
        return _HarnessBuffer(self.harness, base, nbytes)

    def wait_done(self, max_cycles: int) -> int:
        return self.harness.run_until_done(max_cycles)

    def reset(self) -> None:
        self.harness.reset()

    def close(self) -> None:
        self.harness.close()


# ---------------------------------------------------------------------------------- PYNQ


def import_pynq() -> Any:
    """PYNQ, or NoBoardError saying it is not installed in this Python."""
    import sys

    try:
        import pynq  # type: ignore[import-not-found]
    except ImportError as e:
        raise NoBoardError(f"PYNQ is not installed in {sys.executable} ({e})") from None
    return pynq


class PynqBus:
    """A board: the overlay's accelerator IP over MMIO, DRAM from `pynq.allocate`.

    `wait_done` polls the status register; the cycles are the accelerator's own TOTAL counter, read
    over MMIO (the wall clock of the wait is kept in `last_wall_s` as a check, never as the timing).
    """

    def __init__(self, bitstream: str, regmap: RegisterMap, ip: str | None = None, poll_s: float = 1e-4) -> None:
        import os

        pynq = import_pynq()
        if not os.path.isfile(bitstream):
            raise NoBoardError(f"bitstream {bitstream} not found on the board")
        try:
            self.overlay = pynq.Overlay(bitstream)
        except RuntimeError as e:  # PYNQ's "No Devices Found": a PC, not a board
            raise NoBoardError(f"PYNQ finds no board: {e}") from None
        except (OSError, ValueError) as e:
            raise NoBoardError(f"cannot load overlay {bitstream}: {e}") from None
        self._pynq = pynq
        self.regmap = regmap
        self.name = ip or self._find_ip(regmap)
        self.mmio = getattr(self.overlay, self.name).mmio
        self.poll_s = poll_s
        self.last_wall_s = 0.0
        self._buffers: list[Any] = []

    def _find_ip(self, regmap: RegisterMap) -> str:
        names = [n for n in self.overlay.ip_dict if regmap.top in n or regmap.accelerator in n]
        if len(names) != 1:
            raise NoBoardError(f"overlay has {len(names)} IPs named like {regmap.top!r} "
                               f"(IPs: {', '.join(self.overlay.ip_dict) or 'none'}); name one")
        return names[0]

    def clock_mhz(self) -> float:
        """The fabric clock the overlay set (PL clock 0), at which the counters count."""
        return float(self._pynq.Clocks.fclk0_mhz)

    def read_reg(self, index: int) -> int:
        return int(self.mmio.read(4 * index))

    def write_reg(self, index: int, value: int) -> None:
        self.mmio.write(4 * index, int(value) & 0xFFFFFFFF)

    def allocate(self, nbytes: int) -> DramBuffer:
        buf = self._pynq.allocate(shape=(nbytes,), dtype=np.uint8)
        self._buffers.append(buf)
        return _PynqBuffer(buf)

    def wait_done(self, max_cycles: int) -> int:
        m = self.regmap
        limit_s = max_cycles / (self.clock_mhz() * 1e6) + 1.0
        t0 = time.perf_counter()
        while not self.read_reg(m.status_reg) >> m.done_bit & 1:
            if time.perf_counter() - t0 > limit_s:
                raise DeviceError(self.name, f"the accelerator did not raise done within {max_cycles:,} cycles")
            time.sleep(self.poll_s)
        self.last_wall_s = time.perf_counter() - t0
        total = m.counter(m.total_counter).index
        return self.read_reg(total) | self.read_reg(total + 1) << 32

    def close(self) -> None:
        for b in self._buffers:
            b.freebuffer()
        self._buffers.clear()


class _PynqBuffer:
    def __init__(self, buf: Any) -> None:
        self._b = buf
        self.physical_address = int(buf.physical_address)
        self.nbytes = int(buf.nbytes)

    def _check(self, offset: int, n: int) -> None:
        # a numpy slice past the end would silently shorten the copy
        if offset < 0 or offset + n > self.nbytes:
            raise DeviceError("pynq", f"DRAM access {offset:#x}+{n} outside the {self.nbytes}-byte buffer")

    def write(self, offset: int, data: np.ndarray | bytes) -> None:
        raw = np.frombuffer(data.tobytes() if isinstance(data, np.ndarray) else bytes(data), dtype=np.uint8)
        self._check(offset, len(raw))
        self._b[offset : offset + len(raw)] = raw

    def read(self, offset: int, nbytes: int) -> np.ndarray:
        self._check(offset, nbytes)
        return np.array(self._b[offset : offset + nbytes], dtype=np.uint8)

    def flush(self) -> None:
        self._b.flush()

    def invalidate(self) -> None:
        self._b.invalidate()


# ---------------------------------------------------------------------------------- adapter


class BusRegisters:
    """The drivers' RegisterInterface over any Bus, with one DRAM window of `dram_bytes`.

    Writes are flushed as they are made and reads invalidated first, so the same driver code is
    correct on a cached board and costs nothing extra in simulation."""

    def __init__(self, bus: Bus, dram_bytes: int) -> None:
        self.bus = bus
        self.window = bus.allocate(dram_bytes)
        if self.window.physical_address:  # a board: tell the AXI shell where the window is
            lo, hi = SHELL
            bus.write_reg(lo.index, self.window.physical_address & 0xFFFFFFFF)
            bus.write_reg(hi.index, self.window.physical_address >> 32)
        self.name = getattr(bus, "name", "bus")

    def write_reg(self, index: int, value: int) -> None:
        self.bus.write_reg(index, value)

    def read_reg(self, index: int) -> int:
        return self.bus.read_reg(index)

    def read_regs(self, indices: list[int]) -> list[int]:
        batch = getattr(self.bus, "read_regs", None)
        return batch(indices) if batch else [self.bus.read_reg(i) for i in indices]

    def write_mem(self, addr: int, data: np.ndarray) -> None:
        self.window.write(addr, data)
        self.window.flush()

    def read_mem(self, addr: int, nbytes: int) -> np.ndarray:
        self.window.invalidate()
        return self.window.read(addr, nbytes)

    def run_until_done(self, max_cycles: int) -> int:
        return self.bus.wait_done(max_cycles)

    def reset(self) -> None:
        reset = getattr(self.bus, "reset", None)
        if reset:
            reset()

    def close(self) -> None:
        self.bus.close()
