"""The latent probe: high accuracy on separable features, chance on random labels, reproducible."""

from __future__ import annotations

import torch

from qvae.config import Config
from qvae.metrics.probe import latent_probe, train_probe
from qvae.models.qvae import QVAE


def clusters(n: int, seed: int, dim: int = 16, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs around fixed, well separated class centres (centres do not depend on `seed`)."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 3
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=gen)
    return centres[y] + torch.randn(n, dim, generator=gen), y


def test_separable_features_are_classified_almost_perfectly():
    (xtr, ytr), (xte, yte) = clusters(2000, 0), clusters(500, 1)
    result = train_probe(xtr, ytr, xte, yte, epochs=5)
    assert result.accuracy > 0.97 and result.feature_dim == 16 and result.epochs == 5


def test_random_labels_stay_at_chance_on_the_test_set():
    gen = torch.Generator().manual_seed(2)
    xtr, xte = torch.randn(2000, 16, generator=gen), torch.randn(2000, 16, generator=gen)
    ytr, yte = torch.randint(0, 10, (2000,), generator=gen), torch.randint(0, 10, (2000,), generator=gen)
    result = train_probe(xtr, ytr, xte, yte, epochs=5)
    assert abs(result.accuracy - 0.1) < 0.035  # 2000 test labels: sd of chance accuracy ~0.007


def test_probe_is_deterministic_given_a_seed_and_leaves_the_global_rng_alone():
    (xtr, ytr), (xte, yte) = clusters(500, 3), clusters(200, 4)
    state = torch.random.get_rng_state()
    a = train_probe(xtr, ytr, xte, yte, epochs=2, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a == train_probe(xtr, ytr, xte, yte, epochs=2, seed=5)


def test_latent_probe_reads_the_models_features():
    model = QVAE(Config(input_dim=16, hidden_dim=32, latent_dim=8, num_visible=4, num_hidden=4, device="cpu"))
    (xtr, ytr), (xte, yte) = clusters(600, 6), clusters(200, 7)
    result = latent_probe(model, xtr.sigmoid(), ytr, xte.sigmoid(), yte, epochs=3)
    assert result.feature_dim == 8 and 0.0 <= result.accuracy <= 1.0
