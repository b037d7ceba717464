"""Who this process is in a training job, and the launcher behind `--nproc`.

`Dist.from_env()` is the one place that reads torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK) and joins the process group; everything else is handed the `Dist` it returns. There is
no global mode: a function given no `Dist` trains in one process, as it always did.

Backends: gloo on the CPU, nccl on CUDA (rank r on cuda:LOCAL_RANK). `launch` starts N local
workers with PyTorch's own elastic launcher (what `torchrun --standalone` runs), so `hil train
--nproc N` and `torchrun --standalone --nproc-per-node N -m hil train` start the same job.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as td

from hil.errors import AlreadyReported, ConfigError, HilError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class LaunchError(HilError):
    """A worker of a multi-process job failed; its own message is above, from that worker."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """`None` picks CUDA when present, else the CPU; a named device must exist."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available here")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {device!r} (use cpu, cuda or cuda:N)")
    return dev


@dataclass(frozen=True)
class Dist:
    """One process of a training job: its rank among `world`, its device, and the backend (None
    when the job is this one process and no process group exists)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints, logs and reports."""
        return self.rank == 0

    @classmethod
    def single(cls, device: str | torch.device | None = None) -> Dist:
        return cls(device=pick_device(device))

    @classmethod
    def from_env(cls, device: str | torch.device | None = None) -> Dist:
        """The job torchrun (or `launch`) started this process in, joined; one process without it.

        `device` picks the kind (cpu or cuda); under torchrun a CUDA rank always gets
        cuda:LOCAL_RANK, since ranks sharing a GPU is what nccl refuses.
        """
        if "WORLD_SIZE" not in os.environ:
            return cls.single(device)
        try:
            rank, world, local = (int(os.environ[k]) for k in ENV_VARS)
        except (KeyError, ValueError):
            raise ConfigError(f"incomplete torchrun environment: {', '.join(ENV_VARS)} must all be integers") from None
        kind = pick_device(device).type
        if kind == "cuda":
            if local >= torch.cuda.device_count():
                raise ConfigError(f"local rank {local} has no GPU: {torch.cuda.device_count()} visible; "
                                  "start at most one process per GPU")
            dev, backend = torch.device("cuda", local), "nccl"
            torch.cuda.set_device(dev)
        else:
            dev, backend = torch.device("cpu"), "gloo"
        if world > 1 and not td.is_initialized():
            td.init_process_group(backend, device_id=dev if backend == "nccl" else None)
        return cls(rank, world, dev, backend if world > 1 else None, local)

    def close(self) -> None:
        if self.backend is not None and td.is_initialized():
            td.destroy_process_group()

    # ---- collectives that are no-ops in a one-process job ---------------------------------------

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.backend is not None:
            td.all_reduce(t)
        return t

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (ours, in-job: pickled between our own processes only)."""
        if self.backend is None:
            return obj
        box = [obj]
        td.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BN running statistics) everywhere: DDP syncs them only at a forward."""
        if self.backend is not None:
            for b in module.buffers():
                td.broadcast(b, src=0)

    def barrier(self) -> None:
        if self.backend is not None:
            td.barrier()


def launch(nproc: int, entrypoint: Callable[..., Any] | str, *args: Any) -> dict[int, Any]:
    """Run `entrypoint(*args)` (a function, or a program with arguments) in `nproc` local workers
    under PyTorch's elastic agent, as `torchrun --standalone --nproc-per-node nproc` would.

    Returns the functions' results by rank (None for a program). A worker that fails ends the job
    and raises `LaunchError` here in one line; the worker's own message is already on stderr.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise ConfigError(f"--nproc must be positive, got {nproc}")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.1, start_method="spawn")
    _quiet_elastic_logs()
    try:
        return elastic_launch(config, entrypoint)(*args)
    except SignalException as e:
        # Ctrl-C (or a kill) reached the launcher, which stopped the workers; rank 0 says so itself.
        raise AlreadyReported(128 + int(e.sigval)) from None
    except ChildFailedError as e:
        # A worker's user error exits with HilError's code; rank 0 has printed it in one line.
        if any(f.exitcode == HilError.exit_code for f in e.failures.values()):
            raise AlreadyReported(HilError.exit_code) from None
        rank, failure = e.get_first_failure()
        raise LaunchError(f"worker rank {rank} of {nproc} failed with exit code {failure.exitcode}; "
                          "its output is above") from None


def _quiet_elastic_logs() -> None:
    # The agent logs every start and stop, and a failure's whole report, at WARNING and above; the
    # worker already said what went wrong, and LaunchError says which rank.
    import logging

    # Its modules' loggers carry levels of their own: a parent's level would not reach them.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
