"""The quantum prior by dense linear algebra: exact for small models (n <= 12 units), for tests.

H = diag(E(z)) - Gamma * sum_i sigma^x_i over the 2^n z-basis states (see `qvae.priors.qbm` for the
model and the path integral). Gives the exact z-basis distribution <z|e^{-H}|z> / Tr e^{-H}, log Tr
e^{-H}, and the finite-Trotter (P slices) marginal and partition function that the path-integral
sampler targets exactly; and the Trotter coupling J_perp = -1/2 log tanh(Gamma / P).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from qvae.priors.rbm import RBM, all_binary_states

MAX_EXACT_QUBITS = 12


# ---------------------------------------------------------------- exact quantum mechanics (small n)
def check_gamma(gamma: float, name: str = "gamma") -> float:
    gamma = float(gamma)
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {gamma}")
    return gamma


def _diagonal_energies(rbm: RBM) -> Tensor:
    """E(z) over all 2^n states (float64, CPU), refusing systems too large for dense matrices."""
    n = rbm.num_units
    if n > MAX_EXACT_QUBITS:
        raise ValueError(f"exact quantum Boltzmann distribution needs a dense 2^{n} x 2^{n} matrix; "
                         f"only n = num_visible + num_hidden <= {MAX_EXACT_QUBITS} is supported, got {n}")
    exact = RBM(rbm.num_visible, rbm.num_hidden).double()  # not prior._double: that rounds to float32
    exact.load_state_dict({k: v.detach().to("cpu", torch.float64) for k, v in rbm.state_dict().items()})
    with torch.no_grad():
        return exact.energy(all_binary_states(n, dtype=torch.float64))


def _flip_masks(n: int) -> list[int]:
    """XOR masks of sigma^x_i on lexicographic state indices (unit 0 is the highest bit)."""
    return [1 << (n - 1 - i) for i in range(n)]


def qbm_hamiltonian(rbm: RBM, gamma: float) -> Tensor:
    """Dense H = diag(E(z)) - Gamma sum_i sigma^x_i, (2^n, 2^n) float64, lexicographic basis."""
    gamma = check_gamma(gamma)
    energies = _diagonal_energies(rbm)
    index = torch.arange(len(energies))
    hamiltonian = torch.diag(energies)
    for mask in _flip_masks(rbm.num_units):
        hamiltonian[index, index ^ mask] = -gamma
    return hamiltonian


def _eigen(rbm: RBM, gamma: float) -> tuple[Tensor, Tensor]:
    return torch.linalg.eigh(qbm_hamiltonian(rbm, gamma))


def exact_qbm_z_distribution(rbm: RBM, gamma: float) -> Tensor:
    """p(z) = <z|e^{-H}|z> / Tr e^{-H} over all 2^n states (float64, CPU, order of `all_binary_states`)."""
    eigenvalues, vectors = _eigen(rbm, gamma)
    weights = torch.exp(-(eigenvalues - eigenvalues.min()))
    diagonal = (vectors**2) @ weights
    return diagonal / diagonal.sum()


def exact_qbm_log_partition(rbm: RBM, gamma: float) -> float:
    """log Tr e^{-H} from the spectrum of the dense Hamiltonian."""
    eigenvalues, _ = _eigen(rbm, gamma)
    return torch.logsumexp(-eigenvalues, 0).item()


def exact_trotter_z_distribution(rbm: RBM, gamma: float, slices: int) -> Tensor:
    """The z-marginal of one slice of the P-slice path integral: diag((D T)^P) / Tr.

    D = e^{-diag(E)/P}, T = e^{(Gamma/P) sum_i sigma^x_i}. This is what `PIMCSampler` samples
    exactly (at any P); it tends to `exact_qbm_z_distribution` as P grows.
    """
    step, _ = _trotter_step(rbm, gamma, slices)
    diagonal = torch.linalg.matrix_power(step, slices).diagonal()
    return diagonal / diagonal.sum()


def _trotter_step(rbm: RBM, gamma: float, slices: int) -> tuple[Tensor, float]:
    """(D T with D = e^{-(diag(E) - shift)/P}, shift = min E): (D T)^P = e^{-shift} (D_unshifted T)^P."""
    gamma = check_gamma(gamma)
    if slices < 1:
        raise ValueError(f"slices must be >= 1, got {slices}")
    energies = _diagonal_energies(rbm)
    a = gamma / slices
    single = torch.tensor([[math.cosh(a), math.sinh(a)], [math.sinh(a), math.cosh(a)]], dtype=torch.float64)
    transfer = torch.ones(1, 1, dtype=torch.float64)
    for _ in range(rbm.num_units):
        transfer = torch.kron(transfer, single)
    shift = energies.min().item()
    return torch.exp(-(energies - shift) / slices)[:, None] * transfer, shift


def exact_trotter_log_partition(rbm: RBM, gamma: float, slices: int) -> float:
    """log Tr (D T)^P: the P-slice approximation of log Tr e^{-H} that `estimate_qbm_log_z` targets."""
    step, shift = _trotter_step(rbm, gamma, slices)
    return math.log(torch.linalg.matrix_power(step, slices).trace().item()) - shift


# ---------------------------------------------------------------- the path-integral mapping
def trotter_coupling(gamma: float, slices: int) -> float:
    """J_perp = -1/2 log tanh(Gamma / P) (spin convention); inf when Gamma = 0 (slices locked)."""
    a = gamma / slices
    return math.inf if a == 0.0 else -0.5 * math.log(math.tanh(a))


