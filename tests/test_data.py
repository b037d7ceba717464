"""The Fashion-MNIST loader on the real files of Debian's dataset-fashion-mnist package."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hil.optimizers.data import (
    DATA_ENV,
    MEAN,
    STD,
    Batches,
    DataError,
    augment,
    data_dir,
    fashion_mnist,
    read_idx,
    read_split,
)

pytestmark = pytest.mark.skipif(
    not (data_dir() / "t10k-labels-idx1-ubyte.gz").exists() and not (data_dir() / "t10k-labels-idx1-ubyte").exists(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def splits():
    return fashion_mnist()


def test_idx_files_hold_the_full_dataset():
    x, y = read_split("train")
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == [6000] * 10  # Fashion-MNIST is balanced
    tx, ty = read_split("test")
    assert tx.shape == (10000, 28, 28)
    assert np.bincount(ty, minlength=10).tolist() == [1000] * 10
    assert abs(x.mean() / 255 - MEAN) < 1e-3 and abs(x.std() / 255 - STD) < 1e-3


def test_split_is_a_seeded_partition_of_the_training_set(splits):
    assert (len(splits.train), len(splits.val), len(splits.test)) == (55000, 5000, 10000)
    # train + val is the whole training set: the class counts add up to 6000 each
    counts = torch.bincount(splits.train.labels, minlength=10) + torch.bincount(splits.val.labels, minlength=10)
    assert counts.tolist() == [6000] * 10
    again = fashion_mnist(val_limit=100, train_limit=10, test_limit=10)
    assert torch.equal(again.val.labels, splits.val.labels[:100])
    assert torch.equal(again.val.images, splits.val.images[:100])
    other = fashion_mnist(seed=1, val_limit=100, train_limit=10, test_limit=10)
    assert not torch.equal(other.val.images, again.val.images)


def test_images_are_padded_to_32_with_a_black_border(splits):
    raw, _ = read_split("test")
    img = splits.test.images
    assert img.shape == (10000, 1, 32, 32) and img.dtype == torch.uint8
    assert torch.equal(img[:, 0, 2:30, 2:30], torch.from_numpy(raw.copy()))
    assert int(img[:, :, :2].sum()) == 0 and int(img[:, :, :, 30:].sum()) == 0


def test_missing_data_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist()


def test_env_var_dir_with_plain_idx_files(tmp_path, monkeypatch):
    src = data_dir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        shutil.copy(src / f"{stem}.gz", tmp_path)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # uncompressed copies
        (tmp_path / stem).write_bytes(gzip.decompress((src / f"{stem}.gz").read_bytes()))
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    d = fashion_mnist(train_limit=5, val_limit=5, test_limit=7)
    assert len(d.test) == 7
    assert torch.equal(d.test.labels, torch.from_numpy(read_split("test", src)[1][:7].astype(np.int64)))


def test_damaged_files_are_errors_naming_the_file(tmp_path):
    good = gzip.decompress((data_dir() / "t10k-labels-idx1-ubyte.gz").read_bytes())
    trunc = tmp_path / "t10k-labels-idx1-ubyte"
    trunc.write_bytes(good[:-10])
    with pytest.raises(DataError, match=str(trunc)):
        read_idx(trunc)
    junk = tmp_path / "junk.gz"
    junk.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"junk\.gz"):
        read_idx(junk)
    other = tmp_path / "float.idx"
    other.write_bytes(bytes([0, 0, 0x0D, 1]) + (4).to_bytes(4, "big") + bytes(16))
    with pytest.raises(DataError, match="not an IDX file of unsigned bytes"):
        read_idx(other)


def test_augment_is_a_crop_of_the_padded_image_maybe_flipped(splits):
    x = splits.train.images[:16]
    gen = torch.Generator().manual_seed(3)
    y = augment(x, gen)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(y, augment(x, torch.Generator().manual_seed(3)))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    flips = 0
    for i in range(len(x)):
        crops = {(dy, dx, f) for dy in range(9) for dx in range(9) for f in (0, 1)
                 if torch.equal(y[i], (lambda c, f: c.flip(-1) if f else c)(padded[i, :, dy:dy + 32, dx:dx + 32], f))}
        assert crops, f"augmented image {i} is no crop of its source"
        flips += all(f for _, _, f in crops)
    assert 0 < flips < len(x)  # some flipped, some not (p = 0.5 each)


def test_batches_cover_the_set_once_in_a_seeded_order(splits):
    data = splits.val.subset(1000)
    b = Batches(data, 128, shuffle=True, seed=5)
    assert len(b) == 8
    labels = torch.cat([y for _, y in b.epoch(0)])
    assert sorted(labels.tolist()) == sorted(data.labels.tolist())
    again = torch.cat([y for _, y in Batches(data, 128, shuffle=True, seed=5).epoch(0)])
    assert torch.equal(labels, again)
    assert not torch.equal(labels, torch.cat([y for _, y in b.epoch(1)]))
    x, _ = next(iter(Batches(data, 1000).epoch(0)))
    assert x.dtype == torch.float32 and x.shape == (1000, 1, 32, 32)
    inner = x[:, :, 2:30, 2:30]
    assert abs(float(inner.mean())) < 0.1 and abs(float(inner.std()) - 1) < 0.1  # normalized
    assert len(Batches(data, 128, drop_last=True)) == 7
    with pytest.raises(DataError):
        Batches(data, 0)


def test_input_size_smaller_than_images_is_an_error():
    with pytest.raises(DataError, match="smaller than"):
        fashion_mnist(size=24, train_limit=1, val_limit=1, test_limit=1)


def test_default_dir_is_the_debian_one(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert data_dir() == Path("/usr/share/datasets/fashion-mnist")
    assert data_dir("/x") == Path("/x")
