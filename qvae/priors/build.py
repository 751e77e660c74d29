"""The prior a config asks for: `make_prior(config, rbm)`, and what every prior answers (`LatentPrior`).

The one place that reads `prior` and `gamma` to choose: prior=gaussian is N(0, I); a Boltzmann
prior with gamma = 0 is the RBM (whichever sampler trains it, PIMC included), with gamma > 0 (for one
latent unit at least, when gamma is given per unit) the QBM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from qvae.config import Config
from qvae.gamma import largest
from qvae.priors.boltzmann import QBMPrior, RBMPrior
from qvae.priors.gaussian import GaussianPrior
from qvae.priors.rbm import RBM
from qvae.priors.samplers import Sampler


class LatentPrior(Protocol):
    """What the model, the training loop and the metrics ask a prior."""

    is_bound: bool  # the reported KL / ELBO / NLL are bounds (the QBM), not estimates
    needs_log_z: bool  # the model's KL is unnormalised until `complete_with_log_z`
    kl_name: str  # kl | kl_upper_bound
    elbo_name: str  # elbo | q_elbo
    log_z_symbol: str  # log Z | log Z_gamma, for reports

    def make_sampler(self) -> Sampler | None: ...

    def sample(self, n: int, sweeps: int, generator: torch.Generator | None = None) -> Tensor: ...

    def sample_from_streams(self, streams: Sequence[np.random.Generator], sweeps: int) -> Tensor: ...

    def log_z_method(self) -> str: ...

    def log_z(self, chains: int, betas: int, generator: torch.Generator | None,
              method: str = "auto") -> tuple[float, float, str]: ...

    def complete_with_log_z(self, terms: dict[str, float], log_z: float) -> dict[str, float]: ...

    def kl_uniform_method(self) -> str: ...

    def kl_to_uniform(self, log_z: float, generator: torch.Generator | None = None) -> float | None: ...


def make_prior(config: Config, rbm: RBM | None = None) -> RBMPrior | QBMPrior | GaussianPrior:
    """The prior object of `config`; a Boltzmann prior wraps `rbm` (its parameters), the Gaussian needs none."""
    if config.prior == "gaussian":
        return GaussianPrior(config.latent_dim)
    if rbm is None:
        raise ValueError(f"prior={config.prior} wraps an RBM: pass the model's RBM")
    return QBMPrior(rbm, config) if largest(config.gamma) > 0 else RBMPrior(rbm, config)


def log_z_method(config: Config) -> str:
    """The run param `log_z_method` before any model exists: none, exact, ais or ais_trotter_P<n>."""
    return make_prior(config, _sized_rbm(config)).log_z_method()


def kl_uniform_method(config: Config) -> str:
    """The run param `prior_kl_uniform_method`: how the per-epoch prior_kl_uniform is obtained."""
    return make_prior(config, _sized_rbm(config)).kl_uniform_method()


def make_sampler(config: Config) -> Sampler | None:
    """A fresh negative-phase sampler of the prior `config` asks for (None for the Gaussian)."""
    return make_prior(config, _sized_rbm(config)).make_sampler()


def _sized_rbm(config: Config) -> RBM | None:
    """An RBM of the config's sizes whose values nobody reads (drawn from its own generator, so the
    global random stream is untouched); None for the Gaussian prior."""
    if config.prior == "gaussian":
        return None
    return RBM(config.num_visible, config.num_hidden, generator=torch.Generator())
