"""`hil haq finetune`: a search's quantized model fine-tuned at its bits, in one process and in two.

The search output is built here rather than searched (tests/test_haq_search.py runs the search and
its final fine-tune, through the same function): a tiny MobileNet-V1, calibrated and set to a mixed
policy, written with the metadata a search writes (`haq_meta`). Real torch, real gloo.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from hil.nets.models import make_model
from hil.optimizers.data import Batches, data_dir, fashion_mnist
from hil.optimizers.haq.finetune import CHECKPOINT, FinetuneConfig, finetune_quantized, haq_meta, load_quantized
from hil.optimizers.haq.quantize import QuantConv, QuantOptions, quantize
from hil.optimizers.train import model_meta, read_checkpoint, save_checkpoint, state_path
from tests.hilcli import hil

pytestmark = pytest.mark.skipif(
    not (data_dir() / "t10k-labels-idx1-ubyte.gz").exists() and not (data_dir() / "t10k-labels-idx1-ubyte").exists(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)

LIMITS = ["--train-limit", "256", "--val-limit", "64", "--test-limit", "64"]
# 2 epochs of 2 global batches of 32: an epoch boundary to resume at, and a batch two ranks can split.
RUN = ["--epochs", "2", "--batches", "2", "--batch-size", "32", "--lr", "0.05", *LIMITS]


def _data():
    return fashion_mnist(train_limit=256, val_limit=64, test_limit=64)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A search's output folder: haq.safetensors at a mixed policy (2..8 bits), and a policy.json."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("haq-result")
    torch.manual_seed(0)
    spec = make_model("mobilenet-v1", width=0.25, input_size=32)
    q = quantize(spec, spec.build(), QuantOptions())
    data = _data()
    q.calibrate(x for _, (x, _) in zip(range(2), Batches(data.train, 32, shuffle=True, seed=0).epoch(0),
                                       strict=False))
    policy = q.uniform(4, 3)
    policy["block2.dw"] = (2, 5)
    q.set_policy(policy)
    save_checkpoint(out / CHECKPOINT, q.model, {**haq_meta(q, device="bismo-edge", budget="latency=0.6", data=data),
                                                "val_acc": 0.1, "test_acc": 0.1})
    (out / "policy.json").write_text(json.dumps({"format": "hil-haq-policy/1", "checkpoint": str(out / CHECKPOINT)}))
    return out


def test_the_finetune_trains_through_the_fake_quantizers_at_fixed_bits(result):
    q, meta = load_quantized(result / CHECKPOINT)
    policy = q.policy()
    clips = {n: float(m.clip) for n, m in q.layers.items()}
    before = {k: v.clone() for k, v in q.model.state_dict().items()}
    seen: dict[str, set] = {n: set() for n in q.layers}

    def hook(name: str):
        def f(mod: QuantConv, args) -> None:
            if mod.training and torch.is_grad_enabled():
                seen[name].add((mod.wbits, mod.abits))
        return f

    for name, mod in q.layers.items():
        mod.register_forward_pre_hook(hook(name))
    finetune_quantized(q, _data(), FinetuneConfig(2, lr=0.05, batch_size=32))
    # every quantized layer ran in every training forward, at the policy's bits only
    for name, (w, a) in policy.items():
        a_used = q.layers[name].abits
        assert seen[name] == {(w, a_used)}, name
        assert a_used is None or a_used == a
    assert q.policy() == policy and {n: float(m.clip) for n, m in q.layers.items()} == clips
    key = q.units["block2.dw"].module + ".inner.weight"
    assert not torch.equal(before[key], q.model.state_dict()[key])
    assert meta["haq"]["policy"]["block2.dw"] == [2, 5]


def test_zero_batches_is_no_finetune(result):
    q, _ = load_quantized(result / CHECKPOINT)
    before = {k: v.clone() for k, v in q.model.state_dict().items()}
    assert finetune_quantized(q, _data(), FinetuneConfig(0)).epochs == 0
    assert all(torch.equal(v, q.model.state_dict()[k]) for k, v in before.items())


def test_one_process_then_resumed_in_two_then_read_back_in_one(result, tmp_path, capsys, monkeypatch):
    """The command in 1 process (its epoch-1 state kept, as an interrupted run leaves it), that state
    resumed by `--nproc 2`, and the 2-process state read back by 1 process."""
    import hil.commands.haq as haq_cmd
    from hil.cli import main

    one, part = tmp_path / "one.safetensors", tmp_path / "part.safetensors"

    def snapshot(msg: str) -> None:
        if msg.startswith("epoch 1/"):
            shutil.copy(one, part)
            shutil.copy(state_path(one), state_path(part))

    monkeypatch.setattr(haq_cmd, "_log", lambda args: snapshot)
    assert main(["haq", "finetune", str(result), *RUN, "--out", str(one), "--threads", "1", "--json"]) == 0
    rep1 = json.loads(capsys.readouterr().out)
    assert (rep1["world"], rep1["epochs_done"], rep1["resumed_from"]) == (1, 2, 0)
    q1, meta1 = load_quantized(one)
    src, _ = load_quantized(result / CHECKPOINT)
    assert q1.policy() == src.policy() and meta1["haq"] == read_checkpoint(result / CHECKPOINT)[1]["haq"]
    assert meta1["test_acc"] == rep1["test_after"] and meta1["finetune"]["from"] == str(result / CHECKPOINT)
    assert torch.load(state_path(part), weights_only=True)["epoch"] == 1

    # Without --json, so the log lines show too: rank 0's alone.
    p = hil("haq", "finetune", str(result), *RUN, "--out", str(part), "--nproc", "2", timeout=180)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("fine-tuned at its policy's bits") == 1, p.stdout  # one report, from rank 0
    assert "in 2 processes, resumed after epoch 1" in p.stdout
    assert p.stderr.count("resuming") == 1 and p.stderr.count("epoch 2/2") == 1, p.stderr
    assert "epoch 1/2:" not in p.stderr
    assert not list(tmp_path.glob("*rank*"))
    state = torch.load(state_path(part), weights_only=True)
    assert (state["world"], state["epoch"]) == (2, 2)
    q2, meta2 = load_quantized(part)
    assert q2.policy() == src.policy() and meta2["epoch"] == 2
    w2 = {k: v.clone() for k, v in q2.model.state_dict().items()}

    # A finished 2-process state, rerun in 1 process: resumed after its last epoch, nothing retrained.
    monkeypatch.setattr(haq_cmd, "_log", lambda args: None)
    shutil.copy(state_path(part), state_path(tmp_path / "again.safetensors"))
    assert main(["haq", "finetune", str(result), *RUN, "--out", str(tmp_path / "again.safetensors"), "--json",
                 "--threads", "1"]) == 0
    rep3 = json.loads(capsys.readouterr().out)
    assert (rep3["world"], rep3["resumed_from"], rep3["epochs_done"]) == (1, 2, 2)
    q3, _ = load_quantized(tmp_path / "again.safetensors")
    for k, v in q3.model.state_dict().items():
        assert torch.equal(v, w2[k]), k
    assert rep3["test_after"] == pytest.approx(meta2["test_acc"])


def _not_haq(tmp_path: Path) -> Path:
    spec = make_model("mobilenet-v1", width=0.25, input_size=32)
    path = tmp_path / "float.safetensors"
    save_checkpoint(path, spec.build(), model_meta(spec))
    return path


@pytest.mark.parametrize(("what", "extra", "words"), [
    ("missing", ["--nproc", "2"], ["not found"]),  # refused before any worker starts
    ("empty-dir", [], ["holds no haq.safetensors"]),
    ("float", [], ["not a HAQ checkpoint"]),
    ("result", ["--out", "SAME"], ["--out", "is the checkpoint being fine-tuned"]),
    ("result", ["--nproc", "2", "--batch-size", "33"], ["does not split evenly over 2 processes"]),
    ("result", ["--batches", "0"], ["--batches must be positive"]),
])
def test_bad_input_is_one_line(result, tmp_path, capsys, what, extra, words):
    """Through `hil.cli.main`, as the real CLI (a traceback would fail the test; the 2-process
    subprocess above shows the launcher path). In process: a subprocess per case costs seconds."""
    from hil.cli import main

    source = {"missing": tmp_path / "nope", "empty-dir": tmp_path, "float": _not_haq(tmp_path) if what == "float"
              else None, "result": result}[what]
    extra = [str(result / CHECKPOINT) if x == "SAME" else x for x in extra]
    assert main(["haq", "finetune", str(source), *extra, "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hil: error:"), err
    for w in words:
        assert w in err, (w, err)


def test_a_checkpoint_without_its_split_takes_it_from_policy_json(tmp_path):
    """Outputs written before checkpoints recorded their split: the folder's policy.json has it."""
    from hil.optimizers.haq.finetune import _split

    ck = tmp_path / CHECKPOINT
    assert _split(ck, {"data": {"split_seed": 4, "val_size": 900}}) == (4, 900)
    assert _split(ck, {}) == (0, 5000)  # nothing recorded: the search's defaults
    (tmp_path / "policy.json").write_text(json.dumps({"config": {"split_seed": 2, "val_size": 1000},
                                                      "pretrained": {}}))
    assert _split(ck, {}) == (2, 1000)
    # a --checkpoint's own split won in the search, and policy.json says so under "pretrained"
    (tmp_path / "policy.json").write_text(json.dumps({"config": {"split_seed": 2, "val_size": 1000},
                                                      "pretrained": {"split_seed": 7}}))
    assert _split(ck, {}) == (7, 1000)
