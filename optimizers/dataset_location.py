"""Where Fashion-MNIST is read from. Kept apart from `data` (numpy and torch) so the CLI can name
the setting in its help without importing torch."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "HIL_FASHION_MNIST_DIR"
DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"


def data_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder to read: `root`, else $HIL_FASHION_MNIST_DIR, else the Debian package's folder."""
    return Path(root or os.environ.get(DATA_ENV) or DEFAULT_DIR)
