"""tflite backend: `.tflite` models timed with the LiteRT interpreter (the phone path).

Where the model comes from depends on where the backend runs:
- in-process (`LocalTarget`), the host hands the backend its converter (`use_model_source` with
  `hil.devices.host.tflite_convert.ConverterCache`: tensorflow is a host-side dependency, never
  imported here);
- in the remote agent on a phone or any SSH host, the host built the models beforehand
  (`hil.devices.host.artifacts.host_artifacts`), the SSH target pushed them over SFTP, and the agent
  hands their remote paths to `use_artifacts` before measuring. The target needs LiteRT only
  (`ai-edge-litert`, or the older `tflite-runtime` where that is all it has). Beside each model goes
  its sidecar (`meta`: which converter made it).

Threads (`num_threads`, default 1 like the phone figures in the literature) and CPU affinity are
applied and recorded in the fingerprint. By default a block is timed with cold caches (invocations
rotate over copies of the model that together exceed twice the L2), as it runs inside a network.
LiteRT's default op resolver applies the XNNPACK delegate on CPU, as the Android and iOS
interpreters do by default; that is what we time.

Agent-side code: standard library, numpy (which LiteRT itself needs) and the runtime.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hil.devices.agent.backend import MeasureFailure, Prepared, measure_prepared
from hil.devices.agent.host_info import affinity, l2_cache_bytes, rotation_copies
from hil.measure import MeasureSettings, Stats
from hil.workload import Workload


def _footprint(interp: Any) -> int:
    """Bytes the interpreter touches: every tensor (weights and activations) at its declared size."""
    total = 0
    for t in interp.get_tensor_details():
        n = 1
        for d in t["shape"]:
            n *= max(int(d), 1)
        total += n * _itemsize(t["dtype"])
    return total


def _itemsize(dtype: Any) -> int:
    import numpy as np

    return int(np.dtype(dtype).itemsize)


# Runtime packages in order of preference: module to import, its distribution name.
RUNTIMES: tuple[tuple[str, str], ...] = (
    ("ai_edge_litert", "ai-edge-litert"),
    ("tflite_runtime", "tflite-runtime"),
)


class ModelSource(Protocol):
    """Where `.tflite` files come from: converted on this host, or pushed here by the host."""

    def model_path(self, w: Workload, precision: str = "float32", batch: int = 1) -> Path: ...


@dataclass(frozen=True)
class Runtime:
    interpreter: type
    module: str
    package: str
    version: str


def load_runtime(candidates: Sequence[tuple[str, str]] = RUNTIMES) -> Runtime | None:
    """The first TFLite interpreter that imports, or None when this host has none."""
    for module, package in candidates:
        try:
            interp = importlib.import_module(f"{module}.interpreter")
        except ImportError:
            continue
        top = importlib.import_module(module)
        return Runtime(interp.Interpreter, module, package, str(getattr(top, "__version__", "unknown")))
    return None


@dataclass(frozen=True)
class _Pushed:
    path: Path
    meta: dict[str, Any]


class PushedModels:
    """Models the host pushed to this target: (workload key, precision, batch) -> what arrived here."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, int], _Pushed] = {}

    def add(self, key: str, precision: str, batch: int, paths: dict[str, str]) -> None:
        meta = _read_json(paths["meta"]) if "meta" in paths else {}
        self._entries[(key, precision, batch)] = _Pushed(Path(paths["model"]), meta)

    def _entry(self, w: Workload, precision: str, batch: int) -> _Pushed:
        try:
            return self._entries[(w.key, precision, batch)]
        except KeyError:
            raise MeasureFailure(
                "build_error", f"no {precision} batch-{batch} model of {w.key} was pushed to this target"
            ) from None

    def model_path(self, w: Workload, precision: str = "float32", batch: int = 1) -> Path:
        e = self._entry(w, precision, batch)
        if not e.path.is_file():
            raise MeasureFailure("build_error", f"the pushed model of {w.key} is missing here: {e.path}")
        return e.path

    def converter(self, w: Workload, precision: str, batch: int) -> str | None:
        conv = self._entry(w, precision, batch).meta.get("converter")
        return str(conv) if conv is not None else None


