"""The device manager: inventory device names to Targets, with settings from the inventory."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import replace

from hil.errors import ConfigError, DeviceError
from hil.inventory import Device, Inventory
from hil.measure import MeasureSettings
from hil.target import Target


def settings_for(device: Device, base: MeasureSettings | None = None, batch: int | None = None,
                 clock: str | None = None) -> MeasureSettings:
    """Protocol settings for a device: the inventory's threads, batch, precision and clock over the
    defaults; `batch` and `clock` (command-line options) override the inventory."""
    s = base or MeasureSettings()
    return replace(s, threads=device.threads, batch=batch if batch is not None else device.batch,
                   precision=device.precision, clock=clock or device.clock)


def _load(spec: str) -> type:
    module, cls = spec.split(":")
    return getattr(importlib.import_module(module), cls)


def open_target(inventory: Inventory, name: str, notify: Callable[[str], None] | None = None) -> Target:
    """Connect to a device, or to its substitute when it is absent.

    Remote devices get the SSH agent; rtl-sim the Verilator simulation. A device whose inventory entry
    names a `substitute` (a PYNQ board and the RTL simulation of its overlay) falls back to it when the
    device itself can't be reached; the substitute's records carry its own name and provenance, so
    nothing measured on it is ever mistaken for the board's.
    """
    dev = inventory.device(name)
    if dev.substitute is None:
        return _open(inventory, name)
    try:
        return _open(inventory, name)
    except DeviceError as e:
        if isinstance(e, ConfigError):
            raise
        (notify or _stderr)(f"device {name!r} is absent ({e}); its substitute {dev.substitute!r} stands in")
        target = _open(inventory, dev.substitute)
        target.substitute_for = name  # type: ignore[attr-defined]
        return target


def _stderr(msg: str) -> None:
    print(f"hil: {msg}", file=sys.stderr)


def _open(inventory: Inventory, name: str) -> Target:
    dev = inventory.device(name)
    if dev.backend == "rtl-sim":
        return _load("hil.devices.rtl_sim:RtlSimTarget")(name, dev)
    if dev.ssh is not None:
        return _load("hil.devices.ssh_target:SshTarget")(name, dev)
    if dev.backend == "pynq":  # the inventory guarantees an ssh: section for pynq
        raise ConfigError(f"device {name!r}: a PYNQ board is reached over SSH; add an 'ssh:' section")
    from hil.devices.local import LocalTarget
    from hil.devices.registry import make_backend

    return LocalTarget(name, make_backend(dev.backend), dev.cpus)
