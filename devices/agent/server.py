"""The remote agent: runs on an SSH target with the target's own Python and times workloads there.

It is pushed over SFTP as a small `hil` package tree into a content-hashed directory
(`<workdir>/agent-<hash>/`, see `hil.devices.host.agent_bundle`) and started as `<python> <dir>/hil_agent.py`
(`devices/agent/launcher.py`): nothing from the inventory or a workload is on that command line. The
launcher checks every file of the bundle against its manifest before importing any of them. The
agent speaks JSON lines: one object per line on stdin (requests, field `op`) and stdout (replies,
field `type`).

    agent: hello     {agent_version, protocol, bundle, bundle_ok, python, executable, pid, user,
                      host, capabilities}
                     (a bundle that does not verify: the launcher answers bundle_ok false and
                      bundle_problem, and exits; it is never half-used)
    open      {device, backend, cpus, idle_timeout_s, options}
                                                      -> opened {backend, host_artifacts, provenance}
              (options, e.g. the inventory's `rtl:` section, go to the backend's configure(options);
               a board backend with no board answers error kind `no_board`)
    describe  {settings}                                      -> fingerprint {fingerprint}
    measure   {id, settings, workloads: [...], artifacts: {workload key: {name: remote path}}}
              (artifacts go to the backend's use_artifacts(workload, settings, paths) first)
              -> measurement {id, measurement} per workload, as each finishes; then done {id, count}
    lease     {holder, timeout_s}  -> lease_wait {holder} every few seconds while taken; then leased
    release   {}                   -> released
    lease_info {}                  -> lease_info {holder | null}
    ping      {}                   -> pong
    bye       {}                   -> bye, and the agent exits
    any error                      -> error {kind, message, ...}

Measurements follow MEASUREMENT.md through the same code as in-process targets (`LocalTarget`,
`run_backend`), so a LUT built over SSH and one built locally differ only by where they ran. The
device lease is an flock in the workdir held by this process: it ends when the agent exits or its SSH
session dies. The agent exits on end of input, on `bye`, or after `idle_timeout_s` without a request.

Agent-side code: standard library + the runtimes of the backends it hosts.
"""

from __future__ import annotations

import getpass
import importlib.metadata
import importlib.util
import json
import os
import platform
import select
import sys
import time
import traceback
from pathlib import Path
from typing import Any, BinaryIO

from hil.devices.agent.backend import HostBuiltModels
from hil.devices.agent.host_info import host_class
from hil.devices.agent.local import AGENT_VERSION, LocalTarget
from hil.devices.agent.registry import make_backend
from hil.errors import HilError, NoBoardError
from hil.lease import FileLease, LeaseBusy
from hil.measure import MeasureSettings
from hil.workload import workload_from_json

PROTOCOL = 1
MANIFEST = "MANIFEST.json"  # the launcher reads it under this name
LEASE_FILE = "lease.lock"
LAUNCHER = "hil_agent.py"
LEASE_HEARTBEAT_S = 5.0

# capability name -> (module to look for, distributions that may carry its version)
RUNTIMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "torch": ("torch", ("torch",)),
    "litert": ("ai_edge_litert", ("ai-edge-litert", "ai-edge-litert-nightly")),
    "tflite_runtime": ("tflite_runtime", ("tflite-runtime",)),
    "tensorflow": ("tensorflow", ("tensorflow", "tensorflow-cpu", "tf-nightly")),
    "pynq": ("pynq", ("pynq",)),
}


