"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package, read offline, batched as tensors.

The four IDX files (gzip or plain) are read with numpy; no torchvision. Training images are split
once, with a fixed seed, into `train` and a held-out `val` set (search rewards, architecture steps);
`test` is only for final reporting. Images are zero-padded from 28x28 to `size` x `size` (the
background is black, so padding adds nothing but border) and normalized per batch.

Batches are made by slicing whole tensors (no per-sample Python), so an epoch's order and its
augmentation depend only on (seed, epoch): an interrupted run resumes to the same result.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from hil.errors import HilError
from hil.optimizers.dataset_location import DATA_ENV, DEFAULT_DIR, data_dir

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
# Mean and std of the 60k training images (28x28, pixel / 255).
MEAN, STD = 0.2860, 0.3530
INSTALL_HINT = (f"install it with `sudo apt-get install dataset-fashion-mnist` (files land in {DEFAULT_DIR}) "
                f"or point ${DATA_ENV} at a folder holding the four IDX files")


class DataError(HilError):
    """The dataset is missing or its files are damaged."""


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"Fashion-MNIST file {folder / (stem + '.gz')} not found; {INSTALL_HINT}")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (magic 0 0 type ndim, big-endian dims, then the data) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(dims)):
        raise DataError(f"{path} is truncated or damaged: header says {dims}, "
                        f"found {len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_split(split: str, root: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """('train' | 'test') -> (images N x 28 x 28 uint8, labels N uint8) from the IDX files."""
    folder = data_dir(root)
    images_stem, labels_stem = FILES[split]
    images = read_idx(_find(folder, images_stem))
    labels = read_idx(_find(folder, labels_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match")
    if labels.max(initial=0) >= len(CLASSES):
        raise DataError(f"{folder}: {split} labels outside 0..{len(CLASSES) - 1}")
    return images, labels


@dataclass(frozen=True)
class ImageSet:
    """Images as N x 1 x size x size uint8 and labels as N int64, kept unnormalized until batching."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None) -> ImageSet:
        return self if n is None or n >= len(self) else ImageSet(self.name, self.images[:n], self.labels[:n])


@dataclass(frozen=True)
class DataSplits:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    seed: int
    val_size: int
    size: int
    classes: int = len(CLASSES)
    in_channels: int = 1

    def describe(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test),
                "split_seed": self.seed, "val_size": self.val_size, "size": self.size}


def _to_tensor(images: np.ndarray, size: int) -> torch.Tensor:
    h, w = images.shape[1:]
    if size < max(h, w):
        raise DataError(f"input size {size} is smaller than the {h}x{w} images")
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((len(images), 1, size, size), dtype=np.uint8)
    out[:, 0, top: top + h, left: left + w] = images
    return torch.from_numpy(out)


def fashion_mnist(
    root: str | os.PathLike[str] | None = None,
    *,
    val_size: int = 5000,
    seed: int = 0,
    size: int = 32,
    train_limit: int | None = None,
    val_limit: int | None = None,
    test_limit: int | None = None,
) -> DataSplits:
    """The three splits. `val_size` training images, picked by a seeded permutation, become `val`.

    The limits keep the first n of a split (after the permutation), for tests and quick runs; the
    train/val partition itself does not depend on them.
    """
    train_x, train_y = read_split("train", root)
    test_x, test_y = read_split("test", root)
    if not 0 <= val_size < len(train_y):
        raise DataError(f"val_size must be within 0..{len(train_y) - 1}, got {val_size}")
    order = np.random.default_rng(seed).permutation(len(train_y))
    val_idx, train_idx = order[:val_size], order[val_size:]

    def make(name: str, x: np.ndarray, y: np.ndarray, limit: int | None) -> ImageSet:
        if limit is not None:
            x, y = x[:limit], y[:limit]
        return ImageSet(name, _to_tensor(x, size), torch.from_numpy(y.astype(np.int64)))

    return DataSplits(
        train=make("train", train_x[train_idx], train_y[train_idx], train_limit),
        val=make("val", train_x[val_idx], train_y[val_idx], val_limit),
        test=make("test", test_x, test_y, test_limit),
        seed=seed,
        val_size=val_size,
        size=size,
    )


def normalize(images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255.0 - MEAN) / STD


def augment(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by `pad`, and random horizontal flip, for a uint8 batch."""
    n = len(images)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return crop_flip(images, dy, dx, flip, pad)


def crop_flip(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              pad: int = 4) -> torch.Tensor:
    """Crop image i of the zero-padded batch at (dy[i], dx[i]), mirrored where flip[i]."""
    n, c, h, w = images.shape
    dy, dx, flip = dy.to(images.device), dx.to(images.device), flip.to(images.device)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]  # n 1 h 1
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]  # n 1 1 w
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chan = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


class Batches:
    """Mini-batches of one ImageSet on one device: shuffled and augmented from (seed, epoch) only.

    With `world` > 1 this is rank `rank`'s shard: a `DistributedSampler` (seeded, `set_epoch` every
    epoch) deals the epoch's permutation round-robin, so batch i of every rank together is exactly
    batch i of a one-process run with `world` times the batch size. Augmentation is drawn per image
    of the set, not per batch, for the same reason: an image is cropped alike whichever rank gets it.
    """

    def __init__(self, data: ImageSet, batch_size: int, *, shuffle: bool = False, augmented: bool = False,
                 seed: int = 0, device: torch.device | str = "cpu", drop_last: bool = False,
                 channels_last: bool = False, rank: int = 0, world: int = 1) -> None:
        if batch_size < 1:
            raise DataError(f"batch size must be positive, got {batch_size}")
        if not 0 <= rank < world:
            raise DataError(f"rank {rank} outside a world of {world}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augmented = augmented
        self.seed = seed
        self.drop_last = drop_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.device = torch.device(device)
        self.sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=shuffle,  # type: ignore[arg-type]
                                          seed=self._epoch_seed(0), drop_last=drop_last)
        # Kept as uint8 on the device: 70k 32x32 images are 72 MB.
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)

    def _epoch_seed(self, epoch: int) -> int:
        # The sampler seeds its permutation with seed + epoch; this keeps seed 1 epoch 0 apart from seed 0 epoch 1.
        return self.seed * 1_000_003 + epoch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(normalized float images N x C x H x W, labels) for every batch of epoch `epoch`."""
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(self.sampler), dtype=torch.long).to(self.device)
        tables = None
        if self.augmented:
            # A stream of its own (odd seeds; the permutation's are the sampler's), one draw per image of the set.
            gen = torch.Generator().manual_seed(2 * self._epoch_seed(epoch) + 1)
            n, pad = len(self.data), 4
            tables = (torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(self.device),
                      torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(self.device),
                      (torch.rand(n, generator=gen) < 0.5).to(self.device))
        for b in range(len(self)):
            idx = order[b * self.batch_size: (b + 1) * self.batch_size]
            x, y = self.images[idx], self.labels[idx]
            if tables is not None:
                x = crop_flip(x, *(t[idx] for t in tables))
            yield normalize(x).contiguous(memory_format=self.memory_format), y
