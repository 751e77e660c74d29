"""The Gaussian-prior VAE baseline: the QVAE's encoder/decoder widths with N(0, I) latents.

Same interface as `QVAE` towards train.py, tracking, plots and the pyfunc generator, so the
baseline runs through exactly the same pipeline; what differs is only the latent space:
q(z|x) = N(mu, diag sigma^2) from an encoder with 2 * latent_dim outputs (mean, log-variance),
reparameterised samples, p(z) = N(0, I) with the KL in closed form. Everything it reports is
exact (no log Z), so `elbo_unnormalized` equals `elbo`. The prior object `latent_prior`
(`GaussianPrior`) answers the training loop and the metrics as the QVAE's Boltzmann prior does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qvae.config import Config
from qvae.models.importance import iw_bound
from qvae.models.qvae import CentredData, encoder_decoder
from qvae.priors.gaussian import GaussianPrior, normal_log_pdf


def gaussian_kl(mean: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) per row, in closed form."""
    return 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(-1)


class GaussianVAE(CentredData):
    """A VAE with latent_dim standard-normal latents (the usual baseline for the QVAE)."""

    def __init__(self, config: Config, data_mean: Tensor | None = None) -> None:
        super().__init__(config.input_dim, data_mean, config.kl_beta, config.kl_warmup_epochs > 0)
        self.config = config
        c = config
        self.encoder, self.decoder = encoder_decoder(c, 2 * c.latent_dim)
        self.latent_prior = GaussianPrior(c.latent_dim)  # no parameters, nothing in the state dict

    # ---------------------------------------------------------------- pieces
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z | x)."""
        mean, log_var = self.encoder(x - self.data_mean).chunk(2, dim=-1)
        return mean, log_var

    def decode(self, z: Tensor) -> Tensor:
        """Logits of p(x=1 | z)."""
        return self.decoder(z) + self.train_bias

    @staticmethod
    def _noise(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)

    # ---------------------------------------------------------------- the objective
    def forward(self, x: Tensor, negative: Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Batch means of cost (-log p(x|z), one sample), the exact kl, elbo and the loss.

        `negative` is accepted for QVAE compatibility and ignored; the loss is
        cost + kl_beta * kl, the QVAE's weighting of its KL.
        """
        mean, log_var = self.encode(x)
        z = mean + (0.5 * log_var).exp() * self._noise(mean.shape, mean, generator)
        cost = F.binary_cross_entropy_with_logits(self.decode(z), x, reduction="none").sum(-1).mean()
        kl = gaussian_kl(mean, log_var).mean()
        elbo = -cost - kl
        return {"cost": cost, "kl": kl, "elbo": elbo, "elbo_unnormalized": elbo,
                "loss": cost + self.kl_weight() * kl}

    def training_step(self, x: Tensor, sampler: object = None,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One step's terms, of the ELBO (iw_samples = 0) or the importance-weighted bound; there is no
        negative phase, so `sampler` is unused (may be None)."""
        if self.config.iw_samples:
            return self.importance_weighted(x, generator)
        return self(x, None, generator)

    def importance_weighted(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The IWAE's training terms with k = iw_samples proposals: log w = log p(x|z) + kl_beta (log p(z) -
        log q(z|x)); `iw_bound` at kl_beta = 1, and the one-sample terms averaged over the k proposals."""
        mean, log_var = self.encode(x)
        log_px, log_pz, log_qz = self._log_weight_parts(x, mean, log_var, self.config.iw_samples, generator)
        log_prior_over_q = log_pz - log_qz
        cost, kl = -log_px.mean(), gaussian_kl(mean, log_var).mean()
        return {"cost": cost, "kl": kl, "elbo": -cost - kl, "elbo_unnormalized": -cost - kl,
                "iw_bound": iw_bound(log_px + log_prior_over_q).mean().detach(),
                "loss": -iw_bound(log_px + self.kl_weight() * log_prior_over_q).mean()}

    def _log_weight_parts(self, x: Tensor, mean: Tensor, log_var: Tensor, k: int,
                          generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        """log p(x|z), log N(z; 0, I) and log q(z|x), each (K, B), for K reparameterised z ~ q(z|x)."""
        z = mean + (0.5 * log_var).exp() * self._noise((k, *mean.shape), mean, generator)
        x_logits = self.decode(z)
        log_px = -F.binary_cross_entropy_with_logits(x_logits, x.expand_as(x_logits), reduction="none").sum(-1)
        return log_px, self.latent_prior.log_prob(z), normal_log_pdf(z, mean, log_var)

    def log_importance_weights(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """(K, B) log p(x|z) + log N(z; 0, I) - log q(z|x) for z ~ q(z|x) (see nll.py)."""
        log_px, log_pz, log_qz = self._log_weight_parts(x, *self.encode(x), k, generator)
        return log_px + log_pz - log_qz

    # ---------------------------------------------------------------- using the model
    @torch.no_grad()
    def latent_features(self, x: Tensor) -> Tensor:
        """The posterior mean: deterministic latent features (for t-SNE and probes)."""
        return self.encode(x)[0]

    @torch.no_grad()
    def reconstruct(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean, log_var = self.encode(x)
        z = mean + (0.5 * log_var).exp() * self._noise(mean.shape, mean, generator)
        return torch.sigmoid(self.decode(z))

    @torch.no_grad()
    def generate(self, n: int, sweeps: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """n images (n, input_dim) in [0, 1] from z ~ N(0, I); `sweeps` is unused (no Markov chain)."""
        if n < 1:
            raise ValueError(f"number of images must be >= 1, got {n}")
        return torch.sigmoid(self.decode(self.latent_prior.sample(n, sweeps, generator)))

    @torch.no_grad()
    def generate_from_seeds(self, seeds: Sequence[int], sweeps: int | None = None,
                            chunk_size: int = 256) -> Tensor:
        """One image per seed, each from its own PCG64 stream keyed by the full seed (as QVAE's).

        `sweeps` is accepted for interface compatibility (validated, otherwise unused).
        """
        if len(seeds) < 1:
            raise ValueError("seeds must hold at least one seed")
        if sweeps is not None and int(sweeps) < 0:
            raise ValueError(f"sweeps must be >= 0, got {sweeps}")
        images = []
        for start in range(0, len(seeds), chunk_size):
            streams = [np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed))))
                       for seed in seeds[start:start + chunk_size]]
            images.append(torch.sigmoid(self.decode(self.latent_prior.sample_from_streams(streams))))
        return torch.cat(images)
