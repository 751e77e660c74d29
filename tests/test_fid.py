"""Tests for qvae.metrics.fid with the real FID Inception network (fetched once from PyPI) on real digits.

Inception runs at a few images per second on 2 CPU cores, so the sets are tiny: 24 images for the
FID sanity checks (computed once per session and shared), 3 for the cache mechanics.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from qvae.data.mnist import load_mnist
from qvae.metrics.fid import FEATURE_LAYERS, FidResult, InceptionFeatures, compute_fid, default_cache_dir, resize_matrix

REPO_ROOT = Path(__file__).resolve().parents[1]
N_SANITY = 24


@pytest.fixture(scope="session")
def extractor(inception_weights: Path) -> InceptionFeatures:
    return InceptionFeatures(inception_weights, dims=(64, 192, 768, 2048))


def _count_inception(mp: pytest.MonkeyPatch) -> list[int]:
    """Patch ``InceptionFeatures.forward`` to record the size of every batch it runs."""
    seen: list[int] = []
    forward = InceptionFeatures.forward

    def counting(self: InceptionFeatures, images: torch.Tensor) -> dict[int, torch.Tensor]:
        seen.append(len(images))
        return forward(self, images)

    mp.setattr(InceptionFeatures, "forward", counting)
    return seen


@dataclass(frozen=True)
class Sanity:
    results: dict[str, FidResult]  # generated set -> result against the same real digits
    images_run: dict[str, int]  # generated set -> images through Inception in that call


@pytest.fixture(scope="session")
def sanity(inception_weights: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Sanity:
    """Default-settings FID/KID of other digits, uniform noise and the real set itself vs 24 test digits."""
    data = load_mnist(mnist_dir, train_size=1, test_size=2 * N_SANITY)
    other, real = data.test_x[:N_SANITY], data.test_x[N_SANITY:]
    noise = torch.rand(N_SANITY, 784, generator=torch.Generator().manual_seed(0))
    run = partial(compute_fid, real=real, weights=inception_weights,
                  cache_dir=tmp_path_factory.mktemp("fid-cache"), progress=False)
    results, images_run = {}, {}
    with pytest.MonkeyPatch.context() as mp:
        seen = _count_inception(mp)
        for name, generated in (("digits", other), ("noise", noise), ("self", real)):
            seen.clear()
            results[name] = run(generated)
            images_run[name] = sum(seen)
    return Sanity(results, images_run)


@pytest.fixture
def tiny(mnist_dir: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three disjoint sets of 3 test digits: generated, real, another real."""
    x = load_mnist(mnist_dir, train_size=1, test_size=9).test_x
    return x[:3], x[3:6], x[6:]


# --- resizing and features -------------------------------------------------------------------------


def test_bilinear_resize_matches_torch_interpolate() -> None:
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    a = resize_matrix(28, 299, "bilinear")
    expected = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    torch.testing.assert_close(a @ x @ a.T, expected, rtol=0, atol=1e-5)


def test_resize_matrices_by_hand() -> None:
    # 2 -> 4 pixels. Half-pixel centres sample at -0.25 (clamped), 0.25, 0.75, 1.25 (clamped);
    # TF 1.x samples at 0, 0.5, 1, 1.5 (clamped).
    bilinear = [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]]
    tf1 = [[1, 0], [0.5, 0.5], [0, 1], [0, 1]]
    torch.testing.assert_close(resize_matrix(2, 4, "bilinear"), torch.tensor(bilinear))
    torch.testing.assert_close(resize_matrix(2, 4, "tf1"), torch.tensor(tf1))
    with pytest.raises(ValueError, match="resize must be one of"):
        resize_matrix(2, 4, "bicubic")