def _version(module: str, dists: tuple[str, ...]) -> str | None:
    """The runtime's version, None when this Python cannot import it. Nothing is imported here."""
    if importlib.util.find_spec(module) is None:
        return None
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def capabilities() -> dict[str, Any]:
    """Which runtimes this Python has, with versions; CUDA as torch sees it."""
    caps: dict[str, Any] = {name: _version(*where) for name, where in RUNTIMES.items()}
    caps["cuda"] = None
    if caps["torch"]:
        try:
            import torch

            caps["cuda"] = {
                "built": torch.version.cuda,
                "available": bool(torch.cuda.is_available()),
                "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            }
        except Exception as e:  # a broken torch install is a capability answer too
            caps["cuda"] = {"error": f"{type(e).__name__}: {e}"}
    return caps


class _Lines:
    """Lines from a file descriptor, with an idle timeout (select), no buffering surprises."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def read(self, timeout_s: float) -> bytes | None:
        """One line; b'' at end of input; None after `timeout_s` with nothing."""
        while b"\n" not in self.buf:
            ready, _, _ = select.select([self.fd], [], [], timeout_s)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return b""
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line


class RequestError(Exception):
    """A request the agent refuses; sent back as `error {kind, message}` (the host raises it as
    `RemoteAgentError`)."""

    def __init__(self, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.extra = extra


class Agent:
    def __init__(self, root: Path, out: BinaryIO) -> None:
        self.root = root
        self.out = out
        self.lease = FileLease(root.parent / LEASE_FILE)
        self.idle_timeout_s = 120.0
        self.device = ""
        self.backend: Any = None
        self.cpus: list[int] | None = None

    def send(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, default=str).encode() + b"\n")
        self.out.flush()

    def hello(self, bundle: str) -> None:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        self.send({
            "type": "hello", "agent_version": AGENT_VERSION, "protocol": PROTOCOL, "bundle": bundle,
            "bundle_ok": True, "python": platform.python_version(), "executable": sys.executable,
            "pid": os.getpid(), "user": user, "host": host_class(), "capabilities": capabilities(),
        })

    # -- requests ---------------------------------------------------------------------------

    def op_open(self, req: dict[str, Any]) -> None:
        self.idle_timeout_s = float(req.get("idle_timeout_s", self.idle_timeout_s))
        name = str(req["backend"])
        try:
            backend = make_backend(name, dict(req.get("options") or {}))
        except NoBoardError as e:  # no PYNQ, no device, no bitstream: absent, not misconfigured
            raise RequestError("no_board", str(e)) from None
        except (ImportError, HilError) as e:  # the runtime is missing here, no such backend, bad options
            raise RequestError("backend_unavailable", str(e)) from None
        self.backend = backend
        self.device = str(req["device"])
        cpus = req.get("cpus")
        self.cpus = [int(c) for c in cpus] if cpus else None
        # The host builds files for this backend only if it says so: spares the host its runtime import.
        self.send({"type": "opened", "backend": name, "host_artifacts": isinstance(backend, HostBuiltModels),
                   "provenance": getattr(backend, "provenance", "measured")})

    def _target(self) -> Any:
        if self.backend is None:
            raise RequestError("protocol", "no backend open: send 'open' first")
        return LocalTarget(self.device, self.backend, self.cpus)

    def op_describe(self, req: dict[str, Any]) -> None:
        fp = self._target().describe(MeasureSettings.from_json(req["settings"]))
        self.send({"type": "fingerprint", "fingerprint": fp})

    def op_measure(self, req: dict[str, Any]) -> None:
        target = self._target()
        rid = req.get("id")
        settings = MeasureSettings.from_json(req["settings"])
        try:
            workloads = [workload_from_json(d) for d in req["workloads"]]
        except HilError as e:
            raise RequestError("bad_request", str(e)) from None
        artifacts = req.get("artifacts") or {}
        if artifacts:
            if not isinstance(self.backend, HostBuiltModels):
                raise RequestError("bad_request", f"backend {self.backend.name!r} takes no artifacts")
            for w in workloads:
                if w.key in artifacts:
                    self.backend.use_artifacts(w, settings, {name: str(p) for name, p in artifacts[w.key].items()})
        n = 0
        for m in target.measure(workloads, settings):
            self.send({"type": "measurement", "id": rid, "measurement": m.to_json()})
            n += 1
        self.send({"type": "done", "id": rid, "count": n})

    def op_lease(self, req: dict[str, Any]) -> None:
        holder = dict(req.get("holder") or {})
        holder["agent_pid"] = os.getpid()
        if self.lease.held:
            self.send({"type": "leased"})
            return
        try:
            self.lease.acquire(holder, float(req.get("timeout_s", 0)),
                               on_wait=lambda h: self.send({"type": "lease_wait", "holder": h}),
                               heartbeat_s=LEASE_HEARTBEAT_S)
        except LeaseBusy as e:
            raise RequestError("lease_busy", str(e), holder=e.holder, waited_s=e.waited_s) from None
        self.send({"type": "leased"})

    def op_release(self, req: dict[str, Any]) -> None:
        self.lease.release()
        self.send({"type": "released"})

    def op_lease_info(self, req: dict[str, Any]) -> None:
        self.send({"type": "lease_info", "holder": None if self.lease.held else self.lease.holder(),
                   "mine": self.lease.held})

    def op_ping(self, req: dict[str, Any]) -> None:
        self.send({"type": "pong", "t": time.time()})

    def serve(self, fd: int) -> int:
        lines = _Lines(fd)
        while True:
            line = lines.read(self.idle_timeout_s)
            if line is None:
                print(f"hil agent: idle for {self.idle_timeout_s:g} s, exiting", file=sys.stderr)
                return 0
            if line == b"":
                return 0
            if not line.strip():
                continue
            try:
                req = json.loads(line)
                op = req["op"]
            except (ValueError, KeyError, TypeError):
                self.send({"type": "error", "kind": "protocol", "message": "not a JSON request with an 'op'"})
                continue
            if op == "bye":
                self.send({"type": "bye"})
                return 0
            handler = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
            if handler is None:
                self.send({"type": "error", "kind": "protocol", "message": f"unknown op {op!r}"})
                continue
            try:
                handler(req)
            except RequestError as e:
                self.send({"type": "error", "kind": e.kind, "message": str(e), **e.extra})
            except BrokenPipeError:
                return 1
            except Exception as e:  # a bug here must not leave the coordinator waiting
                traceback.print_exc()
                self.send({"type": "error", "kind": "agent_bug", "message": f"{type(e).__name__}: {e}"})


def main(root: str, bundle: str) -> int:
    """Serve requests; the launcher checked every file against bundle `bundle` before importing us."""
    # The protocol owns the real stdout; anything a runtime prints goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    agent = Agent(Path(root), out)
    try:
        agent.hello(bundle)
        return agent.serve(0)
    except BrokenPipeError:  # the coordinator went away
        return 1
    finally:
        agent.lease.release()
