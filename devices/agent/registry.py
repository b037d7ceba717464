"""Backend names to implementations, imported lazily so a host needs only the runtimes it uses."""

from __future__ import annotations

import importlib
from typing import Any

from hil.devices.agent.backend import Backend
from hil.errors import ConfigError

# name -> "module:Class" (modules under hil.devices)
BACKENDS = {
    "torch-cpu": "hil.devices.agent.torch_cpu:TorchCpuBackend",
    "torch-cuda": "hil.devices.agent.torch_cuda:TorchCudaBackend",
    "tflite": "hil.devices.agent.tflite_backend:TfliteBackend",
    "pynq": "hil.devices.agent.pynq_backend:PynqBackend",
}


def make_backend(name: str, options: dict[str, Any] | None = None) -> Backend:
    """The backend `name`, configured with the device's options (`Device.backend_options()`: a board's
    `rtl:`, a GPU's `cuda:`) if it takes any; the same here and in a remote agent."""
    try:
        spec = BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r} (known: {', '.join(sorted(BACKENDS))})") from None
    module, cls = spec.split(":")
    backend = getattr(importlib.import_module(module), cls)()
    configure = getattr(backend, "configure", None)
    if configure is not None:
        configure(dict(options or {}))
    return backend
