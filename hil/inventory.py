"""inventory.yaml: the farm's devices, validated into typed models.

A device names the backend that times workloads on it (`torch-cpu`, `torch-cuda`, `tflite`,
`rtl-sim`, `pynq`) and, when it is remote, how to reach it (`ssh:`). Without `ssh:` the backend runs
in this process. Errors name the file, the device and the field; unknown keys are rejected.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hil.errors import ConfigError

DEFAULT_INVENTORY = "inventory.yaml"
MAX_INVENTORY_BYTES = 1 << 20  # a farm's inventory is a few KiB; anything this large is a wrong file

# What a remote path or command name may contain: nothing a shell could read more into (they are also
# quoted where used). The SSH target applies the same rules to the paths it derives.
SAFE_REMOTE_PATH = re.compile(r"^[A-Za-z0-9_./+@%=:,-]+$")
BARE_COMMAND = re.compile(r"^[A-Za-z0-9_.+-]+$")


def remote_path_problem(path: str) -> str | None:
    """Why `path` is not a safe remote path (None when it is)."""
    if not SAFE_REMOTE_PATH.match(path) or ".." in path.split("/"):
        return "may contain only letters, digits and _ . / + @ % = : , - (no '..')"
    return None


def _home_relative(path: str) -> str:
    # '~' and '~/x' are expanded on the target to its home directory, so they are safe as written
    return "." if path == "~" else path[2:] if path.startswith("~/") else path


def python_problem(python: str) -> str | None:
    """Why `python` is neither a plain command name nor a safe path (None when it is one)."""
    if "/" in python or python.startswith("~"):
        return remote_path_problem(_home_relative(python))
    if not BARE_COMMAND.match(python):
        return "is not a plain command name or path"
    return None

BackendName = Literal["torch-cpu", "torch-cuda", "tflite", "rtl-sim", "pynq"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SshConfig(_Strict):
    """How to reach a remote device. Keys only; host keys checked strictly against known_hosts."""

    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str
    key_file: str | None = Field(None, description="private key; omitted: the ssh-agent's keys")
    known_hosts: str | None = Field(None, description="known_hosts file; omitted: ~/.ssh/known_hosts")
    python: str = Field("python3", description="the target's Python interpreter")
    workdir: str = Field("~/.cache/hil-agent", description="where the agent is pushed on the target")
    jump: SshConfig | None = Field(None, description="optional jump host (ProxyJump)")
    connect_timeout_s: float = Field(10.0, gt=0)
    command_timeout_s: float = Field(600.0, gt=0)
    idle_timeout_s: float = Field(120.0, gt=0)

    @field_validator("python")
    @classmethod
    def _python(cls, v: str) -> str:
        problem = python_problem(v)
        if problem:
            raise ValueError(f"{v!r} {problem}")
        return v

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str) -> str:
        problem = remote_path_problem(_home_relative(v))
        if problem:
            raise ValueError(f"{v!r} {problem}")
        return v


class RtlConfig(_Strict):
    """Which accelerator configuration an rtl-sim (or PYNQ) device runs."""

    accelerator: Literal["bitfusion-spatial", "bismo-edge", "bismo-cloud"] | str
    overrides: dict[str, int | float] = Field(default_factory=dict, description="parameter overrides")
    workers: int | None = Field(
        None, ge=1, le=64,
        description="harness processes this device may run (default: the machine's cores); the rtl-sim "
                    "devices of one hil process share the cores, never running more simulations at once")
    bitstream: str | None = Field(None, description="pynq: the overlay's .bit on the board (its .hwh beside it)")
    ip: str | None = Field(None, description="pynq: the accelerator's IP name in the overlay (default: found)")

    @field_validator("bitstream")
    @classmethod
    def _bitstream(cls, v: str | None) -> str | None:
        if v is None:
            return v
        problem = remote_path_problem(_home_relative(v))
        if problem:
            raise ValueError(f"{v!r} {problem}")
        if not v.endswith(".bit"):
            raise ValueError(f"{v!r} is not a .bit file (pynq.Overlay loads the .bit with its .hwh beside it)")
        return v


class CudaConfig(_Strict):
    """How a torch-cuda device runs its workloads (devices/agent/torch_cuda.py's `CudaOptions`, the
    same names). Every field is part of the fingerprint class: LUTs built one way never mix with
    another's."""

    cuda_graphs: bool = Field(
        False, description="replay each workload as a CUDA graph: the GPU's time without the host's kernel "
                           "issue (docs/GPU.md: at batch 1, eager mode times the host)")
    cudnn_benchmark: bool = Field(True, description="let cuDNN pick its fastest algorithms (at warm-up)")
    rotate_inputs: bool = Field(True, description="rotate inputs through more than twice the L2 (cold caches)")
    channels_last: bool = Field(False, description="NHWC memory format")
    device_index: int = Field(0, ge=0, description="which visible GPU")
    min_warmup_s: float = Field(1.0, ge=0, description="warm-up before timing, at least (clocks ramp up)")