def test_features_match_the_network_run_by_hand(extractor: InceptionFeatures) -> None:
    x = torch.rand(2, 784, generator=torch.Generator().manual_seed(1))
    features = extractor(x)
    assert list(features) == [64, 192, 768, 2048]
    assert {d: tuple(f.shape) for d, f in features.items()} == {d: (2, d) for d in FEATURE_LAYERS}

    # Independent preprocessing: torch's bilinear resize, the TF graph's (255 x - 128) / 128, 3 channels.
    img = F.interpolate(x.reshape(2, 1, 28, 28), size=(299, 299), mode="bilinear", align_corners=False)
    img = ((img * 255 - 128) / 128).repeat(1, 3, 1, 1)
    layers = dict(extractor.net.net.layers.named_children())
    with torch.no_grad():
        h = img
        for name in ("conv", "conv_1", "conv_2", "pool0"):
            h = layers[name](h)
        full = extractor.net(img)  # the TorchScript module's own forward: pool2 output, N×2048
    torch.testing.assert_close(features[64], h.mean(dim=(2, 3)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(features[2048], full, rtol=1e-4, atol=1e-4)


def test_extract_batches_and_stops_at_the_deepest_layer_needed(inception_weights: Path) -> None:
    small = InceptionFeatures(inception_weights, dims=(64,))
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    batched = small.extract(x, batch_size=2)
    assert list(batched) == [64] and batched[64].shape == (5, 64)
    torch.testing.assert_close(batched[64], small(x)[64], rtol=1e-5, atol=1e-5)
    assert small._stop == 4  # conv, conv_1, conv_2, pool0


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QVAE_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("QVAE_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "qvae"


# --- FID / KID sanity --------------------------------------------------------------------------------


def test_fid_of_a_set_against_itself_is_zero(sanity: Sanity) -> None:
    same = sanity.results["self"]
    assert abs(same.fid_by_dim[2048]) < 1e-2
    assert abs(same.fid_by_dim[64]) < 1e-4
    # The unbiased MMD² estimate of a set against itself is -2 (mean k(x,x) - mean k(x,x')) / n:
    # slightly negative, and small next to noise's.
    assert -0.05 * sanity.results["noise"].kid < same.kid < 0


def test_noise_scores_far_worse_than_digits(sanity: Sanity) -> None:
    digits, noise = sanity.results["digits"], sanity.results["noise"]
    for d in (2048, 64):
        assert noise.fid_by_dim[d] > 3 * digits.fid_by_dim[d] > 0
    assert noise.kid > 0.1 > digits.kid
    assert digits.fid_samples == noise.fid_samples == N_SANITY
    assert digits.kid_subset_size == N_SANITY // 2 and digits.kid_dim == 2048


def test_result_reads_as_its_metrics(sanity: Sanity) -> None:
    result = sanity.results["digits"]
    assert list(result) == ["fid", "fid_64", "kid", "kid_std", "fid_samples"]
    assert dict(result) == result.metrics() == {
        "fid": result.fid_by_dim[2048], "fid_64": result.fid_by_dim[64], "kid": result.kid,
        "kid_std": result.kid_std, "fid_samples": N_SANITY}
    assert result["fid_64"] == result.fid_by_dim[64] and len(result) == 5


def test_real_statistics_are_computed_once(sanity: Sanity) -> None:
    assert sanity.images_run == {"digits": 2 * N_SANITY, "noise": N_SANITY, "self": N_SANITY}
    assert [r.real_cache_hit for r in sanity.results.values()] == [False, True, True]


# --- the real-image cache ----------------------------------------------------------------------------


def test_cache_hits_misses_and_survives_corruption(
    inception_weights: Path, tiny: tuple[torch.Tensor, ...], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    generated, real, other_real = tiny
    seen = _count_inception(monkeypatch)
    run = partial(compute_fid, generated, weights=inception_weights, cache_dir=tmp_path,
                  feature_dims=(64,), progress=False)
    cache_dir = tmp_path / "fid-real-stats"

    def images_run() -> int:
        n = sum(seen)
        seen.clear()
        return n

    rng_state = torch.get_rng_state()
    first = run(real)
    assert not first.real_cache_hit and images_run() == 6
    assert [p.suffix for p in cache_dir.iterdir()] == [".pt"]  # no temporary file left behind

    second = run(real)
    assert second.real_cache_hit and images_run() == 3  # only the generated images
    assert second == FidResult(**{**first.__dict__, "real_cache_hit": True})
    assert torch.equal(torch.get_rng_state(), rng_state)  # KID's subsets come from a private seed

    assert not run(other_real).real_cache_hit  # another real set is another key,
    assert not run(real, feature_dims=(192, 64)).real_cache_hit  # so are other feature sizes
    assert not run(real, resize="tf1").real_cache_hit  # and another resize
    assert len(list(cache_dir.iterdir())) == 4
    images_run()

    for p in cache_dir.iterdir():
        p.write_bytes(b"not a torch file")
    with caplog.at_level("WARNING", logger="qvae.metrics.fid"):
        again = run(real)  # a corrupt entry is recomputed and rewritten
    assert not again.real_cache_hit and images_run() == 6
    assert "ignoring FID real-image cache" in caplog.text
    assert again == first
    assert run(real).real_cache_hit


def test_cache_can_be_disabled(inception_weights: Path, tiny: tuple[torch.Tensor, ...], tmp_path: Path) -> None:
    generated, real, _ = tiny
    result = compute_fid(generated, real, weights=inception_weights, cache_dir=tmp_path,
                         feature_dims=(64,), cache_real=False, progress=False)
    assert not result.real_cache_hit
    assert not (tmp_path / "fid-real-stats").exists()


# --- validation (fails before any weights are looked for) --------------------------------------------


@pytest.mark.parametrize(
    ("generated", "real", "message"),
    [
        (torch.rand(1, 784), torch.rand(1, 784), r"fid_samples must be >= 2 .* got 1 generated"),
        (torch.rand(4, 784), torch.rand(1, 784), r"fid_samples must be >= 2 .* got 1 real"),
        (torch.rand(4, 784), torch.rand(4, 1024), r"same size, got 1×28×28 and 1×32×32"),
        (torch.rand(4, 784), torch.rand(5, 784), r"same number of images \(fid_samples\), got 4 and 5"),
        (torch.rand(4, 784) * 255, torch.rand(4, 784), r"generated images must have values in \[0, 1\].*divide by 255"),
        (torch.rand(4, 784), torch.rand(4, 784) - 0.5, r"real images must have values in \[0, 1\]"),
        (torch.full((4, 784), float("nan")), torch.rand(4, 784), r"generated images contain NaN"),
        (torch.rand(4, 780), torch.rand(4, 780), r"flat images must be square"),
        (torch.rand(4, 2, 28, 28), torch.rand(4, 2, 28, 28), r"1 or 3 channels"),
        (torch.rand(4, 1, 1, 28, 28), torch.rand(4, 784), r"N×784, N×H×W or N×C×H×W"),
    ],
)
def test_bad_images_are_rejected(generated: torch.Tensor, real: torch.Tensor, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        compute_fid(generated, real, cache_dir=tmp_path, weights=tmp_path / "absent.pt", progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"feature_dims": (100,)}, r"feature_dims must be distinct values of \(64, 192, 768, 2048\)"),
        ({"feature_dims": (64, 64)}, r"feature_dims must be distinct"),
        ({"feature_dims": ()}, r"feature_dims must be distinct"),
        ({"kid_subset_size": 5}, r"kid_subset_size must be in \[2, fid_samples=4\], got 5"),
        ({"kid_subset_size": 1}, r"kid_subset_size must be in \[2, fid_samples=4\], got 1"),
        ({"kid_subsets": 0}, r"kid_subsets must be >= 1"),
        ({"batch_size": 0}, r"batch_size must be >= 1"),
        ({"resize": "nearest"}, r"resize must be one of \('bilinear', 'tf1'\)"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict, message: str, tmp_path: Path) -> None:
    x = torch.rand(4, 784)
    with pytest.raises(ValueError, match=message):
        compute_fid(x, x, cache_dir=tmp_path, weights=tmp_path / "absent.pt", progress=False, **kwargs)


def test_module_does_not_import_mlflow() -> None:
    code = "import sys, qvae.metrics.fid; assert 'mlflow' not in sys.modules, 'mlflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
