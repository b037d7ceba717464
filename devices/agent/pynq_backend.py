"""The `pynq` backend: our accelerator's overlay on a PYNQ board, timed by its own cycle counters.

It runs inside the pushed agent on the board. `configure` takes the inventory's `rtl:` section
(`accelerator`, `bitstream`, optional `ip`, `overrides`), loads the overlay with `pynq.Overlay` and
drives it with the same driver as the Verilator simulation (hil.rtl.bus.PynqBus under
hil.rtl.bus.BusRegisters). A workload's latency is the accelerator's TOTAL counter, read over MMIO,
at the fabric clock the overlay reports (`pynq.Clocks.fclk0_mhz`); the wall clock of each run is
recorded beside it as a check, never as the latency. Records say `provenance: board`.

Without PYNQ in this Python, without a board ("No Devices Found"), or without the bitstream,
`configure` raises NoBoardError and the agent answers `no_board`: no numbers are made up here, and
the host decides whether a substitute may stand in.

Agent-side code: standard library, the bundle, numpy and PYNQ (imported only in `configure`).
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any

from hil.devices.agent.backend import MeasureFailure
from hil.errors import NoBoardError
from hil.measure import MeasureSettings, Stats, summarize
from hil.workload import Gemm, Network, QuantLayer, Workload

PROVENANCE = "board"
# The DRAM window one `pynq.allocate` buffer gives the accelerator. The simulation's 1 GiB address
# space is virtual; a PYNQ-Z1 has 512 MiB of RAM and a smaller CMA pool, so a board gets this much
# unless the inventory overrides `dram_size`. The driver refuses work that does not fit ("split the
# batch"), and the fingerprint records the size.
BOARD_DRAM_WINDOW = 128 << 20


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _dram_bytes(cfg: Any) -> int:
    return int(getattr(cfg, "dram_size", 0) or cfg.dram().size)


class PynqBackend:
    name = "pynq"
    provenance = PROVENANCE

    def __init__(self) -> None:
        self.acc: Any = None
        self.bus: Any = None  # hil.rtl.bus.PynqBus once configured
        self.info: dict[str, Any] = {}

    def configure(self, options: dict[str, Any]) -> None:
        """Load the overlay named by the inventory's `rtl:` section; NoBoardError when there is no board."""
        rtl = dict(options.get("rtl") or {})
        preset = str(rtl.get("accelerator") or "")
        bitstream = rtl.get("bitstream")
        if not preset or not bitstream:
            raise NoBoardError("the device's 'rtl:' section names no accelerator and bitstream")
        bitstream = os.path.expanduser(str(bitstream))
        # PYNQ first: a board's Python without it (or without numpy) is "no board", and the driver
        # below needs numpy, which PYNQ brings.
        try:
            import pynq  # type: ignore[import-not-found]
        except ImportError as e:
            raise NoBoardError(f"PYNQ is not installed in {sys.executable} ({e})") from None
        from hil.rtl.bus import BusRegisters, PynqBus
        from hil.rtl.presets import make_accelerator, preset_config
        from hil.rtl.regmap import family

        overrides = dict(rtl.get("overrides") or {})
        cfg = preset_config(preset, overrides)
        window = int(overrides.get("dram_size") or min(_dram_bytes(cfg), BOARD_DRAM_WINDOW))
        if hasattr(cfg, "dram_size"):
            overrides["dram_size"] = window
            cfg = preset_config(preset, overrides)
        self.bus = PynqBus(str(bitstream), family(preset), ip=rtl.get("ip"))
        # The driver's own identity checks (ID and parameter registers) run here, against the board.
        self.acc = make_accelerator(preset, overrides, regs=BusRegisters(self.bus, window))
        self.info = {
            "runtime": "pynq", "pynq": getattr(pynq, "__version__", "unknown"), "accelerator": preset,
            "config": cfg.to_json(), "bitstream": str(bitstream), "bitstream_sha256": _sha256(str(bitstream)),
            "ip": self.bus.name, "clock_mhz": self.bus.clock_mhz(), "dram_window_bytes": window,
        }

    def runtime_info(self, settings: MeasureSettings) -> dict[str, Any]:
        if self.acc is None:
            raise NoBoardError("no overlay loaded")
        return dict(self.info)

    def _run(self, w: Workload, batch: int) -> Any:
        from hil.rtl.accelerator import NetworkRunner

        if isinstance(w, QuantLayer):
            return self.acc.layer(w, batch)
        if isinstance(w, Gemm):
            return self.acc.time_gemm(w.m, w.k, w.n, w.wbits, w.abits, w.wsigned, w.asigned)
        if isinstance(w, Network) and all(isinstance(x, QuantLayer) for x in w.layers):
            if not isinstance(self.acc, NetworkRunner):
                raise MeasureFailure("unsupported", f"{self.info.get('accelerator')} cannot run whole networks yet")
            return self.acc.network(list(w.layers), batch)
        raise MeasureFailure("unsupported", f"pynq runs quantized layers, GEMMs and networks of them, not {w.kind!r}")

    def measure_one(self, workload: Workload, settings: MeasureSettings) -> tuple[Stats, dict[str, Any]]:
        if self.acc is None or self.bus is None:
            raise NoBoardError("no overlay loaded")
        mhz = self.bus.clock_mhz()
        cycles, wall_ms, last = [], [], None
        for _ in range(max(1, settings.min_repeats)):
            last = self._run(workload, settings.batch)
            cycles.append(last.cycles)
            wall_ms.append(self.bus.last_wall_s * 1e3)
        stats = summarize([c / (mhz * 1e3) for c in cycles])
        metrics = {**last.to_json(), "clock_mhz": mhz, "cycles_runs": cycles, "wall_ms_runs": wall_ms,
                   "latency_source": "accelerator TOTAL counter over MMIO at the overlay clock"}
        return stats, metrics
