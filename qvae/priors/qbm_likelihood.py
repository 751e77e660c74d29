"""log p_Γ(z) of the quantum Boltzmann prior itself, not a bound: the path integral clamped at z.

The prior is p(z) = <z|e^{-H}|z> / Tr e^{-H}. Its Trotter approximation with P slices is

    p_P(z) = <z|(D T)^P|z> / Tr (D T)^P,      D = e^{-diag(E)/P},  T = e^{(Γ/P) sum_i σ^x_i},

and <z|(D T)^P|z> is the path integral of `qbm.py` over the periodic paths whose slice 0 is z:
the same classical system with one slice clamped. Its log is estimated like log Tr (D T)^P in
`estimate_qbm_log_z`: annealed importance sampling of the visible paths (slice 0 fixed to z's
visible part) with the hidden paths summed out exactly (each hidden unit a periodic 1D chain whose
slice 0 is fixed to z's hidden value: a 2x2 transfer-matrix product), annealing E from 0 (free
chains: log Z_0 in closed form) to E with exact world-line Gibbs transitions, the visible paths
given the hidden ones still independent clamped chains. Batched over many z (chains x z rows).

Errors, all stated by `estimate_log_prob`:
- Trotter bias of p_P against p: O((Γ / P)^2); its size and sign on exactly solvable models are in
  docs/results.md (`benchmarks/qbm_likelihood.py` measures them against dense quantum mechanics).
- Sampling error: the delta-method standard error of log mean w per z (the AIS weights' spread).
- log of an unbiased estimate of <z|(D T)^P|z> is biased low in expectation (Jensen): the
  estimate of log p_P(z) is a stochastic lower bound, by about half the squared relative error.
At Γ = 0 there is nothing to estimate: log p(z) = -E(z) - log Z. Per-unit Γ_l works unit by unit
(`qbm.py`); a unit with Γ_l = 0 has a rigid path, fixed to its value in z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from qvae.priors.qbm import Coupling, check_slices, free_chain_log_z, sample_ising_paths, unit_couplings
from qvae.priors.qbm_exact import Gamma, check_gamma, largest_gamma
from qvae.priors.rbm import RBM, ais_log_mean

CLAMP_FIELD = 1e4  # a slice-0 field that fixes its value in the exact chain sampler (float64 paths)


@dataclass(frozen=True)
class LogProb:
    """log p_P(z) per z with its parts: the clamped path integral's log and standard error, log Z."""

    log_prob: Tensor  # (N,) log <z|(D T)^P|z> - log Tr (D T)^P
    log_diagonal: Tensor  # (N,) log <z|(D T)^P|z>
    stderr: Tensor  # (N,) standard error of log_diagonal (sampling only)
    log_z: float  # log Tr (D T)^P used
    slices: int


def clamped_chain_log_partition(fields: Tensor, coupling: Coupling, first: Tensor) -> Tensor:
    """log sum over x_1..x_{P-1} of exp(sum_k f_k x_k - 2J #kinks) of periodic binary chains whose
    x_0 is `first` (0/1): fields (rows, P, m), first (rows, m) -> (rows, m). Per-unit J (m,) may be
    inf (a rigid unit: its one constant path)."""
    log_t = (-2.0 * coupling).to(fields) if isinstance(coupling, Tensor) else -2.0 * coupling
    f = fields.transpose(0, 1)  # (P, rows, m)
    one = first.to(torch.bool)
    minus_inf = torch.full_like(f[0], -math.inf)
    # m0, m1: log weight of the paths so far that end in 0 / 1
    m1 = torch.where(one, f[0], minus_inf)
    m0 = torch.where(one, minus_inf, torch.zeros_like(f[0]))
    for k in range(1, f.shape[0]):
        m0, m1 = torch.logaddexp(m0, m1 + log_t), f[k] + torch.logaddexp(m1, m0 + log_t)
    return torch.where(one, torch.logaddexp(m1, m0 + log_t), torch.logaddexp(m0, m1 + log_t))


