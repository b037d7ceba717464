"""Distributed training on real gloo: two CPU processes started by PyTorch's elastic launcher.

One two-process job (`runs`, module-scoped: a launch costs a few seconds of imports) does every
distributed run; the tests read its results. The network of the comparisons has no BatchNorm: with
BN each rank normalizes by its own half of the batch (gloo has no SyncBatchNorm), so two processes
compute a different function than one; without it DDP's averaged gradient is the global batch's
gradient and the runs agree to rounding (docs/TRAINING.md).
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hil.optimizers.data import Batches, data_dir, fashion_mnist
from hil.optimizers.dist import Dist, launch
from hil.optimizers.train import (
    CheckpointError,
    TrainConfig,
    _param_groups,
    cosine_lr,
    deterministic,
    read_checkpoint,
    state_path,
    train,
)

pytestmark = pytest.mark.skipif(
    not (data_dir() / "t10k-labels-idx1-ubyte.gz").exists() and not (data_dir() / "t10k-labels-idx1-ubyte").exists(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)

# 2 epochs x 4 steps of a global batch of 32, with augmentation: the order and the crops must agree too.
CFG = TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=3, steps_per_epoch=4, augment=True)
BN_CFG = TrainConfig(epochs=1, batch_size=32, lr=0.05, seed=1, steps_per_epoch=3, augment=True)


class Tiny(nn.Module):
    def __init__(self, bn: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4) if bn else nn.Identity()
        self.fc = nn.Linear(4 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def tiny(bn: bool = False) -> Tiny:
    torch.manual_seed(11)
    return Tiny(bn)


def data():
    return fashion_mnist(train_limit=160, val_limit=32, test_limit=32)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def snapshot_after_epoch_1(ck: Path, to: Path):
    """A log callback that copies the checkpoint as epoch 1 left it: what an interrupted run leaves."""
    def log(msg: str) -> None:
        if msg.startswith("epoch 1/"):
            shutil.copy(ck, to)
            shutil.copy(state_path(ck), state_path(to))
    return log


def _worker(tmp: str) -> dict:
    """Every distributed run of this file, on each rank."""
    torch.set_num_threads(1)
    d = Dist.from_env("cpu")
    tmp_path = Path(tmp)
    out: dict = {"rank": d.rank, "world": d.world, "backend": d.backend}
    splits = data()
    logs: list[str] = []
    # Each rank is handed its own path: only rank 0's may appear.
    ck = tmp_path / f"rank{d.rank}.safetensors"
    snap = snapshot_after_epoch_1(ck, tmp_path / "two-after-1.safetensors")

    def log(msg: str) -> None:
        logs.append(msg)
        snap(msg)

    model = tiny()
    r = train(model, splits, CFG, dist=d, checkpoint=ck, log=log)
    out.update(weights=weights(model), history=[(h.train_loss, h.samples, h.val_acc) for h in r.history],
               logs=logs)
    # Resume a one-process run's epoch-1 state in two processes.
    resumed_model = tiny()
    if d.main:
        shutil.copy(tmp_path / "one-after-1.safetensors", tmp_path / "resume.safetensors")
        shutil.copy(state_path(tmp_path / "one-after-1.safetensors"), state_path(tmp_path / "resume.safetensors"))
    d.barrier()
    r2 = train(resumed_model, splits, CFG, dist=d, checkpoint=tmp_path / "resume.safetensors")
    out.update(resumed_weights=weights(resumed_model), resumed_from=r2.resumed_from, resumed_epochs=r2.epochs)
    # A BN network: ranks normalize by their own shard, and end with rank 0's running statistics.
    bn = tiny(bn=True)
    train(bn, splits, BN_CFG, dist=d, validate=False)
    out["bn"] = weights(bn)
    # A state of other settings is refused on every rank with rank 0's message (nobody hangs).
    try:
        train(tiny(), splits, TrainConfig(epochs=2, batch_size=32, lr=0.2, seed=3, steps_per_epoch=4), dist=d,
              checkpoint=tmp_path / "rank0.safetensors")
        out["refused"] = None
    except CheckpointError as e:
        out["refused"] = str(e)
    d.close()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("ddp")
    splits = data()
    one = tiny()
    ck = tmp / "one.safetensors"
    single = train(one, splits, CFG, checkpoint=ck, log=snapshot_after_epoch_1(ck, tmp / "one-after-1.safetensors"))
    ranks = launch(2, _worker, str(tmp))
    # The two-process run's epoch-1 state, resumed in one process.
    two_state = torch.load(state_path(tmp / "two-after-1.safetensors"), weights_only=True)
    back = tiny()
    r = train(back, splits, CFG, checkpoint=tmp / "two-after-1.safetensors")
    return {"tmp": tmp, "single": single, "one": weights(one), "ranks": ranks, "back": weights(back),
            "back_from": r.resumed_from, "two_state": two_state}


def close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=1e-4), (k, float((a[k] - b[k]).abs().max()))


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(runs):
    r0, r1 = runs["ranks"][0], runs["ranks"][1]
    assert (r0["world"], r0["backend"], r1["rank"]) == (2, "gloo", 1)
    for k, v in r0["weights"].items():
        assert torch.equal(v, r1["weights"][k]), k  # DDP keeps the replicas identical
    close(r0["weights"], runs["one"])
    one_hist = [(h.train_loss, h.samples, h.val_acc) for h in runs["single"].history]
    for (loss2, n2, val2), (loss1, n1, val1) in zip(r0["history"], one_hist, strict=True):
        # the epoch's loss is the whole job's, over the same global samples
        assert n2 == n1 == 4 * 32 and loss2 == pytest.approx(loss1, rel=1e-5) and val2 == val1
    assert r1["history"] == r0["history"]


def test_only_rank_0_writes_checkpoints_and_logs(runs):
    tmp, r0, r1 = runs["tmp"], runs["ranks"][0], runs["ranks"][1]
    assert (tmp / "rank0.safetensors").exists() and state_path(tmp / "rank0.safetensors").exists()
    assert not (tmp / "rank1.safetensors").exists() and not state_path(tmp / "rank1.safetensors").exists()
    assert [m.split(":")[0] for m in r0["logs"]] == ["epoch 1/2", "epoch 2/2"] and r1["logs"] == []
    tensors, meta = read_checkpoint(tmp / "rank0.safetensors")
    assert meta["epoch"] == 2 and set(tensors) == set(r0["weights"])  # the unwrapped module: no "module." prefix
    state = torch.load(state_path(tmp / "rank0.safetensors"), weights_only=True)
    assert (state["world"], state["epoch"], state["samples"]) == (2, 2, 2 * 4 * 32)


def test_a_one_process_state_resumes_in_two_processes(runs):
    r0 = runs["ranks"][0]
    assert (r0["resumed_from"], r0["resumed_epochs"]) == (1, 2)
    close(r0["resumed_weights"], runs["one"])


def test_a_two_process_state_resumes_in_one_process(runs):
    assert runs["back_from"] == 1
    state = runs["two_state"]
    assert (state["world"], state["epoch"], state["samples"]) == (2, 1, 4 * 32)
    close(runs["back"], runs["ranks"][0]["weights"])
    close(runs["back"], runs["one"])


def test_with_batchnorm_two_processes_are_one_process_normalizing_each_half_alone(runs):
    """What BN does under DDP on gloo, exactly: each rank's BN sees its 16 of the 32 images."""
    r0, r1 = runs["ranks"][0], runs["ranks"][1]
    for k, v in r0["bn"].items():
        assert torch.equal(v, r1["bn"][k]), k  # rank 0's running statistics on every rank
    model = tiny(bn=True).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(_param_groups(model, BN_CFG.weight_decay), lr=BN_CFG.lr, momentum=BN_CFG.momentum,
                          nesterov=True)
    halves = [Batches(data().train, 16, shuffle=True, augmented=True, seed=BN_CFG.seed, drop_last=True,
                      channels_last=True, rank=r, world=2).epoch(0) for r in range(2)]
    steps = BN_CFG.steps_per_epoch
    with deterministic():
        for i, ((x0, y0), (x1, y1)) in enumerate(itertools.islice(zip(*halves, strict=True), steps)):
            for g in opt.param_groups:
                g["lr"] = cosine_lr(BN_CFG.lr, i, steps)
            before = {k: v.clone() for k, v in model.bn.state_dict().items()}
            loss = (nn.functional.cross_entropy(model(x0), y0) + nn.functional.cross_entropy(model(x1), y1)) / 2
            opt.zero_grad()
            loss.backward()
            # The running statistics kept are rank 0's: updated by the first half alone.
            model.bn.load_state_dict(before)
            with torch.no_grad():
                model.bn(model.conv(x0))
            opt.step()
    close(r0["bn"], weights(model), atol=1e-6)


