"""What the BISMO and Bit Fusion drivers share: operand range checks, power-of-two checks, and
starting an accelerator's cached Verilator harness."""

from __future__ import annotations

import dataclasses
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from hil.errors import ConfigError
from hil.rtl import pgo
from hil.rtl.interface import RegisterInterface
from hil.rtl.sim_harness import DramConfig
from hil.rtl.verilator_build import HarnessSpec


def pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


def check_range(x: np.ndarray, bits: int, signed: bool, what: str) -> None:
    """Refuse operands outside the `bits`-bit (un)signed range, naming `what`."""
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if x.size and (int(x.min()) < lo or int(x.max()) > hi):
        kind = "signed" if signed else "unsigned"
        raise ConfigError(
            f"{what}: values span {int(x.min())}..{int(x.max())}, outside the {kind} {bits}-bit range {lo}..{hi}"
        )


class HarnessDriver:
    """Set-up shared by the accelerator drivers: the configuration, the register interface (the
    native harness of the configuration's RTL unless one is given, e.g. a board's), and a check that
    the hardware behind it is the configured one. Subclasses give `_harness_spec` and `_check_hardware`.

    The native harness is built and started on the first use of `regs`, not here: the fingerprint
    (`describe`, `build`) needs only the spec, so a `hil lut build` whose entries are all in the store
    (simulated on another CPU, or before a switch to PGO) builds no harness at all."""

    def __init__(self, cfg: Any, regs: RegisterInterface | None = None, max_cycles: int | None = None) -> None:
        self.cfg = cfg
        self.name: str = cfg.name
        self.clock_mhz: float = cfg.clock_mhz
        self.max_cycles = max_cycles
        self._describe: dict[str, Any] = {}
        # Which binary simulates (cache folder, PGO or not): a record's provenance, not its class.
        self.build: dict[str, Any] = {}
        self._regs = regs
        self._spec: HarnessSpec | None = None
        if regs is None:
            self._spec = self._trained(self._harness_spec())
            self._describe = model_facts(self._spec)
            self.build = {"harness": f"{self._spec.name}-{self._spec.digest()}", "pgo": self._spec.pgo()}
        else:
            self._check_hardware()

    @property
    def spec(self) -> HarnessSpec | None:
        """The harness this driver builds and starts (with its PGO training); None when it was given
        its registers."""
        return self._spec

    @property
    def regs(self) -> RegisterInterface:
        if self._regs is None:
            self.start()
        assert self._regs is not None
        return self._regs

    def start(self) -> None:
        """Build (or take from the cache) and start the native harness now, if it is not up yet."""
        if self._regs is not None:
            return
        assert self._spec is not None
        regs = start_harness(self._spec, self.cfg.dram(), self.cfg.name)
        self._regs = regs
        try:
            self._check_hardware()
        except BaseException:
            self._regs = None
            regs.close()
            raise

    def _harness_spec(self) -> HarnessSpec:
        raise NotImplementedError

    def _trained(self, spec: HarnessSpec) -> HarnessSpec:
        """`spec` with this driver's PGO training (used only under $HIL_RTL_PGO=1; rtl/pgo.py), keyed
        by the workload's and this driver's source."""
        source = Path(sys.modules[type(self).__module__].__file__ or "")
        return dataclasses.replace(spec, train=partial(_train, type(self), self.cfg),
                                   train_key=pgo.train_key(spec.name, source))

    def _check_hardware(self) -> None:
        raise NotImplementedError

    def _expect_registers(self, kind: str, ident: tuple[int, int], fields: dict[str, tuple[int, int]]) -> None:
        """Refuse hardware whose ID register (index, value) or parameter registers ({what: (index,
        value)}) differ from the configuration (e.g. a harness built for another configuration)."""
        from hil.errors import DeviceError

        reg, want = ident
        got = self.regs.read_reg(reg)
        if got != want:
            raise DeviceError(self.name, f"register {reg} reads 0x{got:08x}, not the {kind} id 0x{want:08x}")
        for what, (reg, want) in fields.items():
            got = self.regs.read_reg(reg)
            if got != want:
                raise DeviceError(self.name, f"the hardware has {what} = {got}, the configuration says {want}")

    def close(self) -> None:
        if self._regs is not None:
            self._regs.close()


def _train(driver: type[HarnessDriver], cfg: Any, exe: Path) -> None:
    """PGO training: the driver on the instrumented harness `exe`, through rtl/pgo.py's workload."""
    from hil.rtl.sim_harness import SimHarness

    regs = SimHarness(exe, cfg.dram(), name=f"{cfg.name}-pgo-training")
    try:
        acc = driver(cfg, regs)
    except BaseException:
        regs.close()
        raise
    try:
        pgo.drive(acc)
    finally:
        acc.close()


def model_facts(spec: HarnessSpec) -> dict[str, Any]:
    """The build facts that go into the accelerator's fingerprint class. They name the simulated
    machine (`model_digest`), not the binary: a table simulated on another CPU, or by a PGO build, has
    the same cycles and so the same class. Nothing is built."""
    from hil.rtl.verilator_build import verilator_version

    return {"rtl_hash": spec.model_digest(), "verilator": verilator_version(), "substrate": "verilator"}


def start_harness(spec: HarnessSpec, dram: DramConfig, name: str) -> RegisterInterface:
    """Build (or reuse from the cache) the harness of `spec` and start it."""
    from hil.rtl.sim_harness import SimHarness
    from hil.rtl.verilator_build import build_harness

    return SimHarness(build_harness(spec), dram, name=name)
