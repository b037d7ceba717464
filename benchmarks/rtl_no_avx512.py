"""Run a `hil` command with the RTL harnesses compiled without AVX-512, on a CPU that has it.

Issue 19's targets are for a 2-core x86-64 CPU without AVX-512. On a machine with AVX-512 this is the
nearest stand-in: the same harness sources and flags (`-march=native`) plus `-mno-avx512f`, which
turns off AVX-512 and every extension built on it, so the compiler may use at most AVX2, as on such
a CPU. It separates what the ISA is worth from what the machine is worth; it is not the other
machine. The flags are part of the harness's cache key, so these binaries never mix with the native
ones (point HIL_RTL_CACHE elsewhere anyway, to time their cold build too).

    HIL_RTL_CACHE=/tmp/rtl-noavx512 .venv/bin/python benchmarks/rtl_no_avx512.py lut build \\
        -d bismo-edge -d bismo-cloud -d bitfusion-spatial --space mobilenet-v1-layers --bits 2..8 \\
        --db /tmp/noavx512.db --calibration-nets 0
"""

from __future__ import annotations

import sys

from hil.rtl import sim_harness

_native = sim_harness.host_cflags


def _without_avx512() -> tuple[str, ...]:
    return (*_native(), "-CFLAGS", "-mno-avx512f")


# harness_spec looks host_cflags up in its module when it is called, so every harness this process
# builds takes the flags above
sim_harness.host_cflags = _without_avx512

if __name__ == "__main__":
    from hil.cli import main

    sys.exit(main(sys.argv[1:]))
