"""The Gaussian-prior VAE baseline: exact KL, the QVAE's interface, training, seeds and resuming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from qvae.config import Config
from qvae.models.build import build_model
from qvae.models.gaussian import GaussianVAE, gaussian_kl
from qvae.models.qvae import QVAE
from qvae.train import load_checkpoint, train

TINY = dict(input_dim=12, hidden_dim=16, latent_dim=4, num_visible=2, num_hidden=2, prior="gaussian", device="cpu")
SMALL = dict(hidden_dim=128, latent_dim=32, num_visible=16, num_hidden=16, batch_size=64, train_size=1024,
             validation_size=256, test_size=256, device="cpu", prior="gaussian", kl_beta=1.0)


def test_kl_matches_torch_distributions_and_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    mean, log_var = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    q, p = Normal(mean, (0.5 * log_var).exp()), Normal(0.0, 1.0)
    assert torch.allclose(gaussian_kl(mean, log_var), kl_divergence(q, p).sum(-1), atol=1e-5)
    z = q.sample((200_000,))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean(0)
    assert torch.allclose(gaussian_kl(mean, log_var), monte_carlo, atol=0.05)


def test_forward_reports_exact_terms_with_the_qvae_names():
    model = GaussianVAE(Config(**TINY, kl_beta=0.5))
    x = torch.rand(7, 12, generator=torch.Generator().manual_seed(1))
    terms = model(x, generator=torch.Generator().manual_seed(2))
    mean, log_var = model.encode(x)
    exact_kl = kl_divergence(Normal(mean, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum(-1).mean()
    assert terms["kl"].item() == pytest.approx(exact_kl.item(), abs=1e-5)
    assert terms["elbo"].item() == pytest.approx(-terms["cost"].item() - terms["kl"].item(), abs=1e-5)
    assert terms["elbo_unnormalized"].item() == terms["elbo"].item()
    assert terms["loss"].item() == pytest.approx(terms["cost"].item() + 0.5 * terms["kl"].item(), abs=1e-5)
    assert torch.equal(model.latent_features(x), mean)
    assert model.generate(3).shape == (3, 12) and model.reconstruct(x).shape == (7, 12)


def test_build_model_picks_the_prior():
    assert isinstance(build_model(Config(**TINY)), GaussianVAE)
    assert isinstance(build_model(Config(**{**TINY, "prior": "boltzmann"})), QVAE)


def test_each_seed_gives_its_own_image_alone_or_in_a_batch():
    model = GaussianVAE(Config(**TINY))
    seeds = [3, 2**40 + 7, 11]
    batch = model.generate_from_seeds(seeds, chunk_size=2)
    for i, seed in enumerate(seeds):
        # the latent draw is identical; the decoder's batched matmul may round differently per batch size
        assert torch.allclose(model.generate_from_seeds([seed]), batch[i : i + 1], atol=1e-6)
        z = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed))).standard_normal(4, dtype=np.float32)
        expected = torch.sigmoid(model.decoder(torch.from_numpy(z)) + model.train_bias)
        assert torch.allclose(batch[i], expected, atol=1e-6)
    assert not torch.allclose(batch[0], batch[2], atol=1e-3)
    assert torch.equal(model.generate_from_seeds(seeds, chunk_size=2), batch)  # same call, same bits



def test_training_without_a_sampler_lowers_the_loss(small_data, tmp_path):
    result = train(Config(epochs=3, **SMALL), small_data, checkpoint_dir=tmp_path, progress=False)
    h = result.history
    assert result.sampler is None and isinstance(result.model, GaussianVAE)
    assert h[-1]["loss"] < h[0]["loss"] and h[-1]["cost"] < 0.9 * h[0]["cost"]
    assert h[-1]["val_elbo"] > h[0]["val_elbo"]
    assert "log_z" not in h[-1] and all(e["val_kl"] >= 0 for e in h)
    assert h[-1]["val_elbo"] == pytest.approx(-h[-1]["val_cost"] - h[-1]["val_kl"], rel=1e-5)
    assert load_checkpoint(tmp_path / "last.pt")["sampler"] is None


def test_resumed_gaussian_run_continues_exactly(small_data, tmp_path):
    straight = train(Config(epochs=2, **SMALL), small_data, checkpoint_dir=tmp_path / "a", progress=False)
    train(Config(epochs=1, **SMALL), small_data, checkpoint_dir=tmp_path / "b", progress=False)
    resumed = train(Config(epochs=2, **SMALL), small_data, checkpoint_dir=tmp_path / "b",
                    resume_from=tmp_path / "b" / "last.pt", progress=False)
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
