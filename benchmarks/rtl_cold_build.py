"""Cold harness builds: the three presets built at once into an empty cache, as the first `hil lut build
-d bismo-edge -d bismo-cloud -d bitfusion-spatial` after an RTL change (or on a fresh machine) builds them.

    .venv/bin/python benchmarks/rtl_cold_build.py                    # nothing cached: a fresh machine
    .venv/bin/python benchmarks/rtl_cold_build.py --runtime-cached   # Verilator's runtime already built

Prints wall seconds and the CPU-seconds of the compilers (children of this process), one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time

PRESETS = ("bismo-edge", "bismo-cloud", "bitfusion-spatial")


def _children_cpu_s() -> float:
    t = os.times()
    return t.children_user + t.children_system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runtime-cached", action="store_true",
                    help="build Verilator's runtime library before the clock starts")
    args = ap.parse_args()
    cache = tempfile.mkdtemp(prefix="rtl-cold-build-")
    os.environ["HIL_RTL_CACHE"] = cache  # before the imports read it: an empty cache
    from hil.rtl.presets import make_accelerator
    from hil.rtl.verilator_build import build_harness, runtime_library

    specs = [make_accelerator(p)._harness_spec() for p in PRESETS]
    try:
        if args.runtime_cached:
            runtime_library(specs[0])
        t0, c0 = time.perf_counter(), _children_cpu_s()
        threads = [threading.Thread(target=build_harness, args=(s,)) for s in specs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(json.dumps({"runtime_cached": args.runtime_cached, "wall_s": round(time.perf_counter() - t0, 1),
                          "cpu_s": round(_children_cpu_s() - c0, 1), "cache": sorted(os.listdir(cache))}))
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
