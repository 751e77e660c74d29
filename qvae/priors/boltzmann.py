"""The Boltzmann priors as objects: the classical RBM and the transverse-field QBM.

Both wrap the same `RBM` module (the trained parameters b and W, `model.prior` in the QVAE) and
answer everything that depends on which prior it is: the negative-phase sampler, the sweeps that
draw z ~ p(z) for generation (also per seed, from numpy streams), log Z and its method name, and
whether the ELBO the model reports is exact (RBM) or a bound (QBM, the Q-ELBO; see qvae/models/qvae.py).
The objects hold no tensors of their own, so the model's state dict and checkpoints are the RBM's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from qvae.config import Config
from qvae.priors.kl_uniform import (
    EXACT,
    SAMPLED,
    qbm_kl_uniform_exact,
    rbm_kl_uniform_exact,
    rbm_kl_uniform_sampled,
)
from qvae.priors.log_z import (
    qbm_ais_method,
    qbm_log_z,
    qbm_log_z_method,
    rbm_log_z,
    rbm_log_z_method,
    resolve_log_z_method,
)
from qvae.priors.qbm import PIMCSampler, pimc_sweep, seeded_qbm_states, uniform_paths
from qvae.priors.qbm_exact import check_gamma, describe_gamma
from qvae.priors.rbm import RBM
from qvae.priors.samplers import AnnealingSampler, PCDSampler, Sampler, gibbs_sweeps, random_visible


class BoltzmannPrior(ABC):
    """What the RBM and the QBM share: the wrapped `RBM`, the config, and log Z completing the KL."""

    is_bound: ClassVar[bool]  # True: kl_unnormalized + log Z bounds the KL from above (the Q-ELBO)
    kl_name: ClassVar[str]
    elbo_name: ClassVar[str]
    log_z_symbol: ClassVar[str]  # how reports write this prior's log Z
    needs_log_z: ClassVar[bool] = True  # the model's KL is unnormalised until log Z is added

    def __init__(self, rbm: RBM, config: Config) -> None:
        self.rbm = rbm
        self.config = config

    def complete_with_log_z(self, terms: dict[str, float], log_z: float) -> dict[str, float]:
        """`terms` plus the KL (`kl_name`) and ELBO (`elbo_name`) that `log_z` completes.

        kl = kl_unnormalized + log Z; elbo = -cost - kl. Exact for the RBM; for the QBM an upper
        bound on the KL and the Q-ELBO, named so that nobody mistakes them for the exact quantities.
        """
        kl = terms["kl_unnormalized"] + log_z
        completed = {**terms, self.kl_name: kl, self.elbo_name: -terms["cost"] - kl}
        if "iw_bound_unnormalized" in terms:  # training on the importance-weighted bound (a bound either way)
            completed["iw_bound"] = terms["iw_bound_unnormalized"] - log_z
        return completed

    @abstractmethod
    def make_sampler(self) -> Sampler:
        """A fresh negative-phase sampler of this prior (its chains and random state are the caller's)."""

    @abstractmethod
    def sample(self, n: int, sweeps: int, generator: torch.Generator | None = None) -> Tensor:
        """n states (n, nv + nh) after `sweeps` sweeps from a random start (generation)."""

    @abstractmethod
    def sample_from_streams(self, streams: Sequence[np.random.Generator], sweeps: int) -> Tensor:
        """One state per numpy stream, every random number of row i drawn from stream i."""

    @abstractmethod
    def log_z_method(self) -> str:
        """exact, ais or ais_trotter_P<n>: how `log_z(method="auto")` gets log Z (the run param)."""

    @abstractmethod
    def log_z(self, chains: int, betas: int, generator: torch.Generator | None,
              method: str = "auto") -> tuple[float, float, str]:
        """(log Z, its standard error, the method used); `method` auto | exact | ais (see log_z.py)."""

    @abstractmethod
    def kl_uniform_method(self) -> str:
        """How `kl_to_uniform` gets its figure (kl_uniform.py): exact, log_z_plus_chain_energy or none."""

    @abstractmethod
    def kl_to_uniform(self, log_z: float, generator: torch.Generator | None = None) -> float | None:
        """KL(p ‖ uniform) in nats (kl_uniform.py), given this prior's `log_z`; None where not tractable."""


class RBMPrior(BoltzmannPrior):
    """p(z) = e^{-E(z)} / Z: the classical prior (Γ = 0), whatever sampler trains it."""

    is_bound = False
    kl_name, elbo_name = "kl", "elbo"
    log_z_symbol = "log Z"

    @property
    def gamma(self) -> float:
        return 0.0

    def make_sampler(self) -> Sampler:
        """The negative-phase sampler the config asks for (`sampler`, `sampler_chains`, ...)."""
        return classical_sampler(self.config)

    @torch.no_grad()
    def sample(self, n: int, sweeps: int, generator: torch.Generator | None = None) -> Tensor:
        """n states (n, nv + nh): `sweeps` block-Gibbs sweeps from a uniformly random visible layer."""
        v, h = gibbs_sweeps(self.rbm, random_visible(self.rbm, n, generator), sweeps, generator)
        return torch.cat([v, h], dim=1)

    @torch.no_grad()
    def sample_from_streams(self, streams: Sequence[np.random.Generator], sweeps: int) -> Tensor:
        """One state per numpy stream, row i drawing every uniform from stream i (so a row depends
        only on its stream): a random visible layer, `sweeps` block-Gibbs sweeps, then h ~ p(h|v)."""
        p = self.rbm
        nv, nh = p.num_visible, p.num_hidden
        per_row = nv + sweeps * (nh + nv) + nh
        rows = [stream.random(per_row, dtype=np.float32) for stream in streams]
        u = torch.from_numpy(np.stack(rows)).to(device=p.weight.device, dtype=p.weight.dtype)
        v = (u[:, :nv] < 0.5).to(u.dtype)
        offset = nv
        for _ in range(sweeps):
            h = (u[:, offset:offset + nh] < torch.sigmoid(p.hidden_logits(v))).to(u.dtype)
            v = (u[:, offset + nh:offset + nh + nv] < torch.sigmoid(p.visible_logits(h))).to(u.dtype)
            offset += nh + nv
        h = (u[:, offset:offset + nh] < torch.sigmoid(p.hidden_logits(v))).to(u.dtype)
        return torch.cat([v, h], dim=1)

    def log_z_method(self) -> str:
        return rbm_log_z_method(self.rbm.num_visible, self.rbm.num_hidden)

    def log_z(self, chains: int, betas: int, generator: torch.Generator | None,
              method: str = "auto") -> tuple[float, float, str]:
        what = f"{self.rbm.num_visible} + {self.rbm.num_hidden} units"
        how = resolve_log_z_method(method, self.log_z_method(), "ais", what)
        return (*rbm_log_z(self.rbm, how, chains, betas, generator), how)

    def kl_uniform_method(self) -> str:
        return EXACT if self.log_z_method() == "exact" else SAMPLED

    def kl_to_uniform(self, log_z: float, generator: torch.Generator | None = None) -> float | None:
        """Exact where log Z is; else `log_z` and the mean energy of sampler_chains fresh Gibbs chains
        after generate_sweeps sweeps (the training sampler's chains are not touched)."""
        if self.kl_uniform_method() == EXACT:
            return rbm_kl_uniform_exact(self.rbm)
        samples = self.sample(self.config.sampler_chains, self.config.generate_sweeps, generator)
        return rbm_kl_uniform_sampled(self.rbm, log_z, samples)


class QBMPrior(BoltzmannPrior):
    """p(z) = <z|e^{-H}|z> / Tr e^{-H}, H = diag E(z) - Γ sum_i σ^x_i (qvae/priors/qbm.py).

    Γ = `gamma` is fixed (one value, or a float64 tensor of Γ_l per unit: config.gamma, resolved by
    `check_gamma`), P = `slices` Trotter slices for the path-integral sampler and AIS. The
    model's KL with log Tr e^{-H} is an upper bound (`kl_upper_bound`), its ELBO the Q-ELBO and the
    importance-weighted NLL an upper bound; at Γ = 0 the bounds are tight and the prior is the RBM.
    """

    is_bound = True
    kl_name, elbo_name = "kl_upper_bound", "q_elbo"
    log_z_symbol = "log Z_gamma"

    def __init__(self, rbm: RBM, config: Config) -> None:
        super().__init__(rbm, config)
        self.gamma = check_gamma(config.gamma, units=rbm.num_units)
        self.slices = config.trotter_slices

    def make_sampler(self) -> Sampler:
        """Persistent world-line path-integral Monte Carlo at this Γ and P."""
        c = self.config
        return PIMCSampler(c.sampler_chains, self.slices, c.sampler_sweeps, self.gamma, seed=c.seed)

    @torch.no_grad()
    def sample(self, n: int, sweeps: int, generator: torch.Generator | None = None) -> Tensor:
        """n z-basis states: `sweeps` world-line sweeps from kink-free random paths, slice 0 of each."""
        v, h = uniform_paths(self.rbm, n, self.slices, generator)
        for _ in range(sweeps):
            v, h = pimc_sweep(self.rbm, v, h, self.gamma, generator)
        return torch.cat([v[:, 0], h[:, 0]], dim=1)

    @torch.no_grad()
    def sample_from_streams(self, streams: Sequence[np.random.Generator], sweeps: int) -> Tensor:
        """One z-basis state per numpy stream (`qbm.seeded_qbm_states`): a row depends only on its stream."""
        return seeded_qbm_states(self.rbm, streams, self.gamma, self.slices, sweeps)

    def log_z_method(self) -> str:
        return qbm_log_z_method(self.rbm.num_units, self.slices)

    def log_z(self, chains: int, betas: int, generator: torch.Generator | None,
              method: str = "auto") -> tuple[float, float, str]:
        what = f"{self.rbm.num_visible} + {self.rbm.num_hidden} units, gamma {describe_gamma(self.gamma)}"
        how = resolve_log_z_method(method, self.log_z_method(), qbm_ais_method(self.slices), what)
        return (*qbm_log_z(self.rbm, self.gamma, self.slices, how, chains, betas, generator), how)

    def kl_uniform_method(self) -> str:
        return EXACT if self.log_z_method() == "exact" else "none"

    def kl_to_uniform(self, log_z: float, generator: torch.Generator | None = None) -> float | None:
        """Exact from the dense spectrum for small priors; None beyond (no tractable z-marginal entropy)."""
        return qbm_kl_uniform_exact(self.rbm, self.gamma) if self.kl_uniform_method() == EXACT else None


def classical_sampler(config: Config) -> Sampler:
    """The negative-phase sampler of the classical prior: PCD, simulated annealing, a kaiwu solver,
    or PIMC at Γ = 0 (which targets the RBM exactly)."""
    if config.sampler == "pcd":
        return PCDSampler(config.sampler_chains, config.sampler_sweeps, seed=config.seed)
    if config.sampler == "sa":
        return AnnealingSampler(config.sampler_chains, config.sampler_sweeps, config.sa_initial_temperature,
                                config.sa_final_temperature, seed=config.seed)
    if config.sampler == "kaiwu":  # imported here: kaiwu's own import is slow and only this sampler needs it
        from qvae.priors.kaiwu import IsingSolverSampler, load_kaiwu_solver

        return IsingSolverSampler(load_kaiwu_solver(config.kaiwu_solver), seed=config.seed)
    if config.sampler == "pimc":
        return PIMCSampler(config.sampler_chains, config.trotter_slices, config.sampler_sweeps, 0.0,
                           seed=config.seed)
    raise ValueError(f"sampler must be one of pcd, sa, kaiwu, pimc; got {config.sampler!r}")
