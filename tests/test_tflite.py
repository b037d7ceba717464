"""The TFLite target on the real converter (tensorflow-cpu) and the real LiteRT interpreter.

Tiny workloads keep it quick; conversions are shared across the module through one cache directory.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("ai_edge_litert", reason="LiteRT is the `tflite` extra: pip install -e '.[tflite]'")
pytest.importorskip("tensorflow", reason="the converter is the `tflite-convert` extra (tensorflow-cpu)")

from hil.devices.agent.backend import MeasureFailure
from hil.devices.agent.local import LocalTarget
from hil.devices.agent.registry import make_backend
from hil.devices.agent.tflite_backend import TfliteBackend
from hil.devices.host.artifacts import host_artifacts
from hil.devices.host.tflite_convert import CACHE_ENV, ConverterCache, default_cache_dir, model_ops
from hil.measure import MeasureSettings
from hil.target import fingerprint_class
from hil.workload import ConvLayer, Gemm, Linear, Logits, MBConv, Network

QUICK = MeasureSettings(warmup_runs=2, warmup_s=0.0, min_repeats=5, min_time_s=0.02, max_time_s=2.0)

STEM = ConvLayer("Conv", (16, 16, 3), (8, 8, 16), 3, 2)
SKIP = MBConv((8, 8, 16), (8, 8, 16), 3, 3, 1, 1)
DOWN = MBConv((8, 8, 16), (4, 4, 24), 6, 5, 2, 0)
HEAD = Logits((4, 4, 24), 10)
NET = Network((STEM, SKIP, DOWN, HEAD), name="tiny")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> ConverterCache:
    return ConverterCache(tmp_path_factory.mktemp("tflite-cache"))


def _ops(path: Path) -> list[tuple[str, str | None]]:
    return [(op.name, op.fused_activation) for op in model_ops(path.read_bytes())]


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_mbconv_converts_to_fused_nhwc_ops(cache: ConverterCache, precision: str) -> None:
    ops = _ops(cache.model_path(SKIP, precision))
    # BN folded, ReLU6 fused into expand and depthwise, linear projection, the identity add;
    # no layout transposes and, for int8, no (de)quantize at the block's boundary.
    assert ops == [
        ("CONV_2D", "RELU6"),
        ("DEPTHWISE_CONV_2D", "RELU6"),
        ("CONV_2D", "NONE"),
        ("ADD", "NONE"),
    ]


def test_int8_model_is_full_integer_with_int8_io(cache: ConverterCache) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(cache.model_path(DOWN, "int8")), num_threads=1)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    (out,) = interp.get_output_details()
    assert inp["dtype"].__name__ == "int8" and out["dtype"].__name__ == "int8"
    assert tuple(inp["shape"]) == (1, 8, 8, 16) and tuple(out["shape"]) == (1, 4, 4, 24)
    assert inp["quantization"][0] > 0  # calibrated scale, from the representative dataset


def test_tflite_and_torch_build_the_same_network_shapes(cache: ConverterCache) -> None:
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from hil.nets.torch_build import build_module, input_shape

    for w in (STEM, SKIP, DOWN, HEAD, NET, Linear(12, 5)):
        interp = Interpreter(model_path=str(cache.model_path(w, "float32", batch=2)))
        interp.allocate_tensors()
        tfl_in = tuple(interp.get_input_details()[0]["shape"])
        tfl_out = tuple(interp.get_output_details()[0]["shape"])
        x = torch.zeros(input_shape(w, 2))
        y = build_module(w).eval()(x)
        nhwc = (lambda s: (s[0], *s[2:], s[1])) if x.dim() == 4 else (lambda s: s)
        assert tfl_in == nhwc(tuple(x.shape)), w.key
        assert tfl_out == (nhwc(tuple(y.shape)) if y.dim() == 4 else tuple(y.shape)), w.key


def test_cache_hits_and_keys(cache: ConverterCache) -> None:
    path = cache.model_path(STEM, "float32")
    mtime = path.stat().st_mtime_ns
    assert cache.model_path(STEM, "float32") == path
    assert path.stat().st_mtime_ns == mtime  # not converted again
    assert path.with_suffix(".json").is_file()
    others = {cache.model_path(STEM, "int8"), cache.model_path(STEM, "float32", batch=2)}
    assert path not in others and len(others) == 2
    assert not list(cache.root.glob(".*.tmp"))  # atomic writes leave no temporaries
    assert cache.version in cache.model_path(STEM, "float32").with_suffix(".json").read_text()


def test_cache_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir() == Path.home() / ".cache" / "hil" / "tflite"


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_local_target_times_blocks_and_network(cache: ConverterCache, precision: str) -> None:
    target = LocalTarget("tfl-local", TfliteBackend(cache))
    settings = replace(QUICK, precision=precision)
    ms = list(target.measure([STEM, SKIP, NET], settings))
    assert [m.key for m in ms] == [STEM.key, SKIP.key, NET.key]
    for m in ms:
        assert m.ok, m.error
        assert m.stats is not None and m.stats.median_ms > 0 and m.stats.n >= settings.min_repeats
        assert m.metrics["input_dtype"] == ("int8" if precision == "int8" else "float32")
    rt = ms[0].fingerprint["class"]["runtime"]
    assert rt["package"] == "ai-edge-litert" and rt["precision"] == precision and rt["threads"] == 1
    assert rt["converter"] == cache.version
    assert rt["affinity"] == sorted(os.sched_getaffinity(0))


def test_precision_and_threads_are_in_the_fingerprint_class(cache: ConverterCache) -> None:
    target = LocalTarget("tfl-local", TfliteBackend(cache))
    classes = {fingerprint_class(target.describe(replace(QUICK, precision=p, threads=t)))
               for p in ("float32", "int8") for t in (1, 2)}
    assert len(classes) == 4


def test_registry_builds_the_backend() -> None:
    assert isinstance(make_backend("tflite"), TfliteBackend)


def test_bad_workloads_become_records_and_the_rest_goes_on(cache: ConverterCache) -> None:
    skip_across_shapes = MBConv((8, 8, 16), (4, 4, 16), 3, 3, 2, 1)
    wrong_shape = ConvLayer("c", (8, 8, 16), (5, 5, 16), 3, 2)
    odd_act = ConvLayer("c", (8, 8, 16), (8, 8, 16), 3, 1, act="swish")
    gemm = Gemm(4, 4, 4, 8, 8)
    target = LocalTarget("tfl-local", TfliteBackend(cache))
    ms = list(target.measure([skip_across_shapes, wrong_shape, odd_act, gemm, STEM], QUICK))
    kinds = [(m.ok, m.error_kind) for m in ms]
    assert kinds == [(False, "build_error"), (False, "build_error"), (False, "unsupported"),
                     (False, "unsupported"), (True, None)]
    for m, w in zip(ms[:4], (skip_across_shapes, wrong_shape, odd_act, gemm), strict=True):
        assert m.device == "tfl-local" and m.key == w.key
        assert w.key in m.error  # the message names the workload


def test_unknown_precision_is_refused(cache: ConverterCache) -> None:
    target = LocalTarget("tfl-local", TfliteBackend(cache))
    (m,) = target.measure([STEM], replace(QUICK, precision="int4"))
    assert not m.ok and m.error_kind == "unsupported" and "int4" in m.error


def test_target_without_litert_says_so_per_workload(cache: ConverterCache) -> None:
    backend = TfliteBackend(cache, runtimes=[("hil_no_such_litert", "ai-edge-litert")])
    target = LocalTarget("phone-without-litert", backend)
    fp = target.describe(QUICK)
    rt = fp["class"]["runtime"]
    assert rt["runtime"] is None and "no TFLite runtime" in rt["error"]
    ms = list(target.measure([STEM, SKIP], QUICK))
    assert all(not m.ok and m.error_kind == "unsupported" and m.device == "phone-without-litert" for m in ms)
    assert "ai-edge-litert" in ms[0].error


def _push(files: dict[str, Path], remote: Path) -> dict[str, str]:
    """What the SSH target does over SFTP: copy each host artifact to the target, hand over the paths."""
    remote.mkdir(exist_ok=True)
    out = {}
    for name, local in files.items():
        dst = remote / f"{name}-{local.name}"
        dst.write_bytes(local.read_bytes())
        out[name] = str(dst)
    return out


def test_pushed_artifacts_path_as_the_agent_uses_it(cache: ConverterCache, tmp_path: Path) -> None:
    settings = replace(QUICK, precision="int8")
    arts = host_artifacts(cache, SKIP, settings)
    assert set(arts) == {"model", "meta"}

    agent_side = TfliteBackend()
    agent_side.use_artifacts(SKIP, settings, _push(arts, tmp_path / "remote"))
    stats, metrics = agent_side.measure_one(SKIP, settings)
    assert stats.median_ms > 0 and metrics["input_dtype"] == "int8"
    assert metrics["converter"] == cache.version  # from the pushed sidecar
    assert "converter" not in agent_side.runtime_info(settings)  # the host's, not the agent's, to say
    with pytest.raises(MeasureFailure) as e:  # never pushed: no silent conversion on the target
        agent_side.measure_one(DOWN, settings)
    assert e.value.kind == "build_error" and DOWN.key in str(e.value)


def test_a_host_side_build_failure_is_a_measure_failure(cache: ConverterCache) -> None:
    bad = MBConv((8, 8, 16), (4, 4, 16), 3, 3, 2, 1)  # identity skip across a shape change
    with pytest.raises(MeasureFailure) as e:  # the SSH target makes it that workload's record
        host_artifacts(cache, bad, QUICK)
    assert e.value.kind == "build_error" and bad.key in str(e.value)


def test_a_model_the_runtime_cannot_load_is_a_clear_record(tmp_path: Path) -> None:
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"TFL3 this is not a flatbuffer")
    backend = TfliteBackend()
    backend.use_artifacts(SKIP, QUICK, {"model": str(broken)})
    (m,) = LocalTarget("tfl-local", backend).measure([SKIP], QUICK)
    assert not m.ok and m.error_kind == "unsupported"
    assert SKIP.key in m.error and "ai-edge-litert" in m.error


def test_thread_cpu_clock_is_recorded_and_needs_one_thread(cache: ConverterCache) -> None:
    target = LocalTarget("tfl-local", TfliteBackend(cache))
    thread = replace(QUICK, clock="thread")
    assert fingerprint_class(target.describe(QUICK)) != fingerprint_class(target.describe(thread))
    assert target.describe(thread)["class"]["protocol"]["clock"] == "thread"
    one, two = target.measure([SKIP], thread), target.measure([SKIP], replace(thread, threads=2))
    (m1,), (m2,) = list(one), list(two)
    assert m1.ok and m1.stats is not None and m1.stats.median_ms > 0
    assert (m2.ok, m2.error_kind) == (False, "unsupported") and "threads" in m2.error


def test_cold_cache_rotates_copies_and_is_recorded(cache: ConverterCache) -> None:
    from hil.devices.agent.host_info import l2_cache_bytes, rotation_copies

    cold = LocalTarget("tfl-local", TfliteBackend(cache))
    warm = LocalTarget("tfl-local", TfliteBackend(cache, cold_cache=False))
    rt = cold.describe(QUICK)["class"]["runtime"]
    assert rt["cold_cache"] is True and rt["l2_bytes"] == l2_cache_bytes() > 0
    assert fingerprint_class(cold.describe(QUICK)) != fingerprint_class(warm.describe(QUICK))
    (c,), (w,) = list(cold.measure([SKIP], QUICK)), list(warm.measure([SKIP], QUICK))
    assert c.ok and w.ok
    assert c.metrics["copies"] > 1 and w.metrics["copies"] == 1  # a tiny block: many copies to exceed L2
    assert rotation_copies(100, 1 << 20) == 16 and rotation_copies(10**9, 1 << 20) == 1
    assert rotation_copies(1 << 20, 1 << 20) == 2 and rotation_copies(0, 1 << 20) == 16


def test_the_inventory_precision_reaches_the_backend() -> None:
    from hil.devices.host.targets import settings_for
    from hil.inventory import Device

    dev = Device.model_validate({"backend": "tflite", "precision": "int8", "threads": 2})
    s = settings_for(dev, QUICK)
    assert (s.precision, s.threads, s.min_repeats) == ("int8", 2, QUICK.min_repeats)
    assert MeasureSettings.from_json(s.to_json()) == s  # and travels to the agent with the settings
