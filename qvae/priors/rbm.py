"""The RBM prior over the binary latent vector z = (z_v, z_h).

    E(z) = -b^T z - z_v^T W z_h,        p(z) = exp(-E(z)) / Z

Besides energies and the two conditionals this module holds what makes the prior's numbers
honest: the free energy with one layer summed out, log Z exactly (small models, by enumerating
the smaller layer) or by annealed importance sampling, and the conversion to and from kaiwu's
Ising matrix convention (an auxiliary spin carries the fields; see `to_ising`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_EXACT_STATES = 2**22


def ais_log_mean(log_weights: Tensor) -> tuple[Tensor, Tensor]:
    """log mean_j w_j over the last dimension of AIS log weights, and its delta-method standard error
    std(w) / mean(w) / sqrt(chains): the estimate and error of every AIS in the project."""
    chains = log_weights.shape[-1]
    log_mean_w = torch.logsumexp(log_weights, -1) - math.log(chains)
    ratios = torch.exp(log_weights - log_weights.max(-1, keepdim=True).values)
    return log_mean_w, ratios.std(-1) / ratios.mean(-1) / math.sqrt(chains)


class RBM(nn.Module):
    """A restricted Boltzmann machine with `num_visible` + `num_hidden` binary units."""

    def __init__(self, num_visible: int, num_hidden: int, init_std: float = 0.01,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if num_visible < 1 or num_hidden < 1:
            raise ValueError(f"num_visible and num_hidden must be >= 1, got {num_visible}, {num_hidden}")
        self.num_visible = num_visible
        self.num_hidden = num_hidden
        self.weight = nn.Parameter(torch.randn(num_visible, num_hidden, generator=generator) * init_std)
        self.visible_bias = nn.Parameter(torch.zeros(num_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(num_hidden))

    @property
    def num_units(self) -> int:
        return self.num_visible + self.num_hidden

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z[..., : self.num_visible], z[..., self.num_visible:]

    # ---------------------------------------------------------------- energies
    def energy(self, z: Tensor) -> Tensor:
        """E(z) per row. Bilinear, so for factorial probabilities it is E_q[E(z)] exactly."""
        v, h = self.split(z)
        return -(v @ self.visible_bias) - (h @ self.hidden_bias) - ((v @ self.weight) * h).sum(-1)

    def hidden_logits(self, v: Tensor, beta: float = 1.0) -> Tensor:
        """Logits of p(h=1 | v) at inverse temperature beta."""
        return beta * (v @ self.weight + self.hidden_bias)

    def visible_logits(self, h: Tensor, beta: float = 1.0) -> Tensor:
        return beta * (h @ self.weight.t() + self.visible_bias)

    def free_energy_visible(self, v: Tensor) -> Tensor:
        """F(v) = -log sum_h exp(-E(v, h))."""
        return -(v @ self.visible_bias) - F.softplus(v @ self.weight + self.hidden_bias).sum(-1)

    def free_energy_hidden(self, h: Tensor) -> Tensor:
        """F(h) = -log sum_v exp(-E(v, h))."""
        return -(h @ self.hidden_bias) - F.softplus(h @ self.weight.t() + self.visible_bias).sum(-1)

    # ---------------------------------------------------------------- log partition function
    @torch.no_grad()
    def log_partition_exact(self) -> float:
        """log Z by enumerating the smaller layer and summing the other out analytically."""
        small = min(self.num_visible, self.num_hidden)
        if 2**small > MAX_EXACT_STATES:
            raise ValueError(f"exact log Z needs 2^{small} states; use log_partition_ais instead")
        free_energy = self.free_energy_visible if self.num_visible <= self.num_hidden else self.free_energy_hidden
        states = all_binary_states(small, dtype=self.weight.dtype, device=self.weight.device)
        terms = torch.cat([-free_energy(chunk) for chunk in states.split(65536)])
        return torch.logsumexp(terms.double(), 0).item()

    @torch.no_grad()
    def log_partition_ais(self, num_chains: int = 256, num_betas: int = 1000,
                          generator: torch.Generator | None = None) -> tuple[float, float]:
        """Annealed importance sampling estimate of log Z and its standard error.

        Anneals the coupling W from 0 (a factorial model with the same biases, whose log Z is
        closed-form) to 1 with block Gibbs transitions, hidden units summed out analytically
        (Salakhutdinov & Murray 2008). The estimate of Z is unbiased; log Z is a stochastic
        lower bound in expectation. The error is the delta-method standard error of log mean w.
        """
        if num_chains < 2 or num_betas < 2:
            raise ValueError("num_chains and num_betas must be >= 2")
        w, bv, bh = self.weight, self.visible_bias, self.hidden_bias
        betas = torch.linspace(0.0, 1.0, num_betas, device=w.device, dtype=w.dtype)
        log_z0 = (F.softplus(bv).sum() + F.softplus(bh).sum()).double()

        def log_unnorm(v: Tensor, beta: Tensor) -> Tensor:
            return v @ bv + F.softplus(beta * (v @ w) + bh).sum(-1)

        v = _bernoulli(torch.sigmoid(bv).expand(num_chains, -1), generator)
        log_weights = torch.zeros(num_chains, dtype=torch.float64, device=w.device)
        for prev, beta in zip(betas[:-1], betas[1:]):
            log_weights += (log_unnorm(v, beta) - log_unnorm(v, prev)).double()
            h = _bernoulli(torch.sigmoid(beta * (v @ w) + bh), generator)
            v = _bernoulli(torch.sigmoid(beta * (h @ w.t()) + bv), generator)
        log_mean_w, stderr = ais_log_mean(log_weights)
        return (log_z0 + log_mean_w).item(), stderr.item()

    # ---------------------------------------------------------------- kaiwu's Ising convention
    @torch.no_grad()
    def to_ising(self) -> np.ndarray:
        """The (n+1)x(n+1) symmetric matrix J with s^T J s = -E(z) + const.

        kaiwu solvers maximise s^T J s over s in {-1,+1}^(n+1); the last spin is auxiliary and
        z = (s[:n] * s[n] + 1) / 2. Couplings W/8 in the off-diagonal blocks, fields b/4 plus
        the coupling row sums in the last row and column (kaiwu-pytorch-plugin's convention).
        """
        nv, n = self.num_visible, self.num_units
        w = self.weight.detach().double().cpu().numpy()
        b = torch.cat([self.visible_bias, self.hidden_bias]).detach().double().cpu().numpy()
        ising = np.zeros((n + 1, n + 1))
        ising[:nv, nv:n] = w / 8.0
        ising[nv:n, :nv] = w.T / 8.0
        field = b / 4.0 + ising[:n, :n].sum(axis=0)
        ising[:n, n] = field
        ising[n, :n] = field
        return ising

    @classmethod
    def from_ising(cls, ising: np.ndarray, num_visible: int) -> "RBM":
        """Inverse of `to_ising` for a matrix with RBM structure (empty within-layer blocks)."""
        ising = np.asarray(ising, dtype=np.float64)
        n = ising.shape[0] - 1
        if ising.shape != (n + 1, n + 1) or not np.allclose(ising, ising.T):
            raise ValueError(f"ising matrix must be square and symmetric, got shape {ising.shape}")
        if not 1 <= num_visible < n:
            raise ValueError(f"num_visible must be in 1..{n - 1}, got {num_visible}")
        couplings = ising[:n, :n]
        if np.any(couplings[:num_visible, :num_visible]) or np.any(couplings[num_visible:, num_visible:]):
            raise ValueError("ising matrix has couplings inside a layer: not an RBM with this split")
        rbm = cls(num_visible, n - num_visible)
        with torch.no_grad():
            rbm.weight.copy_(torch.from_numpy(8.0 * couplings[:num_visible, num_visible:]))
            bias = 4.0 * (ising[:n, n] - couplings.sum(axis=0))
            rbm.visible_bias.copy_(torch.from_numpy(bias[:num_visible]))
            rbm.hidden_bias.copy_(torch.from_numpy(bias[num_visible:]))
        return rbm


def spins_to_binary(spins: np.ndarray | Tensor) -> Tensor:
    """Map solver spins (k, n+1) in {-1,+1}, last one auxiliary, to binary states (k, n)."""
    s = torch.as_tensor(np.asarray(spins), dtype=torch.float32)
    s = s.reshape(-1, s.shape[-1])
    return (s[:, :-1] * s[:, -1:] + 1.0) / 2.0


def binary_to_spins(z: Tensor) -> np.ndarray:
    """Binary states (k, n) to spins (k, n+1) with the auxiliary spin fixed to +1."""
    s = 2.0 * z.detach().double().cpu().numpy() - 1.0
    return np.concatenate([s, np.ones((s.shape[0], 1))], axis=1)


def ising_energy(spins: np.ndarray, ising: np.ndarray) -> np.ndarray:
    """kaiwu's energy -s^T J s for each row of `spins`."""
    spins = np.atleast_2d(spins)
    return -np.einsum("ki,ij,kj->k", spins, ising, spins)


def all_binary_states(n: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """Every state of n binary units, (2^n, n), in lexicographic order."""
    if 2**n > MAX_EXACT_STATES:
        raise ValueError(f"2^{n} states are too many to enumerate")
    codes = torch.arange(2**n, device=device)
    shifts = torch.arange(n - 1, -1, -1, device=device)
    return ((codes[:, None] >> shifts) & 1).to(dtype)


def exact_distribution(rbm: RBM) -> Tensor:
    """p(z) over all 2^(nv+nh) joint states (lexicographic, visible first): brute force."""
    with torch.no_grad():
        states = all_binary_states(rbm.num_units, dtype=torch.float64)
        energies = _double(rbm).energy(states)
        return torch.softmax(-energies, 0)


def state_index(z: Tensor) -> Tensor:
    """Lexicographic index of each binary row (inverse of `all_binary_states`)."""
    n = z.shape[-1]
    weights = 2 ** torch.arange(n - 1, -1, -1, device=z.device)
    return (z.round().long() * weights).sum(-1)


def _double(rbm: RBM) -> RBM:
    """A float64 CPU copy (converted before loading, so double parameters keep every digit)."""
    copy = RBM(rbm.num_visible, rbm.num_hidden).double()
    copy.load_state_dict({k: v.detach().cpu().double() for k, v in rbm.state_dict().items()})
    return copy


def _bernoulli(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(probs.shape, generator=generator, device=probs.device, dtype=probs.dtype)
    return (u < probs).to(probs.dtype)


__all__ = [
    "RBM", "spins_to_binary", "binary_to_spins", "ising_energy", "all_binary_states",
    "exact_distribution", "state_index", "MAX_EXACT_STATES",
]
