"""Python client of the shared native Verilator harness (rtl/harness/): a RegisterInterface.

The harness is a C++ process that owns the Verilated model, a DRAM model and the clock. This client
talks to it over stdin/stdout pipes with the binary protocol documented in rtl/harness/README.md:
register writes and reads, memory image load/dump, and "run until done or a cycle limit". Python
never steps the clock per cycle here; that is what makes the harness fast.

    spec = harness_spec("bismo", "bismo_top", sources, main_cpp, params)
    with SimHarness(build_harness(spec), DramConfig(bytes_per_cycle=32, latency=32)) as hw:
        hw.write_reg(1, 1)
        cycles = hw.run_until_done(10_000_000)
"""

from __future__ import annotations

import hashlib
import os
import platform
import struct
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from hil.errors import HilError
from hil.rtl.verilator_build import HarnessSpec

HARNESS_DIR = Path(__file__).resolve().parent / "harness"
HARNESS_HEADER = HARNESS_DIR / "hil_harness.h"
PROTOCOL_VERSION = 1

# Protocol ops (hil_harness.h: enum Op)
_WRITE_REG, _READ_REG, _WRITE_MEM, _READ_MEM, _RUN, _STEP, _STATS, _SET_DRAM = range(1, 9)
_WRITE_REGS, _READ_REGS, _RESET, _CLEAR_STATS, _SET_PAGES = 0x09, 0x0A, 0x0B, 0x0C, 0x0D
_QUIT = 0x0F

STAT_NAMES = (
    "cycles",
    "rd_beats",
    "wr_beats",
    "rd_bytes",
    "wr_bytes",
    "rd_bw_stall",
    "wr_bw_stall",
    "rd_outstanding_stall",
    "row_misses",
    "turnarounds",
)


class SimError(HilError):
    """The simulation harness failed: it died, refused a request, or the RTL made a bad access."""

    exit_code = 3


class SimTimeoutError(SimError):
    """The accelerator never raised done within the cycle limit."""


@dataclass(frozen=True)
class DramPages:
    """The DRAM's page (row-buffer) model: what a row miss and a bus turnaround cost (rtl/harness/README.md).

    Rows of `row_bytes` interleave over `banks`; a beat to another row of its bank costs `row_miss`
    cycles of bandwidth, a change of direction (read <-> write) `turnaround` cycles.
    """

    row_bytes: int  # bytes of one row (page) across the whole data bus
    banks: int = 8
    row_miss: int = 0  # cycles (at the accelerator clock): precharge + activate
    turnaround: int = 0  # cycles (at the accelerator clock): write-to-read / read-to-write

    def __post_init__(self) -> None:
        if self.row_bytes < 1 or self.banks < 1 or self.row_miss < 0 or self.turnaround < 0:
            raise SimError(f"invalid DRAM page model {self}: need row_bytes >= 1, banks >= 1, penalties >= 0")


@dataclass(frozen=True)
class DramConfig:
    """The harness's DRAM model: bandwidth shared by reads and writes, in-order read latency, and
    optionally a page model (row misses and bus turnarounds cost bandwidth)."""

    bytes_per_cycle: float
    latency: int = 32  # cycles from read acceptance to data
    size: int = 256 << 20  # bytes of DRAM
    max_outstanding: int = 256  # reads in flight
    pages: DramPages | None = None  # None: every beat costs only its bytes

    def __post_init__(self) -> None:
        if not self.bytes_per_cycle > 0 or self.latency < 1 or self.size <= 0 or self.max_outstanding < 1:
            raise SimError(f"invalid DRAM model {self}: need bytes_per_cycle > 0, latency >= 1, size > 0")

    def argv(self) -> list[str]:
        args = [
            "--mem-bytes", str(int(self.size)),
            "--bytes-per-cycle", repr(float(self.bytes_per_cycle)),
            "--latency", str(int(self.latency)),
            "--max-outstanding", str(int(self.max_outstanding)),
        ]
        if self.pages is not None:
            pg = self.pages
            args += ["--row-bytes", str(pg.row_bytes), "--banks", str(pg.banks),
                     "--row-miss", str(pg.row_miss), "--turnaround", str(pg.turnaround)]
        return args


