"""The rtl-sim target: a Verilator simulation of our accelerator RTL, behind the Target seam.

Each workload is run through the native harness of the configured accelerator (BISMO or Bit
Fusion) with the device's batch; the latency is the RTL's own cycle counter at the configured clock,
and the record carries cycles, energy, DRAM bytes and utilizations as metrics, with
`provenance: simulated`. Simulation is deterministic, so each record is one run (n = 1, CV = 0).

The float spaces' workloads (proxyless-mobile's stem, MBConv blocks, head and logits, and networks of
them) run lowered to their quantized layers at 8/8 bits (`hil.nets.models.lower`, the models'
`qlayers`), keys unchanged, so their LUT is read like any other device's: a block is one continuous
run of its 1x1 expand, depthwise and 1x1 project; a network one continuous run of all its layers.

Each device runs its workloads on up to `rtl.workers` harness processes (default: the machine's
cores), longest first; layers that the accelerator times as one program go to one worker together.
All rtl-sim devices of one hil process (a `hil lut build` of several devices) share one pool of
simulation slots, two per core (`SLOTS_PER_CORE`): a device whose table is done leaves its cores to
the others, and the machine is never oversubscribed by a fixed number of processes per device.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from hil.devices.agent.backend import MeasureFailure
from hil.errors import HilError
from hil.inventory import Device
from hil.measure import ErrorKind, Measurement, MeasureSettings, Stats
from hil.rtl.accelerator import NetworkRunner
from hil.workload import ConvLayer, Gemm, Linear, Logits, MBConv, Network, QuantLayer, Workload

PROTOCOL = {"kind": "cycle-accurate RTL simulation", "runs": 1}
# The bitwidths float workloads are lowered at: 8/8, what every accelerator here runs and what an int8
# deployment of the float network quantizes to. Fixed, so it is not (yet) part of the fingerprint class;
# making it a setting would put it there.
LOWER_BITS = (8, 8)
FLOAT_KINDS = (ConvLayer, MBConv, Logits, Linear)


def lowered(w: Workload) -> list[QuantLayer] | None:
    """The quantized layers a float workload (or a network of them) runs as here; None for the
    workloads the accelerators take as they are (quantized layers, GEMMs, networks of layers)."""
    if isinstance(w, Network) and w.layers and all(isinstance(x, QuantLayer) for x in w.layers):
        return None
    if isinstance(w, FLOAT_KINDS) or (isinstance(w, Network) and w.layers
                                      and all(isinstance(x, FLOAT_KINDS) for x in w.layers)):
        from hil.nets.models import lower

        return lower(w, *LOWER_BITS)
    return None


def machine_cores() -> int:
    """Cores this process may run on (its affinity mask, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class Slots:
    """`n` slots handed out in arrival order. (A threading.Semaphore lets the thread that just released
    take the slot again before the woken waiter runs: one device's workers, looping, kept both cores
    and starved the other devices of a build until they were done.)"""

    def __init__(self, n: int) -> None:
        self._free = n
        self._cv = threading.Condition()
        self._queue: collections.deque[object] = collections.deque()

    def __enter__(self) -> None:
        me = object()
        with self._cv:
            self._queue.append(me)
            while self._queue[0] is not me or self._free == 0:
                self._cv.wait()
            self._queue.popleft()
            self._free -= 1
            self._cv.notify_all()  # the next in line may find a slot too

    def __exit__(self, *exc: object) -> None:
        with self._cv:
            self._free += 1
            self._cv.notify_all()


# Two slots per core, shared by every RtlSimTarget of the process: a simulation (planning included)
# runs only while it holds one. A slot's holder is not on its core all the time: it plans in Python
# (one GIL for every worker of the build) and waits on pipe round trips to its harness, and with one
# slot per core the cores stood ~5 % idle. Two keep them busy: the full MobileNet-V1 2..8 table of
# the three presets took 122.1 s instead of 127.9 (means of four runs each, same CPU-seconds). Served
# in arrival order, they still share the cores fairly between devices.
SLOTS_PER_CORE = 2
_SLOTS = Slots(SLOTS_PER_CORE * machine_cores())


def _cost(w: Workload) -> float:
    """Rough simulation cost, only to start the longest workloads first (so that the build does not
    end on one long entry while the other cores idle): MACs times the bit-serial passes."""
    if isinstance(w, QuantLayer):
        (ho, wo, cout), k, cin = w.output, int(w.kernel), int(w.input[2])
        per_out = k * k * (1 if int(w.groups) > 1 else cin)
        return float(ho * wo * cout * per_out * w.wbits * w.abits)
    if isinstance(w, Gemm):
        return float(w.m * w.k * w.n * w.wbits * w.abits)
    if isinstance(w, Network):
        return sum(_cost(x) for x in w.layers)
    if isinstance(w, FLOAT_KINDS):
        return sum(_cost(x) for x in lowered(w) or [])
    return 0.0


def _groups(acc: Any, workloads: Sequence[Workload], batch: int) -> list[list[Workload]]:
    """The workloads as the work items of one device's workers, longest first. Layers that the
    accelerator times as one program (`program_key`: Bit Fusion's bits on the same lanes) form one
    item, so one worker simulates the program once and answers the rest from its memory of runs;
    spread over the workers, each worker that met the program simulated it again (a MobileNet-V1
    2..8 x 2..8 table has 180 programs in 980 entries)."""
    key_of = getattr(acc, "program_key", None)
    groups: dict[object, list[Workload]] = {}
    for i, w in enumerate(workloads):
        key = None
        if key_of is not None and isinstance(w, QuantLayer):
            try:
                key = key_of(w, batch)
            except HilError:  # bits it cannot run: measured alone, and its error reported there
                key = None
        groups.setdefault(("program", key) if key is not None else ("own", i), []).append(w)
    return sorted(groups.values(), key=lambda g: max(_cost(w) for w in g), reverse=True)


def _stats(latency_ms: float) -> Stats:
    return Stats(n=1, number=1, median_ms=latency_ms, mean_ms=latency_ms, std_ms=0.0, min_ms=latency_ms,
                 p10_ms=latency_ms, p90_ms=latency_ms, iqr_ms=0.0, cv=0.0)


class RtlSimTarget:
    provenance = "simulated"

    def __init__(self, name: str, device: Device) -> None:
        assert device.rtl is not None
        self.name = name
        self.device = device
        self.preset = device.rtl.accelerator
        self.overrides = dict(device.rtl.overrides)
        self.workers = int(device.rtl.workers or machine_cores())
        self._pool: list[Any] = []
        self._describe: dict[str, Any] | None = None

    def _accelerator(self) -> Any:
        from hil.rtl.presets import make_accelerator

        return make_accelerator(self.preset, self.overrides)

    def _first(self) -> Any:
        if not self._pool:
            self._pool.append(self._accelerator())
        return self._pool[0]

    def describe(self, settings: MeasureSettings) -> dict[str, Any]:
        if self._describe is None:
            self._describe = self._first().describe()
        return {
            "class": {"device": self.name, "backend": "rtl-sim", "accelerator": self._describe,
                      "batch": settings.batch, "protocol": PROTOCOL},
            # the binary that simulated (any CPU's or a PGO build gives the same cycles: rtl/verilator_build.py)
            "state": dict(getattr(self._first(), "build", {})),
        }

    def _one(self, acc: Any, w: Workload, batch: int) -> tuple[Stats, dict[str, Any]]:
        layers = lowered(w)
        if layers is not None:
            if not isinstance(acc, NetworkRunner):
                raise MeasureFailure("unsupported", f"{self.preset} cannot simulate layers in one run yet")
            # One continuous run, even of a single layer, so a block and a whole network are timed alike.
            r = acc.network(layers, batch)
            metrics = r.to_json()
            metrics["lowered"] = {"wbits": LOWER_BITS[0], "abits": LOWER_BITS[1], "layers": [q.key for q in layers]}
            return _stats(r.latency_ms), metrics
        if isinstance(w, QuantLayer):
            r = acc.layer(w, batch)
        elif isinstance(w, Gemm):
            r = acc.time_gemm(w.m, w.k, w.n, w.wbits, w.abits, w.wsigned, w.asigned)
        elif isinstance(w, Network) and all(isinstance(x, QuantLayer) for x in w.layers):
            if not isinstance(acc, NetworkRunner):
                raise MeasureFailure("unsupported", f"{self.preset} cannot simulate whole networks yet")
            r = acc.network(list(w.layers), batch)
        else:
            raise MeasureFailure("unsupported", f"rtl-sim runs quantized layers, GEMMs, float "
                                                f"layers lowered to them and networks of these, not {w.kind!r}")
        return _stats(r.latency_ms), r.to_json()

    def measure(self, workloads: Sequence[Workload], settings: MeasureSettings) -> Iterator[Measurement]:
        fp = self.describe(settings)
        start = getattr(self._first(), "start", None)
        if workloads and start is not None:
            start()  # build the harness once, here: started by the workers, each would build it
        while len(self._pool) < min(self.workers, len(workloads)):
            self._pool.append(self._accelerator())
        todo: queue.Queue[list[Workload]] = queue.Queue()
        for group in _groups(self._first(), workloads, settings.batch):  # values do not depend on the order
            todo.put(group)
        done: queue.Queue[Measurement | BaseException] = queue.Queue()

        def work(acc: Any) -> None:
            while True:
                try:
                    group = todo.get_nowait()
                except queue.Empty:
                    return
                for w in group:
                    try:
                        with _SLOTS:
                            stats, metrics = self._one(acc, w, settings.batch)
                        done.put(Measurement(self.name, w.key, w.to_json(), fp, self.provenance, stats, metrics))
                    except MeasureFailure as e:
                        done.put(Measurement.failure(self.name, w.key, w.to_json(), fp, self.provenance, e.kind,
                                                     str(e)))
                    except HilError as e:  # unsupported bits, does not fit, cycle limit: the workload's fault
                        done.put(Measurement.failure(self.name, w.key, w.to_json(), fp, self.provenance,
                                                     ErrorKind.RUN_ERROR, str(e)))
                    except BaseException as e:  # a dead harness: stop this worker, report once
                        done.put(e)
                        return

        threads = [threading.Thread(target=work, args=(acc,), daemon=True) for acc in self._pool]
        for t in threads:
            t.start()
        remaining = len(workloads)
        while remaining:
            item = done.get()
            if isinstance(item, BaseException):
                raise item
            remaining -= 1
            yield item

    def close(self) -> None:
        for acc in self._pool:
            acc.close()
        self._pool.clear()