def sample_clamped_paths(fields: Tensor, coupling: Coupling, first: Tensor,
                         generator: torch.Generator | None) -> Tensor:
    """Exact samples of the chains of `clamped_chain_log_partition` (slice 0 = `first`); (rows, P, m)."""
    pinned = fields.clone()
    pinned[:, 0] = torch.where(first.to(torch.bool), CLAMP_FIELD, -CLAMP_FIELD)
    paths = sample_ising_paths(pinned, coupling, generator)
    paths[:, 0] = first.to(paths.dtype)  # exact already; written to leave no doubt
    return paths


@torch.no_grad()
def estimate_log_diagonal(prior: RBM, z: Tensor, gamma: Gamma, slices: int, chains: int = 64, betas: int = 200,
                          generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """AIS estimate of log <z|(D T)^P|z> for each row of z (N, n) in {0,1}, and its standard error.

    Runs in float64 on z's device (the clamp field and the weights need its precision)."""
    gamma = check_gamma(gamma, units=prior.num_units)
    if largest_gamma(gamma) == 0:
        raise ValueError("gamma must be > 0 (for one unit at least): at gamma = 0, log p(z) = -E(z) - log Z exactly "
                         "(no path integral)")
    check_slices(slices, largest_gamma(gamma), "worldline")
    if chains < 2 or betas < 2:
        raise ValueError(f"chains and betas must be >= 2, got {chains}, {betas}")
    nv, n = prior.num_visible, prior.num_units
    if z.dim() != 2 or z.shape[1] != n:
        raise ValueError(f"z must have shape (N, {n}), got {tuple(z.shape)}")
    device = z.device
    w = prior.weight.detach().to(device, torch.float64)
    bv, bh = (b.detach().to(device, torch.float64) for b in (prior.visible_bias, prior.hidden_bias))
    rows = len(z) * chains
    zz = z.to(torch.float64).repeat_interleave(chains, 0)  # (rows, n): chains consecutive per z
    first_v, first_h = zz[:, :nv], zz[:, nv:]
    coupling_v, coupling_h = unit_couplings(prior, gamma, slices, zz)
    # beta = 0: n free chains with slice 0 fixed, each sum_x t^#kinks = ((1+t)^P + (1-t)^P) / 2
    log_z0 = free_chain_log_z(gamma, slices, n, clamped=True)

    def log_unnorm(v: Tensor, beta: float) -> Tensor:  # visible kinks do not depend on beta: left out
        visible = (v @ bv).sum(-1) * (beta / slices)
        hidden_fields = (bh + v @ w) * (beta / slices)
        return visible + clamped_chain_log_partition(hidden_fields, coupling_h, first_h).sum(-1)

    zeros = torch.zeros(rows, slices, nv, device=device, dtype=torch.float64)
    v = sample_clamped_paths(zeros, coupling_v, first_v, generator)  # exact samples of beta = 0
    log_weights = torch.zeros(rows, dtype=torch.float64, device=device)
    schedule = torch.linspace(0.0, 1.0, betas).tolist()
    for prev, beta in zip(schedule[:-1], schedule[1:]):
        log_weights += log_unnorm(v, beta) - log_unnorm(v, prev)
        h = sample_clamped_paths((bh + v @ w) * (beta / slices), coupling_h, first_h, generator)
        v = sample_clamped_paths((bv + h @ w.t()) * (beta / slices), coupling_v, first_v, generator)
    log_mean_w, stderr = ais_log_mean(log_weights.reshape(len(z), chains))
    return log_z0 + log_mean_w, stderr


@torch.no_grad()
def estimate_log_prob(prior: RBM, z: Tensor, gamma: Gamma, slices: int, log_z: float, chains: int = 64,
                      betas: int = 200, generator: torch.Generator | None = None) -> LogProb:
    """log p_P(z) = log <z|(D T)^P|z> - log Tr (D T)^P for each row of z, given `log_z` (an estimate of
    log Tr (D T)^P, e.g. `estimate_qbm_log_z`, or exact for small models)."""
    log_diagonal, stderr = estimate_log_diagonal(prior, z, gamma, slices, chains, betas, generator)
    return LogProb(log_diagonal - log_z, log_diagonal, stderr, float(log_z), slices)
