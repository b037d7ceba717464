"""Training loops, checkpoints and `hil train` / `hil eval` on a tiny real subset with tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from hil.cli import main
from hil.nets.models import mobilenet_v1, mobilenet_v2
from hil.optimizers.data import DATA_ENV, data_dir, fashion_mnist
from hil.optimizers.train import (
    CheckpointError,
    TrainConfig,
    evaluate,
    finetune,
    load_model,
    model_meta,
    read_checkpoint,
    state_path,
    train,
)

pytestmark = pytest.mark.skipif(
    not (data_dir() / "t10k-labels-idx1-ubyte.gz").exists() and not (data_dir() / "t10k-labels-idx1-ubyte").exists(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)

TINY = TrainConfig(epochs=2, batch_size=64, lr=0.05, seed=1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: with the 2 cores shared, a second OpenMP thread made steps ~10x slower here
    (docs/BENCHMARKS.md, Training substrate); on an idle machine it costs at most ~2x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    return fashion_mnist(train_limit=128, val_limit=64, test_limit=64)


@pytest.fixture(scope="module")
def small():
    return fashion_mnist(train_limit=1024, val_limit=500, test_limit=500)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_a_small_model_learns(small):
    torch.manual_seed(0)
    model = mobilenet_v1(0.25).build()
    before = evaluate(model, small.val)
    result = train(model, small, TrainConfig(epochs=2, batch_size=32, lr=0.1, augment=False))
    after = evaluate(model, small.test)
    assert [h.epoch for h in result.history] == [1, 2]
    assert result.history[-1].samples == 1024
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.history[-1].val_acc == pytest.approx(evaluate(model, small.val).accuracy)
    # chance is 10%; 64 steps of a 0.25-width MobileNet-V1 reach about 70% here
    assert before.accuracy < 0.3 and after.accuracy > 0.5
    assert model.training  # evaluate() restores the mode it found


def test_same_seed_same_weights_and_resume_matches_an_uninterrupted_run(tiny, tmp_path):
    torch.manual_seed(0)
    init = mobilenet_v1(0.25).build()
    start = weights(init)

    def fresh():
        m = mobilenet_v1(0.25).build()
        m.load_state_dict(start)
        return m

    straight = fresh()
    r = train(straight, tiny, TINY, checkpoint=tmp_path / "a.safetensors")
    assert r.epochs == 2 and r.resumed_from == 0 and len(r.epoch_times) == 2

    again = fresh()
    train(again, tiny, TINY)
    for k, v in weights(straight).items():
        assert torch.equal(v, again.state_dict()[k]), k

    # Interrupted after its first epoch (the files of epoch 1 are written), resumed in a fresh model.
    ck = tmp_path / "b.safetensors"

    def stop_after_epoch_1(msg):
        if msg.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(fresh(), tiny, TINY, checkpoint=ck, log=stop_after_epoch_1)
    assert torch.load(state_path(ck), weights_only=True)["epoch"] == 1
    resumed = fresh()
    r2 = train(resumed, tiny, TINY, checkpoint=ck)
    assert r2.resumed_from == 1 and r2.epochs == 2 and len(r2.epoch_times) == 1
    assert [h.epoch for h in r2.history] == [1, 2]
    for k, v in weights(straight).items():
        assert torch.equal(v, resumed.state_dict()[k]), k

    # A finished run resumed again trains nothing.
    r3 = train(fresh(), tiny, TINY, checkpoint=ck)
    assert r3.resumed_from == 2 and r3.epoch_times == []


def test_resume_with_other_settings_is_refused(tiny, tmp_path):
    ck = tmp_path / "c.safetensors"
    one = TrainConfig(epochs=1, batch_size=64)
    train(mobilenet_v1(0.25).build(), tiny, one, checkpoint=ck, validate=False)
    with pytest.raises(CheckpointError, match=r"lr=0\.1.*lr=0\.2"):
        train(mobilenet_v1(0.25).build(), tiny, TrainConfig(epochs=1, batch_size=64, lr=0.2), checkpoint=ck)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        train(mobilenet_v1(0.5).build(), tiny, one, checkpoint=ck)
    # --no-resume starts over
    r = train(mobilenet_v1(0.5).build(), tiny, one, checkpoint=ck, resume=False, validate=False)
    assert r.resumed_from == 0


def test_checkpoint_roundtrip(tiny, tmp_path):
    spec = mobilenet_v2(0.25)
    model = spec.build()
    ck = tmp_path / "sub" / "m.safetensors"
    train(model, tiny, TrainConfig(epochs=1, batch_size=64), checkpoint=ck, meta=model_meta(spec), validate=False)
    tensors, meta = read_checkpoint(ck)
    assert meta["model"] == "mobilenet-v2" and meta["options"]["width"] == 0.25 and meta["epoch"] == 1
    assert set(tensors) == set(model.state_dict())
    loaded, lspec, _ = load_model(ck)
    assert lspec.workloads() == spec.workloads()
    x = torch.randn(4, 1, 32, 32)
    assert torch.allclose(model.eval()(x), loaded.eval()(x), atol=1e-5)  # NHWC vs NCHW kernels
    # the resume state loads without unpickling objects
    state = torch.load(state_path(ck), weights_only=True)
    assert state["epoch"] == 1 and "optimizer" in state


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "none.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_checkpoint(junk)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="no hil metadata"):
        load_model(foreign)
    bad_state = tmp_path / "x.safetensors"
    state_path(bad_state).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read training state"):
        train(mobilenet_v1(0.25).build(), fashion_mnist(train_limit=8, val_limit=8, test_limit=8),
              TrainConfig(epochs=1, batch_size=8), checkpoint=bad_state)


def test_finetune_is_a_short_low_lr_run(small):
    torch.manual_seed(0)
    model = mobilenet_v1(0.25).build()
    r = finetune(model, small, epochs=1, lr=0.01, steps_per_epoch=5, batch_size=32, validate=False)
    assert r.history[-1].samples == 5 * 32 and r.history[-1].val_acc is None
    assert r.history[-1].lr < 0.01


def test_bad_config():
    from hil.errors import ConfigError
    from hil.optimizers.train import pick_device

    with pytest.raises(ConfigError):
        TrainConfig(epochs=-1)
    with pytest.raises(ConfigError):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match="device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            pick_device("cuda")
    assert pick_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.gpu
def test_trains_on_cuda(tiny):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    model = mobilenet_v2(0.25).build()
    r = train(model, tiny, TrainConfig(epochs=1, batch_size=64), device="cuda")
    assert next(model.parameters()).is_cuda and r.history[-1].val_acc is not None


def test_cli_train_then_eval(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    argv = ["train", "--model", "mobilenet-v2", "--width", "0.25", "--epochs", "1", "--train-limit", "128",
            "--test-limit", "200", "--batch-size", "64", "--out", str(out), "--json"]
    assert main(argv) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["epochs"] == 1 and 0.0 <= rep["test_acc"] <= 1.0 and rep["wall_s"] > 0
    assert rep["data"]["test"] == 200 and rep["checkpoint"] == str(out)
    _, meta = read_checkpoint(out)
    assert meta["test_acc"] == rep["test_acc"]

    assert main(["eval", str(out), "--test-limit", "200", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    # NHWC (trained) and NCHW (loaded) kernels differ in rounding: allow one flipped answer in 200
    assert ev["test_acc"] == pytest.approx(rep["test_acc"], abs=0.006) and ev["n"] == 200
    assert main(["eval", str(out), "--split", "val", "--test-limit", "200", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["val_acc"] == pytest.approx(meta["val_acc"], abs=0.006)

    # a rerun resumes the finished run: no training, same accuracy
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["epochs_run"] == 0 and again["test_acc"] == rep["test_acc"]

    # the same command from scratch gives the same weights: initialization is seeded too
    other = tmp_path / "n.safetensors"
    assert main([*argv[:-2], str(other), "--json"]) == 0
    capsys.readouterr()
    a, _ = read_checkpoint(out)
    b, _ = read_checkpoint(other)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--model", "mobilenet-v2", "--width", "9", "--epochs", "1"], "width multiplier"),
    (["train", "--model", "proxyless", "--epochs", "1"], "needs an architecture"),
    (["train", "--model", "mobilenet-v1", "--arch", "zero", "--epochs", "1"], "--arch applies"),
    (["eval", "/nonexistent/m.safetensors"], "not found"),
])
def test_cli_bad_input_is_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("hil: error:")


def test_cli_missing_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert main(["train", "--model", "mobilenet-v1", "--width", "0.25", "--epochs", "1",
                 "--out", str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and len(err.strip().splitlines()) == 1


def test_cli_names_agree_with_models_and_parser_does_not_import_torch():
    import subprocess
    import sys

    from hil.commands.train import DATA_ENV, MODEL_NAMES
    from hil.nets.models import MODELS
    from hil.optimizers import data

    assert tuple(MODELS) == MODEL_NAMES and data.DATA_ENV == DATA_ENV
    code = "import sys, hil.cli; hil.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # `hil lut show` and friends start without torch


@pytest.mark.parametrize("meta, words", [
    ([1, 2], ["must be a JSON object", "list"]),
    ("mobilenet-v1", ["must be a JSON object"]),
    ({"model": 3, "options": {}}, ["'model'", "wrong type"]),
    ({"model": "mobilenet-v1", "options": []}, ["'options'", "wrong type"]),
    ({"model": "mobilenet-v1", "options": {"classes": "10"}}, ["does not build a model"]),
    ({"model": "mobilenet-v1", "options": {"width": 0.25}, "data": []}, ["'data'", "wrong type"]),
    ({"model": "mobilenet-v1", "options": {"width": 0.25}, "data": {"split_seed": "x"}}, ["data.split_seed"]),
    ({"model": "mobilenet-v1", "options": {"width": 0.25}, "epoch": "three"}, ["'epoch'"]),
])
def test_checkpoint_metadata_of_the_wrong_shape_is_a_checkpoint_error(tmp_path, meta, words):
    from hil.optimizers.train import CheckpointError, load_model

    path = _odd_checkpoint(tmp_path, meta)
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    for w in [str(path), *words]:
        assert w in str(e.value)


def _odd_checkpoint(tmp_path, meta):
    import json

    from safetensors.torch import save_file

    from hil.optimizers.train import FORMAT

    path = tmp_path / "odd.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"format": FORMAT, "hil": json.dumps(meta)})
    return path


def test_hil_eval_of_odd_metadata_says_so_in_one_line(tmp_path):
    from tests.hilcli import assert_user_error, hil

    path = _odd_checkpoint(tmp_path, {"model": "mobilenet-v1", "options": {"width": 0.25}, "data": [1]})
    assert_user_error(hil("eval", str(path)), str(path), "'data'")