def _read_json(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise MeasureFailure("build_error", f"unreadable artifact {path}: {e}") from None
    return data if isinstance(data, dict) else {}


class TfliteBackend:
    name = "tflite"

    def __init__(
        self,
        models: ModelSource | None = None,
        runtimes: Sequence[tuple[str, str]] = RUNTIMES,
        cold_cache: bool = True,
    ) -> None:
        # cold_cache: time a block over rotating copies of its model whose data together exceed
        # 2 x L2, so it meets evicted weights and buffers as inside a network (docs/TFLITE.md).
        self.cold_cache = cold_cache
        self.l2_bytes = l2_cache_bytes()
        self._models = models
        self._runtime_candidates = tuple(runtimes)
        self._runtime: Runtime | None = None
        self._pushed: PushedModels | None = None

    # --- where models come from ---------------------------------------------------------------

    @property
    def models(self) -> ModelSource:
        if self._models is None:
            raise MeasureFailure("build_error", "no TFLite models here: the host converts them and pushes them "
                                 "(over SSH) or hands this backend its converter (in-process)")
        return self._models

    def use_model_source(self, source: ModelSource) -> None:
        """In-process: read models straight from the host's converter."""
        self._models = source

    def use_artifacts(self, workload: Workload, settings: MeasureSettings, paths: dict[str, str]) -> None:
        """Target side: the host pushed `host_artifacts(workload, settings)` to these paths."""
        if self._pushed is None:
            self._pushed = PushedModels()
            self._models = self._pushed
        self._pushed.add(workload.key, settings.precision, settings.batch, paths)

    # --- the runtime ----------------------------------------------------------------------------

    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = load_runtime(self._runtime_candidates)
        if self._runtime is None:
            wanted = " or ".join(pkg for _, pkg in self._runtime_candidates)
            raise MeasureFailure(
                "unsupported",
                f"no TFLite runtime on this target ({os.uname().nodename}): install {wanted} "
                "(pip install 'ai-edge-litert')",
            )
        return self._runtime

    def runtime_info(self, settings: MeasureSettings) -> dict[str, Any]:
        info: dict[str, Any] = {
            "threads": settings.threads,
            "affinity": affinity(),
            "precision": settings.precision,
            # AUTO = builtin kernels with the default XNNPACK delegate, as on a phone
            "op_resolver": "AUTO",
            "cold_cache": self.cold_cache,
            "l2_bytes": self.l2_bytes,
        }
        try:
            rt = self.runtime()
            info.update(runtime=rt.module, package=rt.package, version=rt.version)
        except MeasureFailure as e:
            info.update(runtime=None, error=str(e))
        if self._pushed is None:  # in-process: the models are this host's conversions
            info["converter"] = self.converter_version()
        return info

    def _converter(self, workload: Workload, settings: MeasureSettings) -> str | None:
        if self._pushed is not None:
            return self._pushed.converter(workload, settings.precision, settings.batch)
        return self.converter_version()

    def converter_version(self) -> str:
        """The host converter's identity (part of the fingerprint class: it decides the models)."""
        try:
            return str(getattr(self.models, "version", "unknown"))
        except MeasureFailure:  # no converter here: every build fails, and says why
            return "unavailable"

    # --- timing ---------------------------------------------------------------------------------

    def _interpreter(self, path: Path, workload: Workload, settings: MeasureSettings) -> Any:
        rt = self.runtime()
        try:
            interp = rt.interpreter(model_path=str(path), num_threads=settings.threads)
            interp.allocate_tensors()
        except Exception as e:  # the runtime refuses the model (an op it lacks, a bad file)
            raise MeasureFailure(
                "unsupported", f"{rt.package} {rt.version} cannot load the {settings.precision} model of "
                f"{workload.key}: {type(e).__name__}: {' '.join(str(e).split())[:400]}"
            ) from None
        return interp

    def prepare(self, workload: Workload, settings: MeasureSettings) -> Prepared:
        self.runtime()  # a target without LiteRT fails before any conversion work (or numpy import)
        if settings.clock == "thread" and settings.threads != 1:
            raise MeasureFailure("unsupported", "the thread-CPU clock times one interpreter thread only "
                                 f"(threads is {settings.threads}): {workload.key}")
        import numpy as np

        path = self.models.model_path(workload, settings.precision, settings.batch)
        first = self._interpreter(path, workload, settings)
        copies = 1
        if self.cold_cache:
            copies = rotation_copies(_footprint(first), self.l2_bytes)
        interps = [first] + [self._interpreter(path, workload, settings) for _ in range(copies - 1)]
        for interp in interps:
            rng = np.random.default_rng(0)
            for d in interp.get_input_details():
                dtype = np.dtype(d["dtype"])
                if dtype.kind == "f":
                    x = rng.standard_normal(tuple(d["shape"])).astype(dtype)
                else:
                    info = np.iinfo(dtype)
                    x = rng.integers(info.min, info.max, size=tuple(d["shape"]), endpoint=True, dtype=dtype)
                interp.set_tensor(d["index"], x)
            try:
                interp.invoke()
            except Exception as e:
                msg = f"LiteRT failed to run {workload.key}: {type(e).__name__}: {e}"
                raise MeasureFailure("run_error", msg) from None
        if copies == 1:
            run = first.invoke
        else:
            # Round-robin over copies of the model: each invocation finds its weights and buffers
            # evicted from the core's L2 by the others, as a block does inside a network.
            cycle = itertools.cycle([i.invoke for i in interps])
            run = lambda: next(cycle)()  # noqa: E731
        inp = first.get_input_details()[0]
        metrics = {
            "converter": self._converter(workload, settings),
            "model_bytes": path.stat().st_size,
            "model": path.name,
            "input_dtype": np.dtype(inp["dtype"]).name,
            "input_shape": [int(d) for d in inp["shape"]],
            "copies": copies,
        }
        return Prepared(run, metrics)

    def timing_context(self) -> AbstractContextManager[Any]:
        return nullcontext()

    def measure_one(self, workload: Workload, settings: MeasureSettings) -> tuple[Stats, dict[str, Any]]:
        return measure_prepared(self, workload, settings)
