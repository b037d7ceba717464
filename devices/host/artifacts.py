"""What the host builds for backends that time host-built models (`HostBuiltModels`): today the
TFLite backend's converted models. In-process the backend reads them from the builder itself; over
SSH the target pushes the files `host_artifacts` names and the agent hands their remote paths on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hil.devices.agent.tflite_backend import ModelSource
from hil.devices.host.tflite_convert import ConverterCache
from hil.errors import ConfigError
from hil.measure import MeasureSettings
from hil.workload import Workload

# backend name -> the host's model builder for it
MODEL_SOURCES: dict[str, Callable[[], ModelSource]] = {"tflite": ConverterCache}


def model_source(backend: str) -> ModelSource:
    try:
        return MODEL_SOURCES[backend]()
    except KeyError:
        raise ConfigError(f"backend {backend!r} times host-built models, but this host has no builder "
                          f"for it (known: {', '.join(sorted(MODEL_SOURCES))})") from None


def host_artifacts(source: ModelSource, workload: Workload, settings: MeasureSettings) -> dict[str, Path]:
    """The files a target needs to time `workload`: the model (built now if not cached) and its
    metadata (which converter made it). A build that fails raises MeasureFailure; the SSH target turns
    it into that workload's failed record and goes on with the rest."""
    model = source.model_path(workload, settings.precision, settings.batch)
    files = {"model": model}
    meta = model.with_suffix(".json")
    if meta.is_file():
        files["meta"] = meta
    return files
