"""The torch-cuda backend. Without CUDA (CI, this project's machines) the GPU tests skip with the
reason, and what can be checked without a GPU is: a GPU device without CUDA gives clear records."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest

from hil.devices.agent.local import LocalTarget
from hil.devices.agent.registry import make_backend
from hil.devices.agent.torch_cuda import CudaOptions, TorchCudaBackend, cuda_unavailable_reason, pool_size
from hil.devices.host.targets import open_target
from hil.errors import ConfigError
from hil.inventory import CudaConfig, load_inventory
from hil.measure import MeasureSettings
from hil.target import fingerprint_class
from hil.workload import ConvLayer, Gemm, Logits, MBConv, Network

QUICK = MeasureSettings(warmup_runs=3, warmup_s=0.0, min_repeats=5, min_time_s=0.02, max_time_s=2.0)
STEM = ConvLayer("Conv", (32, 32, 3), (16, 16, 16), 3, 2)
SKIP = MBConv((16, 16, 16), (16, 16, 16), 3, 3, 1, 1)
HEAD = Logits((16, 16, 16), 10)
NET = Network((STEM, SKIP, HEAD), name="tiny")

NO_CUDA = cuda_unavailable_reason()
needs_cuda = pytest.mark.skipif(NO_CUDA is not None, reason=f"needs CUDA: {NO_CUDA}")


def test_registry_builds_the_backend_without_touching_a_gpu() -> None:
    b = make_backend("torch-cuda")
    assert isinstance(b, TorchCudaBackend) and b.options == CudaOptions()


def test_rotation_pool_outgrows_twice_the_l2() -> None:
    l2 = 50 * 2**20
    assert pool_size(1 << 30, l2) == 2  # a big input: itself plus one more already exceed L2 twice
    small = 16 * 16 * 16 * 4
    n = pool_size(small, l2, limit=10**6)
    assert n * small > 2 * l2 and (n - 2) * small <= 2 * l2
    assert pool_size(small, l2) == 64 and pool_size(small, l2, limit=8) == 8
    assert pool_size(0, l2) == 1


@pytest.mark.skipif(NO_CUDA is None, reason="this host has CUDA; the no-CUDA path is for hosts without")
def test_gpu_device_without_cuda_gives_clear_records_and_goes_on() -> None:
    target = LocalTarget("gpu0", TorchCudaBackend())
    fp = target.describe(QUICK)
    rt = fp["class"]["runtime"]
    assert rt["cuda"] is False and "torch-cuda cannot run here" in rt["error"]
    assert rt["options"]["cudnn_benchmark"] is True  # what would have been used is still recorded
    ms = list(target.measure([STEM, NET], QUICK))
    assert [m.key for m in ms] == [STEM.key, NET.key]  # every workload gets its record
    for m in ms:
        assert (m.ok, m.error_kind, m.device) == (False, "unsupported", "gpu0")
        assert NO_CUDA in m.error


def test_options_are_part_of_the_fingerprint_class() -> None:
    a = LocalTarget("gpu0", TorchCudaBackend()).describe(QUICK)
    b = LocalTarget("gpu0", TorchCudaBackend(CudaOptions(cuda_graphs=True))).describe(QUICK)
    c = LocalTarget("gpu0", TorchCudaBackend()).describe(replace(QUICK, batch=50))
    assert len({fingerprint_class(a), fingerprint_class(b), fingerprint_class(c)}) == 3


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [False, True])
@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_cuda_times_blocks_and_networks(graphs: bool, precision: str) -> None:
    backend = TorchCudaBackend(CudaOptions(cuda_graphs=graphs, min_warmup_s=0.05))
    target = LocalTarget("gpu0", backend)
    settings = replace(QUICK, precision=precision, batch=2)
    fp = target.describe(settings)
    rt = fp["class"]["runtime"]
    assert rt["cuda"] is True and rt["gpu"] and rt["cudnn"] and rt["options"]["cuda_graphs"] is graphs
    ms = list(target.measure([STEM, SKIP, HEAD, NET], settings))
    for m in ms:
        assert m.ok, m.error
        assert m.stats is not None and m.stats.median_ms > 0 and m.stats.n >= settings.min_repeats
        assert m.metrics["host_ms"] > 0 and m.metrics["inputs_rotated"] >= 1


@needs_cuda
@pytest.mark.gpu
def test_cuda_refuses_int8_and_unknown_kinds_per_workload() -> None:
    target = LocalTarget("gpu0", TorchCudaBackend(CudaOptions(min_warmup_s=0.05)))
    (int8,) = target.measure([STEM], replace(QUICK, precision="int8"))
    assert (int8.ok, int8.error_kind) == (False, "unsupported") and "int8" in int8.error
    gemm, ok = target.measure([Gemm(4, 4, 4, 8, 8), STEM], QUICK)
    assert (gemm.ok, gemm.error_kind) == (False, "unsupported") and "gemm" in gemm.error
    assert ok.ok, ok.error


# ------------------------------------------------------------------ the inventory's `cuda:` section
def test_inventory_cuda_section_has_the_backend_options_names_and_defaults() -> None:
    assert CudaConfig().model_dump() == asdict(CudaOptions())


def test_inventory_cuda_section_reaches_the_backend_here_and_its_class(tmp_path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text("devices:\n"
                   "  gpu-graphs:\n    backend: torch-cuda\n    cuda: {cuda_graphs: true, min_warmup_s: 2}\n"
                   "  gpu-eager:\n    backend: torch-cuda\n")
    targets = {n: open_target(load_inventory(inv), n) for n in ("gpu-graphs", "gpu-eager")}
    try:
        opts = {n: t.backend.options for n, t in targets.items()}  # type: ignore[attr-defined]
        assert opts["gpu-graphs"] == CudaOptions(cuda_graphs=True, min_warmup_s=2.0)
        assert opts["gpu-eager"] == CudaOptions()
        fps = {n: t.describe(QUICK) for n, t in targets.items()}
        assert fps["gpu-graphs"]["class"]["runtime"]["options"]["cuda_graphs"] is True
        assert fps["gpu-eager"]["class"]["runtime"]["options"]["cuda_graphs"] is False
    finally:
        for t in targets.values():
            t.close()


@pytest.mark.parametrize(("device", "words"), [
    ("backend: torch-cpu\n    cuda: {cuda_graphs: true}", ["'cuda:' section is for backend 'torch-cuda'"]),
    ("backend: torch-cuda\n    cuda: {graphs: true}", ["'gpu'", "'cuda.graphs'"]),
    ("backend: torch-cuda\n    cuda: {device_index: -1}", ["'gpu'", "cuda.device_index"]),
])
def test_inventory_cuda_section_is_checked(tmp_path, device: str, words: list[str]) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(f"devices:\n  gpu:\n    {device}\n")
    with pytest.raises(ConfigError) as e:
        load_inventory(inv)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_a_remote_agent_refuses_unknown_or_mistyped_options() -> None:
    b = TorchCudaBackend()
    b.configure({})
    assert b.options == CudaOptions()
    with pytest.raises(ConfigError, match=r"unknown option.*graphs"):
        b.configure({"cuda": {"graphs": True}})
    with pytest.raises(ConfigError, match="cuda_graphs must be of type bool"):
        b.configure({"cuda": {"cuda_graphs": "yes"}})
    with pytest.raises(ConfigError, match="device_index must be of type int"):
        b.configure({"cuda": {"device_index": 1.5}})
    assert b.options == CudaOptions()  # a refused configuration changes nothing
