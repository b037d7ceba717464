"""What the store costs: SQLite (WAL) vs PostgreSQL over loopback.

1. Commits per second: 1, 2 and 4 writer processes, each opening the store and adding `--records`
   measurements (one transaction each, as a build commits them: the record, its fingerprint and the
   choice of the accepted entry), all released together; records committed / wall time of the
   slowest writer. Both engines durable: SQLite's default synchronous=FULL in WAL mode, PostgreSQL
   with its defaults (fsync, synchronous_commit on), a private server (tests/pgserver.py) on 127.0.0.1.
2. The store's share of a LUT build: the build of `hil lut build --device local-cpu --space
   proxyless-mobile --resolution R` (the CLI's protocol, its 10 calibration networks), in this
   process, once into each engine, with every call into the store timed.

    .venv/bin/python benchmarks/store_bench.py [--records 300] [--resolution 128] [--json out.json]

One run on a shared machine: compare numbers only within one run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/pgserver.py: the same private server the tests use

from hil.measure import Measurement, summarize  # noqa: E402
from hil.store import Store, open_store  # noqa: E402
from tests.pgserver import PgServer, postgres_missing  # noqa: E402


def _writer(url: str, n: int, index: int, start: Any, done: Any) -> None:
    store = open_store(url)
    fp = {"class": {"device": "bench", "batch": 1, "writer": index % 2}, "state": {"cur_freq_khz": 1}}
    xs = [1.0 + i / 1000 for i in range(100)]
    start.wait()
    t0 = time.perf_counter()
    for i in range(n):
        store.add(Measurement("bench", f"w{index}-k{i}", {"kind": "bench"}, fp, "measured", summarize(xs),
                              created_at=time.time()))
    done.put(time.perf_counter() - t0)
    store.close()


def commits_per_second(url: str, writers: int, n: int) -> dict[str, float]:
    open_store(url).close()  # the schema exists before the clock starts
    ctx = mp.get_context("spawn")
    start, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, n, i, start, done)) for i in range(writers)]
    for p in procs:
        p.start()
    time.sleep(3.0)  # every writer has imported hil and opened the store
    t0 = time.perf_counter()
    start.set()
    times = [done.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    return {"writers": writers, "records": writers * n, "wall_s": wall, "per_s": writers * n / wall,
            "slowest_writer_s": max(times)}


class TimedStore:
    """Forwards to a store and adds up the time spent in its methods (generators drained inside)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.seconds = 0.0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr) or name == "lease":  # a lease's wait is the device's, not the store's
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                out = attr(*args, **kwargs)
                if isinstance(out, types.GeneratorType):
                    out = iter(list(out))
                return out
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        return timed


def build_share(url: str, resolution: int) -> dict[str, Any]:
    from hil.commands.lut import CLI_MIN_REPEATS
    from hil.devices.host.targets import open_target, settings_for
    from hil.inventory import load_inventory
    from hil.lut_builder.build import build_devices
    from hil.lut_builder.spaces import make_space
    from hil.measure import MeasureSettings

    inv = load_inventory(str(ROOT / "inventory.yaml"))
    space = make_space("proxyless-mobile", resolution=resolution)
    protocol = MeasureSettings(min_repeats=CLI_MIN_REPEATS)
    store = TimedStore(open_store(url))
    t0 = time.perf_counter()
    (res,) = build_devices(store, {"local-cpu": lambda: open_target(inv, "local-cpu")}, space,  # type: ignore[arg-type]
                           lambda n: settings_for(inv.device(n), protocol, None), seed=0, calibration_nets=10)
    wall = time.perf_counter() - t0
    store.close()
    return {"status": res.status, "entries": res.entries, "wall_s": wall, "store_s": store.seconds,
            "store_calls": store.calls, "store_share": store.seconds / wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=300, help="records each writer commits")
    ap.add_argument("--resolution", type=int, default=128, help="resolution of the LUT build (0: skip it)")
    ap.add_argument("--json", default=None, metavar="FILE")
    args = ap.parse_args()
    reason = postgres_missing()
    if reason:
        print(f"store_bench: {reason}", file=sys.stderr)
        return 2
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                           "commits": [], "builds": []}
    server = PgServer(durable=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="pg-bench-"))
    try:
        for writers in (1, 2, 4):
            for engine in ("sqlite", "postgresql"):
                url = str(tmp / f"w{writers}.db") if engine == "sqlite" else server.create_database("bench")
                r = {"engine": engine, **commits_per_second(url, writers, args.records)}
                out["commits"].append(r)
                print(f"{engine:10s} {writers} writer(s): {r['per_s']:7.0f} records/s "
                      f"({r['records']} in {r['wall_s']:.2f} s)", flush=True)
        if args.resolution:
            for engine in ("sqlite", "postgresql"):
                url = str(tmp / "build.db") if engine == "sqlite" else server.create_database("build")
                r = {"engine": engine, "resolution": args.resolution, **build_share(url, args.resolution)}
                out["builds"].append(r)
                print(f"{engine:10s} build at {args.resolution}: {r['status']}, {r['entries']} entries, "
                      f"{r['wall_s']:.1f} s, store {r['store_s']:.3f} s in {r['store_calls']} calls "
                      f"({100 * r['store_share']:.2f}%)", flush=True)
    finally:
        server.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
