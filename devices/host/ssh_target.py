"""The SSH target: a device reached over SSH, timed by the remote agent running on it.

`AgentSession` connects (ssh_transport), pushes the agent bundle if the target lacks it, starts the
agent with the target's Python and checks its handshake. The command line is the validated,
quoted interpreter path and the bundle's launcher path, nothing else: device names, workloads and
settings travel only inside the JSON-lines stream.

`SshTarget` is the Target seam on top: it opens the device's backend in the agent, sends workloads
in batches and yields each Measurement as soon as its line arrives, takes the device's lease on
the device itself, and pushes host-built artifacts (a backend's `host_artifacts(workload, settings)`,
e.g. converted .tflite models) to content-hashed paths on the target before measuring.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import paramiko

from hil.devices.agent.backend import MeasureFailure
from hil.devices.agent.server import LAUNCHER, LEASE_HEARTBEAT_S
from hil.devices.agent.tflite_backend import ModelSource
from hil.devices.host.agent_bundle import Bundle, make_bundle, push_bundle, push_file
from hil.devices.host.artifacts import host_artifacts, model_source
from hil.devices.host.ssh_transport import DeviceConfigError, SshConnection, connect, safe_remote_path
from hil.errors import ConfigError, DeviceError
from hil.inventory import Device, SshConfig, python_problem
from hil.lease import Holder, LeaseBusyError
from hil.measure import ErrorKind, Measurement, MeasureSettings
from hil.workload import Workload

ARTIFACT_BATCH = 16  # workloads per request when each needs files built on the host first


class BoardAbsentError(DeviceError):
    """The device answers, but its board is not there: no PYNQ in its Python, PYNQ finds no device,
    or the overlay's bitstream is missing. The device is absent (its substitute may stand in, when
    allowed), not misconfigured past repair."""


class RemoteAgentError(DeviceError):
    """The agent answered a request with an error."""

    def __init__(self, device: str, kind: str, message: str, reply: dict[str, Any]) -> None:
        self.kind = kind
        self.reply = reply
        super().__init__(device, message)


def check_python(device: str, python: str) -> str:
    """The inventory's `ssh.python`: a bare command name or a path, nothing a shell could read more
    into. The inventory already refuses anything else; checked again here because an `SshConfig` can
    be made in code too."""
    problem = python_problem(python)
    if problem:
        raise ConfigError(f"device {device!r}, field 'ssh.python': {python!r} {problem}")
    return python


class AgentSession:
    """A running agent on a device and the line protocol to it."""

    def __init__(self, device: str, cfg: SshConfig) -> None:
        self.device = device
        self.cfg = cfg
        python = check_python(device, cfg.python)  # before any connection: bad config is not a device fault
        t0 = time.perf_counter()
        self.conn: SshConnection = connect(device, cfg)
        self.connect_s = time.perf_counter() - t0
        self.channel: paramiko.Channel | None = None
        self.exit_status: int | None = None  # the agent's, once it has exited
        self.last_sent = time.monotonic()
        self._buf = b""
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        try:
            self.sftp = self.conn.sftp()
            self.workdir = self.conn.remote_path(self.sftp, cfg.workdir, "ssh.workdir")
            self.python = self.conn.remote_path(self.sftp, python, "ssh.python") if python.startswith("~") else python
            self.bundle: Bundle = make_bundle()
            self.hello = self._start()
        except BaseException:
            self.close()
            raise

    # -- start-up ---------------------------------------------------------------------------

    def _start(self) -> dict[str, Any]:
        bundle_dir = push_bundle(self.sftp, self.workdir, self.bundle)
        hello = self._launch(bundle_dir)
        if hello.get("bundle") == self.bundle.hash and hello.get("bundle_ok"):
            return hello
        # A damaged or foreign bundle in our directory: replace it, never run half of it.
        self._close_channel()
        bundle_dir = push_bundle(self.sftp, self.workdir, self.bundle, replace=True)
        hello = self._launch(bundle_dir)
        if hello.get("bundle") != self.bundle.hash or not hello.get("bundle_ok"):
            raise DeviceError(self.device, f"the agent bundle in {bundle_dir} does not verify even after "
                              f"replacing it: {hello.get('bundle_problem') or 'hash mismatch'}")
        return hello

    def _launch(self, bundle_dir: str) -> dict[str, Any]:
        launcher = safe_remote_path(self.device, "agent path", f"{bundle_dir}/{LAUNCHER}")
        command = " ".join(shlex.quote(a) for a in (self.python, launcher))
        ch = self.conn.open_session()
        try:
            ch.exec_command(command)
        except (paramiko.SSHException, OSError) as e:
            raise DeviceError(self.device, f"cannot start the agent: {e}") from None
        self.channel = ch
        self._buf = b""
        self._stderr.clear()
        threading.Thread(target=self._drain_stderr, args=(ch,), name=f"agent-stderr-{self.device}",
                         daemon=True).start()
        try:
            hello = self.recv(starting=True)
        except DeviceError as e:
            if self.exit_status == 127:  # the shell's "command not found"
                raise DeviceConfigError(self.device, f"ssh.python {self.python!r} was not found on the target "
                                        f"({str(e).split(': ', 1)[-1]})") from None
            raise
        if hello.get("type") == "error":
            raise DeviceConfigError(self.device, f"the agent cannot start with {self.python}: {hello.get('message')}")
        if hello.get("type") != "hello":
            raise DeviceError(self.device, f"agent sent {hello.get('type')!r} instead of its handshake")
        return hello

    def _drain_stderr(self, ch: paramiko.Channel) -> None:
        """Keep the agent's stderr flowing (a full window would stall it) and its tail for error messages."""
        pending = b""
        while True:
            try:
                data = ch.recv_stderr(4096)
            except TimeoutError:
                if ch.closed:
                    return
                continue
            except Exception:
                return
            if not data:
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            self._stderr.extend(x.decode(errors="replace") for x in lines if x.strip())

    # -- the line protocol --------------------------------------------------------------------

    def send(self, obj: dict[str, Any]) -> None:
        if self.channel is None:
            raise DeviceError(self.device, "the agent is not running")
        try:
            self.channel.sendall(json.dumps(obj).encode() + b"\n")
            self.last_sent = time.monotonic()
        except (OSError, paramiko.SSHException, EOFError) as e:
            raise self._dead(f"cannot send to the agent: {e or 'channel closed'}") from None

    def recv(self, starting: bool = False, timeout: float | None = None) -> dict[str, Any]:
        """The next line from the agent; DeviceError on timeout, a lost connection or the agent's exit.

        Replies wait up to ssh.command_timeout_s; the agent's start-up (handshake, loading the backend's
        runtime) up to the larger of that and ssh.connect_timeout_s."""
        if self.channel is None:
            raise DeviceError(self.device, "the agent is not running")
        if timeout is None:
            timeout = self.cfg.command_timeout_s
            if starting:
                timeout = max(timeout, self.cfg.connect_timeout_s)
        self.channel.settimeout(timeout)
        while b"\n" not in self._buf:
            try:
                data = self.channel.recv(65536)
            except TimeoutError:
                what = "its start-up" if starting else "ssh.command_timeout_s"
                self._close_channel()  # a late reply would put the stream out of step: this agent is done
                raise DeviceError(self.device, f"the agent sent nothing for {timeout:g} s ({what})") from None
            except (OSError, paramiko.SSHException, EOFError) as e:
                raise self._dead(f"connection lost: {e or 'closed'}") from None
            if not data:
                raise self._dead("the agent exited")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError:
            raise DeviceError(self.device, f"the agent sent a line that is not JSON: {line[:200]!r}") from None
        if not isinstance(msg, dict):
            raise DeviceError(self.device, "the agent sent JSON that is not an object")
        return msg

    def _dead(self, what: str) -> DeviceError:
        ch = self.channel
        status = None
        if ch is not None:
            deadline = time.monotonic() + 1.0
            while not ch.exit_status_ready() and time.monotonic() < deadline and self.conn.alive():
                time.sleep(0.02)
            if ch.exit_status_ready():
                status = self.exit_status = ch.recv_exit_status()
            self._close_channel()
        if not self.conn.alive():
            what = f"connection to {self.conn.endpoint} lost"
        detail = f" (exit status {status})" if status not in (None, -1) else ""
        tail = f": {self._stderr[-1]}" if self._stderr else ""
        return DeviceError(self.device, f"{what}{detail}{tail}")

    def request(
        self, obj: dict[str, Any], expect: str, starting: bool = False, timeout: float | None = None
    ) -> dict[str, Any]:
        self.send(obj)
        msg = self.recv(starting, timeout)
        if msg.get("type") == "error":
            raise RemoteAgentError(self.device, str(msg.get("kind")), str(msg.get("message")), msg)
        if msg.get("type") != expect:
            raise DeviceError(self.device, f"the agent answered {msg.get('type')!r}, expected {expect!r}")
        return msg

    def keep_alive(self) -> None:
        """While the host works between requests (building artifacts), keep the agent from idling out."""
        if time.monotonic() - self.last_sent > self.cfg.idle_timeout_s / 3:
            self.ping()

    def ping(self) -> float:
        """One request/reply round trip through SSH and the agent, in milliseconds."""
        t0 = time.perf_counter()
        self.request({"op": "ping"}, "pong")
        return (time.perf_counter() - t0) * 1e3

    # -- the device's lease, held by this agent on the target ----------------------------------

    def acquire_lease(self, holder: Holder, timeout_s: float, on_wait: Callable[[Holder | None], None]) -> None:
        self.send({"op": "lease", "holder": holder, "timeout_s": timeout_s})
        told = False
        while True:
            # while it waits the agent sends a heartbeat every LEASE_HEARTBEAT_S
            msg = self.recv(timeout=max(self.cfg.command_timeout_s, 3 * LEASE_HEARTBEAT_S))
            kind = msg.get("type")
            if kind == "leased":
                return
            if kind == "lease_wait":
                if not told:
                    on_wait(msg.get("holder"))
                    told = True
                continue
            if kind == "error" and msg.get("kind") == "lease_busy":
                raise LeaseBusyError(self.device, msg.get("holder"), float(msg.get("waited_s") or timeout_s))
            if kind == "error":
                raise RemoteAgentError(self.device, str(msg.get("kind")), str(msg.get("message")), msg)
            raise DeviceError(self.device, f"unexpected {kind!r} from the agent while leasing")

    def release_lease(self) -> None:
        if self.channel is None or not self.conn.alive():
            return  # the agent is gone, and its lease with it
        with contextlib.suppress(DeviceError):
            self.request({"op": "release"}, "released")

    def lease_holder(self) -> Holder | None:
        return self.request({"op": "lease_info"}, "lease_info").get("holder")

    # -- shutting down -------------------------------------------------------------------------

    def abandon(self) -> None:
        """Stop this agent without a goodbye: its reply stream is out of step (or the link is gone)."""
        self._close_channel()

    def _close_channel(self) -> None:
        ch, self.channel = self.channel, None
        if ch is not None:
            with contextlib.suppress(Exception):
                ch.close()

    def close(self) -> None:
        if self.channel is not None and self.conn.alive():
            with contextlib.suppress(DeviceError):
                self.request({"op": "bye"}, "bye", timeout=min(5.0, self.cfg.command_timeout_s))
        self._close_channel()
        if getattr(self, "sftp", None) is not None:
            with contextlib.suppress(Exception):
                self.sftp.close()
        self.conn.close()


