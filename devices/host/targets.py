"""Opening targets: an inventory device name to a Target (in-process, over SSH, or the Verilator
simulation), with its substitute when the device is absent, and its protocol settings from the
inventory."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from hil.devices.agent.backend import Backend, HostBuiltModels
from hil.devices.agent.host_info import memory_available_bytes
from hil.devices.agent.local import LocalTarget
from hil.devices.agent.registry import make_backend
from hil.devices.host.artifacts import model_source
from hil.devices.host.rtl_sim import RtlSimTarget
from hil.devices.host.ssh_target import SshTarget
from hil.devices.host.ssh_transport import DeviceConfigError
from hil.errors import ConfigError, DeviceError
from hil.inventory import Device, Inventory
from hil.measure import Measurement, MeasureSettings
from hil.nets.memory import values_held
from hil.rtl.presets import preset_config
from hil.target import Target
from hil.workload import Workload


def settings_for(device: Device, base: MeasureSettings | None = None, batch: int | None = None,
                 clock: str | None = None) -> MeasureSettings:
    """Protocol settings for a device: the inventory's threads, batch, precision and clock over the
    defaults; `batch` and `clock` (command-line options) override the inventory."""
    s = base or MeasureSettings()
    return replace(s, threads=device.threads, batch=batch if batch is not None else device.batch,
                   precision=device.precision, clock=clock or device.clock)


def open_target(inventory: Inventory, name: str, notify: Callable[[str], None] | None = None,
                allow_substitute: bool = False) -> Target:
    """Connect to a device, or to its substitute when it is absent and substitution is allowed.

    Remote devices get the SSH agent; rtl-sim the Verilator simulation. A device is absent when it
    can't be reached, or when it answers but its board is not there (no PYNQ, no device, no
    bitstream). Its `substitute` (a PYNQ board and the RTL simulation of its overlay) stands in only
    with `allow_substitute` (the command line's --allow-substitute) or the device's own
    `allow_substitute: true`; otherwise the absence is one error line that says how to allow it. The
    substitute's records carry its own name, `provenance: simulated` and `substitute_for`, so nothing
    measured on it is ever mistaken for (or mixed into a LUT with) the board's.
    """
    dev = inventory.device(name)
    if dev.substitute is None:
        return _open(inventory, name)
    try:
        return _open(inventory, name)
    except DeviceError as e:
        if isinstance(e, ConfigError):
            raise
        reason = absence_reason(e)
        if not (allow_substitute or dev.allow_substitute):
            raise DeviceConfigError(name, f"absent ({reason}); its substitute {dev.substitute!r} may stand in "
                                    "only with --allow-substitute or 'allow_substitute: true' in the inventory"
                                    ) from None
        (notify or _stderr)(f"device {name!r} is absent ({reason}); its substitute {dev.substitute!r} stands in")
        return SubstituteTarget(_open(inventory, dev.substitute), name, reason)


def absence_reason(e: DeviceError) -> str:
    """Why a device is absent, without the leading "device 'x': " of its error."""
    prefix = f"device {e.device!r}: "
    text = str(e)
    return text[len(prefix):] if text.startswith(prefix) else text


class SubstituteTarget:
    """A target standing in for an absent device: every record and the fingerprint's state say for
    whom (`substitute_for`) and why. The fingerprint class stays the substitute's own, so its LUT is
    the simulation's, never the board's."""

    def __init__(self, inner: Target, substitute_for: str, reason: str) -> None:
        self.inner = inner
        self.name = inner.name
        self.provenance = inner.provenance
        self.substitute_for = substitute_for
        self.reason = reason

    def describe(self, settings: MeasureSettings) -> dict[str, Any]:
        fp = self.inner.describe(settings)
        return {"class": fp["class"], "state": {**fp.get("state", {}), "substitute_for": self.substitute_for}}

    def measure(self, workloads: Sequence[Workload], settings: MeasureSettings) -> Iterator[Measurement]:
        for m in self.inner.measure(workloads, settings):
            m.fingerprint = {"class": m.fingerprint["class"],
                             "state": {**m.fingerprint.get("state", {}), "substitute_for": self.substitute_for}}
            m.metrics = {**(m.metrics or {}), "substitute_for": self.substitute_for,
                         "substitute_reason": self.reason}
            yield m

    def __getattr__(self, attr: str) -> Any:  # leases, ping: the substitute's own
        return getattr(self.inner, attr)

    def close(self) -> None:
        self.inner.close()


def check_device_config(name: str, device: Device) -> None:
    """The rules `open_target` applies to a device's entry before contacting anything, beyond what
    the inventory's own schema checks: what `hil inventory check` runs for every device."""
    if device.rtl is not None:
        try:
            preset_config(device.rtl.accelerator, device.rtl.overrides)
        except ConfigError as e:
            raise ConfigError(f"device {name!r}, field 'rtl': {e}") from None


def check_fits(name: str, device: Device, workloads: Iterable[Workload], batch: int) -> None:
    """Refuse work that cannot fit in this host's memory before anything is allocated or measured (a
    huge batch or resolution would otherwise grow until the kernel kills the process). Only devices
    that run in this process are checked: a remote target's memory is its own."""
    if device.ssh is not None or device.backend == "rtl-sim":
        return
    held = [(values_held(w, batch), w) for w in workloads]
    if not held:
        return
    values, worst = max(held, key=lambda x: x[0])
    need = 4 * values  # float32; int8 models need less, so this never refuses what would fit
    limit = memory_available_bytes() // 2  # the runtime, rotated copies and the rest need room too
    if need > limit:
        raise ConfigError(
            f"device {name!r}: {worst.key} at batch {batch} holds about {need / 2**30:.1f} GiB of tensors; the "
            f"limit is half of this host's available memory, {limit / 2**30:.1f} GiB: lower --batch or --resolution")


def _stderr(msg: str) -> None:
    print(f"hil: {msg}", file=sys.stderr)


def _open(inventory: Inventory, name: str) -> Target:
    dev = inventory.device(name)
    check_device_config(name, dev)
    if dev.backend == "rtl-sim":
        return RtlSimTarget(name, dev)
    if dev.ssh is not None:
        return SshTarget(name, dev)
    if dev.backend == "pynq":  # the inventory guarantees an ssh: section for pynq
        raise ConfigError(f"device {name!r}: a PYNQ board is reached over SSH; add an 'ssh:' section")
    return LocalTarget(name, local_backend(dev.backend, dev.backend_options()), dev.cpus)


def local_backend(name: str, options: dict[str, Any] | None = None) -> Backend:
    """A backend to run in this process, configured with the device's `options` as a remote agent
    would be. One that times host-built models gets this host's builder as its model source: here the
    host and the target are the same machine."""
    backend = make_backend(name, options)
    if isinstance(backend, HostBuiltModels):
        backend.use_model_source(model_source(name))
    return backend
