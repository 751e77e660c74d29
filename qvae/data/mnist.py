"""MNIST as tensors: the train / validation / test splits, batches on the training device, binarisation.

``load_mnist`` reads the verified raw files (see ``qvae.data.fetch``) with numpy into flat float
tensors; ``batches`` iterates over tensors already on the training device without a DataLoader.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from qvae.config import BINARIZE_MODES, VALIDATION_SIZE, Config
from qvae.data.fetch import (
    MNIST_SOURCES,
    RAW_MD5,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DataError,
    MnistSource,
    ensure_mnist,
    read_idx,
)

EVALUATION_BINARIZATION_SEED = 12345  # binarised models are evaluated on one fixed Bernoulli sample


@dataclass(frozen=True)
class MnistData:
    """MNIST's three splits, flattened to N×784 float32 grey levels in [0, 1], labels int64.

    train: the first training-file images (what the model learns from); validation: the last
    ``validation_size`` training-file images (everything that chooses: the best checkpoint, pruning,
    tuning objectives, pictures); test: the test file (read once, by the final scores).
    Pixels stay grey here whatever the model's ``binarize``: see ``model_inputs``.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: MnistSource

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of "train", "validation" or "test"."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        prefix = {"train": "train", "validation": "val", "test": "test"}[name]
        return getattr(self, f"{prefix}_x"), getattr(self, f"{prefix}_y")


SPLITS = ("train", "validation", "test")


# --------------------------------------------------------------------------- tensors


def load_mnist(
    data_dir: str | os.PathLike[str],
    *,
    train_size: int | None = None,
    validation_size: int = VALIDATION_SIZE,
    test_size: int | None = None,
    device: str | torch.device = "cpu",
    sources: Sequence[str] = MNIST_SOURCES,
    expected_md5: Mapping[str, str] = RAW_MD5,
) -> MnistData:
    """MNIST's train / validation / test splits (see ``MnistData``) on ``device``, fetched if needed.

    The training file's last ``validation_size`` images are the validation split, its first ones
    the training split; ``train_size`` / ``test_size`` keep the first images of those in file
    order (None: all). Pixels are uint8 / 255, as torchvision's ``ToTensor``.
    """
    source = ensure_mnist(data_dir, sources=sources, expected_md5=expected_md5)
    file_x, file_y = _read_split(source.raw_dir, TRAIN_IMAGES, TRAIN_LABELS)
    test_x, test_y = _read_split(source.raw_dir, TEST_IMAGES, TEST_LABELS)
    n_val = _check_size("validation_size", validation_size, len(file_y) - 1, none_means_all=False)
    n_train = _check_size("train_size", train_size, len(file_y) - n_val)
    n_test = _check_size("test_size", test_size, len(test_y))
    first_val = len(file_y) - n_val
    return MnistData(
        train_x=file_x[:n_train].to(device),
        train_y=file_y[:n_train].to(device),
        val_x=file_x[first_val:].to(device),
        val_y=file_y[first_val:].to(device),
        test_x=test_x[:n_test].to(device),
        test_y=test_y[:n_test].to(device),
        source=source,
    )


def model_inputs(x: torch.Tensor, binarize: str, seed: int = EVALUATION_BINARIZATION_SEED) -> torch.Tensor:
    """Images in the form a model trained with ``binarize`` reads them: the one rule for every
    evaluation (validation ELBO, NLL, latent probe, t-SNE, reconstructions).

    "none": the grey levels; "static" and "dynamic": one fixed Bernoulli sample of the grey levels,
    drawn from a generator seeded by ``seed`` (a static model's training images are this sample with
    the run's seed). Images compared with generated ones (FID, the grids) stay grey: a decoder's
    mean is a probability of ink, which the grey level estimates.
    """
    if binarize not in BINARIZE_MODES:
        raise ValueError(f"binarize must be one of {BINARIZE_MODES}, got {binarize!r}")
    if binarize == "none":
        return x
    return binarize_batch(x, torch.Generator(device=x.device).manual_seed(seed))


def check_data_dir(data_dir: str | os.PathLike[str]) -> None:
    """Raise ``DataError`` unless MNIST is already in ``data_dir`` or it can be fetched there
    (the directory, or the nearest existing parent, is a writable directory)."""
    raw_dir = Path(data_dir) / "MNIST" / "raw"
    if all((raw_dir / name).is_file() for name in RAW_MD5):
        return  # verified when loaded; a corrupted file is fetched again then
    probe = Path(data_dir).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise DataError(f"data_dir must be a writable directory (MNIST is fetched into it when missing); "
                        f"{data_dir!r} cannot be created or written ({probe} is not a writable directory)")


def load_mnist_for(config: "Config", device: str | torch.device = "cpu") -> MnistData:
    """The MNIST splits a config asks for (its data_dir and split sizes, 0 = all)."""
    return load_mnist(config.data_dir, train_size=config.train_size or None, validation_size=config.validation_size,
                      test_size=config.test_size or None, device=device)


def _read_split(raw_dir: Path, images_file: str, labels_file: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N×784 float32 in [0, 1], N int64) from one split's idx files."""
    images, labels = read_idx(raw_dir / images_file), read_idx(raw_dir / labels_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{raw_dir}: {images_file} {images.shape} does not match {labels_file} {labels.shape}"
        )
    x = torch.from_numpy(images.reshape(len(images), -1)).to(torch.float32).div_(255)
    return x, torch.from_numpy(labels).to(torch.int64)


def _check_size(name: str, size: int | None, available: int, none_means_all: bool = True) -> int:
    if size is None and none_means_all:
        return available
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= available:
        raise ValueError(f"{name} must be an int in 1..{available}{' (or None for all)' if none_means_all else ''}, "
                         f"got {size!r}")
    return size


def binarize_batch(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh Bernoulli sample of intensities ``x`` (dynamic binarization, once per batch).

    ``generator`` must live on ``x``'s device.
    """
    return torch.bernoulli(x, generator=generator)


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches ``batches`` yields for ``n`` items."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x_batch, y_batch)`` over one epoch of tensors already on the training device.

    With ``shuffle`` the order is one ``randperm`` drawn from ``generator`` (on any device);
    without it batches are contiguous views in order.
    """
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"x and y have different lengths: {n} != {y.shape[0]}")
    count = num_batches(n, batch_size, drop_last)
    if not shuffle:
        for i in range(count):
            yield x[i * batch_size : (i + 1) * batch_size], y[i * batch_size : (i + 1) * batch_size]
        return
    perm_device = generator.device if generator is not None else x.device
    perm = torch.randperm(n, generator=generator, device=perm_device).to(x.device)
    for i in range(count):
        idx = perm[i * batch_size : (i + 1) * batch_size]
        yield x.index_select(0, idx), y.index_select(0, idx.to(y.device))


def train_mean(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel mean over training images (N×D → D): centres encoder input, inits decoder bias."""
    return x.mean(dim=0)