def test_ranks_refuse_a_foreign_state_alike(runs):
    r0, r1 = runs["ranks"][0], runs["ranks"][1]
    assert r0["refused"] and r0["refused"] == r1["refused"] and "lr=0.05" in r0["refused"]


def test_hil_train_nproc_2(tmp_path):
    out = tmp_path / "m.safetensors"
    cmd = [sys.executable, "-m", "hil", "train", "--nproc", "2", "--model", "mobilenet-v1", "--width", "0.25",
           "--epochs", "1", "--train-limit", "128", "--test-limit", "32", "--batch-size", "64", "--out", str(out),
           "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1, p.stdout  # one report, from rank 0
    rep = json.loads(lines[0])
    assert rep["world"] == 2 and rep["epochs"] == 1 and rep["checkpoint"] == str(out)
    _, meta = read_checkpoint(out)
    assert meta["test_acc"] == rep["test_acc"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--nproc", "0"], "--nproc must be positive"),
    (["--nproc", "2", "--batch-size", "65"], "does not split evenly over 2 processes"),
])
def test_hil_train_nproc_bad_input_is_one_line(tmp_path, extra, message, capsys):
    from hil.cli import main

    assert main(["train", "--model", "mobilenet-v1", "--width", "0.25", "--epochs", "1",
                 "--out", str(tmp_path / "m.safetensors"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("hil: error:")


@pytest.mark.gpu
def test_nccl_on_two_gpus(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("nccl needs a GPU per rank; fewer than 2 here")
    ranks = launch(2, _cuda_worker)
    assert ranks[0]["backend"] == "nccl" and ranks[1]["device"] == "cuda:1"
    for k, v in ranks[0]["weights"].items():
        assert torch.equal(v, ranks[1]["weights"][k]), k


def _cuda_worker() -> dict:
    d = Dist.from_env("cuda")
    model = tiny()
    train(model, data(), CFG, dist=d, validate=False)
    d.close()
    return {"backend": d.backend, "device": str(d.device), "weights": weights(model)}