class SshTarget:
    """A device reached over SSH (`ssh:` in the inventory)."""

    provenance = "measured"

    def __init__(self, name: str, device: Device, session: AgentSession | None = None) -> None:
        """Connect, start the agent (or take over a started `session`) and open the device's backend."""
        if device.ssh is None:
            raise ConfigError(f"device {name!r} has no 'ssh:' section")
        self.name = name
        self.device = device
        self.session = session or AgentSession(name, device.ssh)
        self._ids = itertools.count(1)
        self._artifact_cache: dict[str, str] = {}
        self._models: ModelSource | None = None  # the host's builder, for backends that time host-built models
        options = device.backend_options()
        try:
            opened = self.session.request(
                {"op": "open", "device": name, "backend": device.backend, "cpus": device.cpus,
                 "idle_timeout_s": device.ssh.idle_timeout_s, "options": options},
                "opened", starting=True,
            )
            if opened.get("host_artifacts"):
                self._models = model_source(device.backend)
            self.provenance = str(opened.get("provenance") or SshTarget.provenance)
        except RemoteAgentError as e:
            self.session.close()
            if e.kind == "no_board":
                raise BoardAbsentError(name, f"no board: {e.reply.get('message')}") from None
            if e.kind == "backend_unavailable":
                h = self.session.hello
                raise DeviceConfigError(name, f"the target's Python ({h.get('executable')}, {h.get('python')}) "
                                  f"cannot run backend {device.backend!r}: {e.reply.get('message')}") from None
            raise
        except BaseException:
            self.session.close()
            raise

    @property
    def hello(self) -> dict[str, Any]:
        return self.session.hello

    def describe(self, settings: MeasureSettings) -> dict[str, Any]:
        return self.session.request({"op": "describe", "settings": settings.to_json()}, "fingerprint")["fingerprint"]

    def _push_artifacts(self, w: Workload, settings: MeasureSettings) -> dict[str, str]:
        """Build `w`'s files on this host (the backend's host side) and put them on the target."""
        assert self._models is not None
        paths = {}
        for name, local in host_artifacts(self._models, w, settings).items():
            local = Path(local)
            st = local.stat()
            key = f"{local.resolve()}:{st.st_mtime_ns}:{st.st_size}"
            if key not in self._artifact_cache:
                try:
                    self._artifact_cache[key] = push_file(self.session.sftp, local, f"{self.session.workdir}/artifacts")
                except (OSError, paramiko.SSHException) as e:
                    raise DeviceError(self.name, f"cannot push artifact {local} for {w.key}: {e}") from None
            paths[name] = self._artifact_cache[key]
        return paths

    def _prepare(
        self, chunk: Sequence[Workload], settings: MeasureSettings
    ) -> tuple[list[Workload], dict[str, dict[str, str]], list[Measurement]]:
        """Artifacts for a batch. A workload whose files cannot be built here becomes a failed record,
        as it would in-process (the backend raises the same MeasureFailure there)."""
        if self._models is None:
            return list(chunk), {}, []
        send, artifacts, failed = [], {}, []
        fp: dict[str, Any] | None = None
        for w in chunk:
            self.session.keep_alive()
            try:
                artifacts[w.key] = self._push_artifacts(w, settings)
            except DeviceError:
                raise
            except Exception as e:
                kind = e.kind if isinstance(e, MeasureFailure) else ErrorKind.BUILD_ERROR
                msg = str(e) if isinstance(e, MeasureFailure) else f"{type(e).__name__}: {e}"
                fp = fp or self.describe(settings)
                failed.append(Measurement.failure(self.name, w.key, w.to_json(), fp, self.provenance, kind,
                                                  f"on the host: {msg}"))
                continue
            send.append(w)
        return send, artifacts, failed

    def measure(self, workloads: Sequence[Workload], settings: MeasureSettings) -> Iterator[Measurement]:
        """One request per batch; each Measurement is yielded as soon as the agent reports it."""
        size = ARTIFACT_BATCH if self._models is not None else max(1, len(workloads))
        # every request of a leveled build carries the level workloads (MeasureSettings.level_keys)
        levels = [w for w in workloads if w.key in settings.level_keys]
        rest = [w for w in workloads if w.key not in settings.level_keys]
        for part in [[*levels, *rest[i : i + size]] for i in range(0, len(rest), size)] or [list(workloads)]:
            chunk, artifacts, failed = self._prepare(part, settings)
            yield from failed
            if not chunk:
                continue
            rid = next(self._ids)
            self.session.send({"op": "measure", "id": rid, "settings": settings.to_json(),
                               "workloads": [w.to_json() for w in chunk], "artifacts": artifacts})
            done = False
            try:
                while True:
                    msg = self.session.recv()
                    kind = msg.get("type")
                    if kind == "measurement" and msg.get("id") == rid:
                        yield Measurement.from_json(msg["measurement"])
                    elif kind == "done" and msg.get("id") == rid:
                        done = True
                        break
                    elif kind == "error":
                        done = True  # the agent rejected the whole request and is ready for the next
                        raise RemoteAgentError(self.name, str(msg.get("kind")), str(msg.get("message")), msg)
                    else:
                        raise DeviceError(self.name, f"unexpected {kind!r} from the agent during a measurement")
            finally:
                if not done:
                    # Abandoned mid-batch (consumer stopped, or the link failed): the stream is out of
                    # step, so this agent is finished; the store already has what was yielded.
                    self.session.abandon()

    # -- the lease, held by the agent on the device --------------------------------------------

    def acquire_lease(self, holder: Holder, timeout_s: float, on_wait: Callable[[Holder | None], None]) -> None:
        self.session.acquire_lease(holder, timeout_s, on_wait)

    def release_lease(self) -> None:
        self.session.release_lease()

    def lease_holder(self) -> Holder | None:
        return self.session.lease_holder()

    def ping(self) -> float:
        return self.session.ping()

    def close(self) -> None:
        self._clean_artifacts()
        self.session.close()

    def _clean_artifacts(self) -> None:
        """Remove the models this session pushed: a phone's storage is not ours to fill. (The lease
        makes this session the only user of the device, so nobody else is reading them.)"""
        pushed, self._artifact_cache = set(self._artifact_cache.values()), {}
        for remote in pushed:
            # a dead link: nothing more to clean from here, and nothing measured depends on it
            with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
                self.session.sftp.remove(remote)


def probe(name: str, device: Device) -> AgentSession:
    """A started agent without a backend: what `hil farm check` inspects."""
    if device.ssh is None:
        raise ConfigError(f"device {name!r} has no 'ssh:' section")
    return AgentSession(name, device.ssh)
