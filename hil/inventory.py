"""inventory.yaml: the farm's devices, validated into typed models.

A device names the backend that times workloads on it (`torch-cpu`, `torch-cuda`, `tflite`,
`rtl-sim`, `pynq`) and, when it is remote, how to reach it (`ssh:`). Without `ssh:` the backend runs
in this process. Errors name the file, the device and the field; unknown keys are rejected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hil.errors import ConfigError

DEFAULT_INVENTORY = "inventory.yaml"

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


class RtlConfig(_Strict):
    """Which accelerator configuration an rtl-sim (or PYNQ) device runs."""

    accelerator: Literal["bitfusion-spatial", "bismo-edge", "bismo-cloud"] | str
    overrides: dict[str, int | float] = Field(default_factory=dict, description="parameter overrides")
    workers: int = Field(1, ge=1, le=64, description="parallel simulation processes (cores to use)")


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
    substitute: str | None = Field(None, description="device that stands in when this one is absent")
    lease_timeout_s: float = Field(600.0, ge=0, description="how long to wait for another user's lease")

    @model_validator(mode="after")
    def _sections_match_backend(self) -> Device:
        if self.backend in ("rtl-sim", "pynq") and self.rtl is None:
            raise ValueError(f"backend {self.backend!r} needs an 'rtl:' section naming the accelerator")
        if self.backend == "pynq" and self.ssh is None:
            raise ValueError("backend 'pynq' needs an 'ssh:' section: the board is reached over SSH")
        if self.backend == "rtl-sim" and self.ssh is not None:
            raise ValueError("backend 'rtl-sim' runs on this host; remove its 'ssh:' section")
        return self

    @property
    def remote(self) -> bool:
        return self.ssh is not None


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


def load_inventory(path: str | Path | None = None) -> Inventory:
    p = Path(path or DEFAULT_INVENTORY)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: inventory file not found") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read inventory ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: malformed YAML{where}: {getattr(e, 'problem', None) or e}") from None
    return parse_inventory(data, str(p))


def inventory_schema() -> str:
    return json.dumps(Inventory.model_json_schema(), indent=2)
