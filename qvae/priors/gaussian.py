"""The N(0, I) prior of the Gaussian-VAE baseline, with the interface of the Boltzmann priors.

Normalised in closed form: log Z = 0, the model's KL is exact (no completion by log Z, no bound),
no negative phase and no Markov chain (`sweeps` is accepted and unused). A module only to follow
the model to its device and dtype: it holds one empty, non-persistent buffer, so the model's
state dict is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

LOG_2PI = math.log(2 * math.pi)


def normal_log_pdf(z: Tensor, mean: Tensor | float = 0.0, log_var: Tensor | float = 0.0) -> Tensor:
    """log N(z; mean, diag exp(log_var)) summed over the last axis."""
    log_var = torch.as_tensor(log_var, dtype=z.dtype, device=z.device)
    return -0.5 * (LOG_2PI + log_var + (z - mean).square() / log_var.exp()).sum(-1)


class GaussianPrior(nn.Module):
    """p(z) = N(0, I) over `latent_dim` real latents."""

    is_bound = False
    needs_log_z = False
    kl_name, elbo_name = "kl", "elbo"
    log_z_symbol = "log Z"

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("anchor", torch.zeros(0), persistent=False)  # device and dtype of the model

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) per row."""
        return normal_log_pdf(z)

    def make_sampler(self) -> None:
        """No negative phase: the KL and its gradient are closed-form."""
        return None

    @torch.no_grad()
    def sample(self, n: int, sweeps: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """n draws (n, latent_dim) of N(0, I); `sweeps` unused."""
        return torch.randn((n, self.latent_dim), generator=generator, device=self.anchor.device,
                           dtype=self.anchor.dtype)

    @torch.no_grad()
    def sample_from_streams(self, streams: Sequence[np.random.Generator], sweeps: int | None = None) -> Tensor:
        """One N(0, I) draw per numpy stream (float32 normals of row i from stream i); `sweeps` unused."""
        rows = [stream.standard_normal(self.latent_dim, dtype=np.float32) for stream in streams]
        return torch.from_numpy(np.stack(rows)).to(device=self.anchor.device, dtype=self.anchor.dtype)

    def log_z_method(self) -> str:
        return "none"

    def log_z(self, chains: int = 0, betas: int = 0, generator: torch.Generator | None = None,
              method: str = "auto") -> tuple[float, float, str]:
        """(0, 0, "none"): N(0, I) is normalised."""
        return 0.0, 0.0, "none"

    def kl_uniform_method(self) -> str:
        return "none"  # a density on R^n has no uniform distribution to compare with

    def kl_to_uniform(self, log_z: float, generator: torch.Generator | None = None) -> float | None:
        return None

    def complete_with_log_z(self, terms: dict[str, float], log_z: float) -> dict[str, float]:
        """`terms` unchanged: the model's kl and elbo are already exact."""
        return dict(terms)
