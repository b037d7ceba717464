"""The device manager: inventory device names to Targets, with settings from the inventory."""

from __future__ import annotations

import importlib
from dataclasses import replace

from hil.errors import ConfigError
from hil.inventory import Device, Inventory
from hil.measure import MeasureSettings
from hil.target import Target


def settings_for(device: Device, base: MeasureSettings | None = None, batch: int | None = None) -> MeasureSettings:
    """Protocol settings for a device: the inventory's threads, batch and precision over the defaults."""
    s = base or MeasureSettings()
    return replace(s, threads=device.threads, batch=batch if batch is not None else device.batch,
                   precision=device.precision)


def _load(spec: str) -> type:
    module, cls = spec.split(":")
    return getattr(importlib.import_module(module), cls)


def open_target(inventory: Inventory, name: str) -> Target:
    """Connect to a device. Remote devices get the SSH agent; rtl-sim the Verilator simulation."""
    dev = inventory.device(name)
    if dev.backend == "rtl-sim":
        return _load("hil.devices.rtl_sim:RtlSimTarget")(name, dev)
    if dev.ssh is not None:
        return _load("hil.devices.ssh_target:SshTarget")(name, dev)
    if dev.backend == "pynq":
        raise ConfigError(f"device {name!r}: a PYNQ board is reached over SSH; add an 'ssh:' section")
    from hil.devices.local import LocalTarget
    from hil.devices.registry import make_backend

    return LocalTarget(name, make_backend(dev.backend), dev.cpus)