def harness_spec(
    name: str,
    top: str,
    sources: Sequence[Path],
    main_cpp: Path,
    parameters: Mapping[str, int],
    extra_flags: Sequence[str] = (),
) -> HarnessSpec:
    """A HarnessSpec whose main includes the shared hil_harness.h (hashed into the cache key), compiled
    for this host's CPU (`host_cflags`)."""
    return HarnessSpec(
        name=name,
        top=top,
        sources=list(sources),
        main_cpp=main_cpp,
        parameters=dict(parameters),
        extra_flags=list(extra_flags),
        headers=[HARNESS_HEADER],
        cxx_flags=host_cflags(),
    )


def host_cflags() -> tuple[str, ...]:
    """C++ flags that compile the Verilated model for the CPU it will run on.

    On x86-64, -march=native lets the compiler use the host's vector units for the wide datapaths
    (BISMO's 256-bit AND/popcount lanes compile to AVX-512 VPOPCNTQ where the CPU has it): the
    bismo-cloud harness ran 2.5x faster on the project's EPYC VM. A binary built so may not run on
    another CPU, so the CPU's identity (model and ISA flags) goes into the build as a macro, which
    puts it into the cache key: a cache shared between different machines never hands one the
    other's binary. They are `HarnessSpec.cxx_flags`, outside the model's identity: what the binary
    simulates, and so the LUT it builds, is the same on every CPU.
    """
    flags = ["-CFLAGS", "-O3"]
    machine = platform.machine().lower()
    ident = machine
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith(("model name", "flags", "Features", "CPU part")):
            ident += "|" + " ".join(line.split())
            if line.startswith(("flags", "Features")):
                break
    if machine in ("x86_64", "amd64"):
        flags += ["-CFLAGS", "-march=native"]
    isa = hashlib.sha256(ident.encode()).hexdigest()[:12]
    return (*flags, "-CFLAGS", f"-DHIL_HOST_ISA={isa}")


