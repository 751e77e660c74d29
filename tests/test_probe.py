"""The latent probe: high accuracy on separable features, chance on random labels, reproducible."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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


def labelled(n: int, seed: int, classes: int = 10) -> torch.Tensor:
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def test_features_that_carry_the_label_are_read_perfectly():
    """One-hot labels, and a linear code of them (a fixed random 10 -> 16 map): 100 % on unseen images."""
    ytr, yte = labelled(2000, 10), labelled(1000, 11)
    code = torch.randn(10, 16, generator=torch.Generator().manual_seed(12))
    for encode in (lambda y: F.one_hot(y, 10).float(), lambda y: F.one_hot(y, 10).float() @ code):
        result = train_probe(encode(ytr), ytr, encode(yte), yte, epochs=5)
        assert result.accuracy == 1.0 and result.train_accuracy == 1.0


class LabelEncoder(nn.Module):
    """A stand-in model whose latent features are a one-hot code of the label hidden in pixel 0."""

    def __init__(self) -> None:
        super().__init__()
        self.train_bias = nn.Parameter(torch.zeros(4))  # where `latent_features` looks for the device

    def latent_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(x[:, 0].round().long(), 10).float()


def test_latent_probe_reaches_100_percent_when_the_features_carry_the_label_and_chance_on_noise():
    model = LabelEncoder().train()
    ytr, yte = labelled(2000, 13), labelled(2000, 14)
    gen = torch.Generator().manual_seed(15)
    xtr, xte = torch.rand(2000, 5, generator=gen), torch.rand(2000, 5, generator=gen)
    xtr[:, 0], xte[:, 0] = ytr.float(), yte.float()
    assert latent_probe(model, xtr, ytr, xte, yte, epochs=5).accuracy == 1.0
    noise = torch.randint(0, 10, (2000,), generator=gen).float()  # features independent of the labels
    xte[:, 0] = noise
    assert abs(latent_probe(model, xtr, ytr, xte, yte, epochs=5).accuracy - 0.1) < 0.035
    assert model.training  # restored after the features were read in eval mode


def test_latent_probe_is_the_probe_on_the_models_latent_features():
    model = QVAE(Config(input_dim=16, hidden_dim=32, latent_dim=8, num_visible=4, num_hidden=4, device="cpu"))
    (xtr, ytr), (xte, yte) = clusters(600, 6), clusters(200, 7)
    xtr, xte = xtr.sigmoid(), xte.sigmoid()
    result = latent_probe(model, xtr, ytr, xte, yte, epochs=3, seed=1)
    model.eval()
    with torch.no_grad():
        ftr, fte = torch.sigmoid(model.encode(xtr)), torch.sigmoid(model.encode(xte))  # q(z=1|x)
    expected = train_probe(ftr, ytr, fte, yte, epochs=3, seed=1)
    assert result == expected and result.feature_dim == 8 and result.epochs == 3