class Device(_Strict):
    backend: BackendName
    description: str = ""
    ssh: SshConfig | None = None
    threads: int = Field(1, ge=1, description="runtime threads (torch / TFLite num_threads)")
    cpus: list[int] | None = Field(None, description="CPU affinity (taskset) where the target allows")
    batch: int = Field(1, ge=1)
    precision: Literal["float32", "float16", "int8"] = "float32"
    clock: Literal["wall", "thread"] = Field(
        "wall", description="wall: host clock; thread: CPU time of the one runtime thread (shared hosts)")
    rtl: RtlConfig | None = None
    cuda: CudaConfig | None = Field(None, description="torch-cuda: how workloads run (graphs, cuDNN, ...)")
    substitute: str | None = Field(None, description="device that stands in when this one is absent")
    allow_substitute: bool = Field(
        False, description="measure on `substitute` when this device is absent, without --allow-substitute")
    lease_timeout_s: float = Field(600.0, ge=0, description="how long to wait for another user's lease")

    @model_validator(mode="after")
    def _sections_match_backend(self) -> Device:
        if self.backend in ("rtl-sim", "pynq") and self.rtl is None:
            raise ValueError(f"backend {self.backend!r} needs an 'rtl:' section naming the accelerator")
        if self.backend == "pynq" and self.ssh is None:
            raise ValueError("backend 'pynq' needs an 'ssh:' section: the board is reached over SSH")
        if self.backend == "rtl-sim" and self.ssh is not None:
            raise ValueError("backend 'rtl-sim' runs on this host; remove its 'ssh:' section")
        if self.backend == "pynq" and self.rtl is not None and self.rtl.bitstream is None:
            raise ValueError("backend 'pynq' needs 'rtl.bitstream': the overlay's .bit file on the board")
        if self.backend != "pynq" and self.rtl is not None and (self.rtl.bitstream or self.rtl.ip):
            raise ValueError("'rtl.bitstream' and 'rtl.ip' are for backend 'pynq' (a board)")
        if self.cuda is not None and self.backend != "torch-cuda":
            raise ValueError(f"a 'cuda:' section is for backend 'torch-cuda', not {self.backend!r}")
        if self.allow_substitute and self.substitute is None:
            raise ValueError("'allow_substitute' without a 'substitute' to stand in")
        return self

    @property
    def remote(self) -> bool:
        return self.ssh is not None

    def backend_options(self) -> dict[str, Any]:
        """What the backend is configured with when it is opened, here or by a remote agent
        (`Backend.configure`): a board's `rtl:` section, a GPU's `cuda:` section."""
        options: dict[str, Any] = {}
        if self.backend == "pynq" and self.rtl is not None:
            options["rtl"] = self.rtl.model_dump(exclude={"workers"})
        if self.cuda is not None:
            options["cuda"] = self.cuda.model_dump()
        return options


class Inventory(_Strict):
    version: Literal[1] = 1
    devices: dict[str, Device]

    @field_validator("devices")
    @classmethod
    def _names(cls, v: dict[str, Device]) -> dict[str, Device]:
        for name in v:
            if not name or any(c.isspace() for c in name):
                raise ValueError(f"device name {name!r} must be non-empty and without spaces")
        for name, d in v.items():
            if d.substitute is not None and d.substitute not in v:
                raise ValueError(f"device {name!r}: substitute {d.substitute!r} is not in the inventory")
        return v

    def device(self, name: str) -> Device:
        try:
            return self.devices[name]
        except KeyError:
            known = ", ".join(sorted(self.devices)) or "none"
            raise ConfigError(f"unknown device {name!r} (inventory has: {known})") from None


def _describe(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] == "devices":
        dev = parts[1]
        # pydantic puts the tagged backend or model name in the path for unions; drop it
        field = ".".join(p for p in parts[2:] if not p.startswith(("function-", "literal[")))
        return f"device {dev!r}" + (f", field {field!r}" if field else "")
    return f"field {'.'.join(parts)!r}" if parts else "top level"


def parse_inventory(data: Any, source: str) -> Inventory:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping with a 'devices:' key")
    try:
        return Inventory.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        more = f" (and {len(e.errors()) - 1} more error(s))" if len(e.errors()) > 1 else ""
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise ConfigError(f"{source}: {_describe(tuple(err['loc']))}: {msg}{more}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error instead of the last one
    silently winning (a device listed twice, a field repeated)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' merges, it is not a key
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value, not a list or mapping", key_node.start_mark
                ) from None
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given at line {first})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """Where and what, on one line (PyYAML's own text spans several)."""
    if isinstance(e, yaml.reader.ReaderError):
        return f" at offset {e.position}: character {e.character!r} is not allowed in YAML"
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{where}: {' '.join(str(getattr(e, 'problem', None) or e).split())}"


def load_inventory(path: str | Path | None = None) -> Inventory:
    p = Path(path or DEFAULT_INVENTORY)
    try:
        if p.is_dir():
            raise ConfigError(f"{p}: is a directory, not an inventory file")
        size = p.stat().st_size
        if size > MAX_INVENTORY_BYTES:
            raise ConfigError(f"{p}: {size} bytes is too large for an inventory (at most {MAX_INVENTORY_BYTES})")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: inventory file not found") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read inventory ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                          "an inventory is a YAML text file") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: malformed YAML{_yaml_problem(e)}") from None
    return parse_inventory(data, str(p))


def inventory_schema() -> str:
    return json.dumps(Inventory.model_json_schema(), indent=2)