class SimHarness:
    """RegisterInterface over a running harness process."""

    def __init__(self, exe: Path, dram: DramConfig, name: str = "") -> None:
        self.name = name or Path(exe).parent.name
        self.dram = dram
        self._stderr: list[bytes] = []
        try:
            self._proc = subprocess.Popen(
                [str(exe), *dram.argv()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
            )
        except OSError as e:
            raise SimError(f"harness {self.name}: cannot start {exe}: {e}") from None
        # stderr carries $display output and crash messages; drain it so the process never blocks.
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()
        self._in = self._proc.stdin
        self._out = self._proc.stdout
        hello = self._recv(struct.calcsize("<4sIIQ"))
        magic, version, beat, size = struct.unpack("<4sIIQ", hello)
        if magic != b"HILH" or version != PROTOCOL_VERSION:
            self.close()
            raise SimError(f"harness {self.name}: unexpected greeting {hello!r} (protocol {PROTOCOL_VERSION})")
        self.beat_bytes = beat
        self.mem_bytes = size
        # bumped by whatever changes the DRAM model's timing (set_dram, set_pages, reset), so a
        # driver that remembers runs never returns one made under other settings
        self.dram_epoch = 0

    # --- plumbing ---
    def _drain_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line)
            del self._stderr[:-50]

    def _died(self, what: str) -> SimError:
        self._proc.poll()
        self._stderr_thread.join(timeout=1)
        tail = b"".join(self._stderr[-10:]).decode(errors="replace").strip()
        rc = self._proc.returncode
        return SimError(f"harness {self.name} {what} (exit code {rc}){': ' + tail if tail else ''}")

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:  # a raw pipe write may be partial
                view = view[self._in.write(view) :]
        except (BrokenPipeError, OSError, ValueError):
            raise self._died("is not running") from None

    def _recv(self, n: int) -> bytes:
        chunks = []
        while n:
            got = self._out.read(n)
            if not got:
                raise self._died("closed its output")
            chunks.append(got)
            n -= len(got)
        return b"".join(chunks)

    def _status(self, what: str) -> None:
        status = self._recv(1)[0]
        if status == 0:
            return
        (length,) = struct.unpack("<I", self._recv(4))
        msg = self._recv(length).decode(errors="replace")
        raise SimError(f"harness {self.name}: {what}: {msg}")

    # --- RegisterInterface ---
    def write_reg(self, index: int, value: int) -> None:
        self._send(struct.pack("<BII", _WRITE_REG, index, value & 0xFFFFFFFF))
        self._status(f"write_reg({index})")

    def read_reg(self, index: int) -> int:
        self._send(struct.pack("<BI", _READ_REG, index))
        self._status(f"read_reg({index})")
        return struct.unpack("<I", self._recv(4))[0]

    def write_regs(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Several register writes in one round trip (each is one clock cycle, in order)."""
        arr = np.asarray(list(pairs), dtype=np.int64).reshape(-1, 2)
        payload = (arr & 0xFFFFFFFF).astype("<u4").tobytes()
        self._send(struct.pack("<BI", _WRITE_REGS, len(arr)) + payload)
        self._status("write_regs")

    def read_regs(self, indices: Sequence[int]) -> list[int]:
        idx = np.asarray(indices, dtype="<u4")
        self._send(struct.pack("<BI", _READ_REGS, len(idx)) + idx.tobytes())
        self._status("read_regs")
        return np.frombuffer(self._recv(4 * len(idx)), dtype="<u4").astype(int).tolist()

    def write_mem(self, addr: int, data: np.ndarray | bytes) -> None:
        raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        self._send(struct.pack("<BQQ", _WRITE_MEM, addr, len(raw)))
        self._send(raw)
        self._status(f"write_mem(0x{addr:x}, {len(raw)} bytes)")

    def read_mem(self, addr: int, nbytes: int) -> np.ndarray:
        self._send(struct.pack("<BQQ", _READ_MEM, addr, nbytes))
        self._status(f"read_mem(0x{addr:x}, {nbytes} bytes)")
        return np.frombuffer(self._recv(nbytes), dtype=np.uint8).copy()

    def run_until_done(self, max_cycles: int) -> int:
        self._send(struct.pack("<BQ", _RUN, max_cycles))
        self._status("run")
        done, cycles = struct.unpack("<BQ", self._recv(9))
        if not done:
            raise SimTimeoutError(
                f"harness {self.name}: the accelerator did not raise done within {max_cycles:,} cycles"
            )
        return cycles

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the harness process has used so far: simulation speed on a shared
        machine is cycles per CPU-second, which other work does not dilute as it does wall time."""
        try:
            fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._in.write(struct.pack("<B", _QUIT))
                self._in.close()
                self._proc.wait(timeout=10)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        for f in (self._proc.stdin, self._proc.stdout):
            if f and not f.closed:
                f.close()
        self._stderr_thread.join(timeout=2)
        if self._proc.stderr and not self._proc.stderr.closed:
            self._proc.stderr.close()

    # --- harness extras (not part of RegisterInterface) ---
    def step(self, cycles: int) -> None:
        self._send(struct.pack("<BQ", _STEP, cycles))
        self._status("step")

    def stats(self) -> dict[str, int]:
        """The DRAM model's own counters (cycles, beats, bytes, stalls) since start or clear_stats."""
        self._send(struct.pack("<B", _STATS))
        self._status("stats")
        (count,) = struct.unpack("<I", self._recv(4))
        vals = struct.unpack(f"<{count}Q", self._recv(8 * count))
        return dict(zip(STAT_NAMES, vals, strict=False))

    def clear_stats(self) -> None:
        self._send(struct.pack("<B", _CLEAR_STATS))
        self._status("clear_stats")

    def set_dram(self, bytes_per_cycle: float, latency: int, max_outstanding: int = 256) -> None:
        """Change the DRAM model's bandwidth and latency (takes effect on the next cycle)."""
        self.dram_epoch += 1
        self._send(struct.pack("<BdII", _SET_DRAM, bytes_per_cycle, latency, max_outstanding))
        self._status("set_dram")

    def set_pages(self, pages: DramPages | None) -> None:
        """Change (or with None switch off) the DRAM's page model; open rows are forgotten."""
        fields = (0, 1, 0, 0) if pages is None else (pages.row_bytes, pages.banks, pages.row_miss, pages.turnaround)
        self.dram_epoch += 1
        self._send(struct.pack("<BIIII", _SET_PAGES, *fields))
        self._status("set_pages")

    def reset(self, cycles: int = 4) -> None:
        """Hold the design in reset for `cycles` cycles and drop reads in flight (memory is kept)."""
        self.dram_epoch += 1
        self._send(struct.pack("<BI", _RESET, cycles))
        self._status("reset")

    def __enter__(self) -> SimHarness:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
