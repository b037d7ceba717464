#!/usr/bin/env bash
# The GPU checks, as one command on a lent GPU machine (the `device` tool; docs/GPU.md): the CUDA tests
# that skip in CI, then the GPU LUT validation (benchmarks/gpu_lut.py, resumable). The machine has
# python3 with CUDA torch but no network: the project's other dependencies travel as wheels in .whl/
# and Fashion-MNIST in out/fmnist (both git-ignored; docs/GPU.md says how to fetch them).
#   run: bash benchmarks/gpu_checks.sh          carry: [".whl", "out/fmnist"]
# Environment: GPU_LUT_ARGS (extra arguments of gpu_lut.py), GPU_LUT_TIMEOUT (seconds, default 360).
set -u
: "${OUT:=out/gpu}"
mkdir -p "$OUT" out
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site
# The image's setuptools builds the editable install offline (seen on the H200, 2026-12-04); it maps the
# folders into `hil` as setup.py says, for pytest and the benchmark alike.
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
python3 -c 'import hil.devices.agent.torch_cuda, hil.optimizers.train' || exit 1
{
  nvidia-smi -L; nproc
  lscpu | grep -E '^(Model name|Flags)' | cut -c1-300
  grep -o -w 'avx512f' /proc/cpuinfo | sort -u
  python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(), "cudnn", torch.backends.cudnn.version())'
} 2>&1 | tee "$OUT/machine.txt"
export HIL_FASHION_MNIST_DIR="$PWD/out/fmnist"
timeout 120 python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py 2>&1 | tee "$OUT/pytest.log"
timeout 90 python3 -m pytest -q -p no:cacheprovider -rs -m gpu tests/test_train.py tests/test_ddp.py 2>&1 \
  | tee -a "$OUT/pytest.log"
# shellcheck disable=SC2086  # GPU_LUT_ARGS is a list of arguments
timeout "${GPU_LUT_TIMEOUT:-360}" python3 benchmarks/gpu_lut.py --results out/gpu-lut.json ${GPU_LUT_ARGS:-} 2>&1 \
  | tee "$OUT/gpu-lut.log"
cp out/gpu-lut.json "$OUT/" 2>/dev/null || true
