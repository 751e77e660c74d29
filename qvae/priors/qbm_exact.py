"""The quantum prior by dense linear algebra: exact for small models (n <= 12 units), for tests.

H = diag(E(z)) - sum_i Gamma_i sigma^x_i over the 2^n z-basis states (see `qvae.priors.qbm` for the
model and the path integral). Gives the exact z-basis distribution <z|e^{-H}|z> / Tr e^{-H}, log Tr
e^{-H}, and the finite-Trotter (P slices) marginal and partition function that the path-integral
sampler targets exactly; and the Trotter coupling J_perp = -1/2 log tanh(Gamma / P).

Gamma everywhere is one float for every unit, or a tensor of one Gamma_i per unit (`check_gamma`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from qvae.gamma import describe, largest
from qvae.priors.rbm import RBM, all_binary_states

MAX_EXACT_QUBITS = 12
Gamma = float | Tensor  # one Gamma for every unit, or Gamma_i per unit: (n,), visible units first


# ---------------------------------------------------------------- the transverse field
def check_gamma(gamma: float | Sequence[float] | Tensor, name: str = "gamma", units: int | None = None) -> Gamma:
    """Gamma validated: a number as a float; per-unit values (a list, tuple, array or tensor) as a float64
    CPU tensor, every value finite and >= 0, `units` of them when given. Equal per-unit values stay a
    tensor: the per-unit code paths are checked against the scalar ones with it."""
    if isinstance(gamma, numbers.Real):
        gamma = float(gamma)
        if not (math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {gamma}")
        return gamma
    values = torch.as_tensor(gamma, dtype=torch.float64).detach().to("cpu")
    if values.dim() == 0:
        return check_gamma(values.item(), name)
    if values.dim() != 1 or len(values) == 0:
        raise ValueError(f"{name} must be one number or a list of one per unit, got shape {tuple(values.shape)}")
    refused = (~(torch.isfinite(values) & (values >= 0))).nonzero()
    if len(refused):
        index = int(refused[0])
        raise ValueError(f"{name} must hold finite numbers >= 0 (one per unit), got {values[index].item()} at "
                         f"unit {index}")
    if units is not None and len(values) != units:
        raise ValueError(f"{name} must hold one value per unit, {units} (num_visible + num_hidden), got {len(values)}")
    return values


def largest_gamma(gamma: Gamma) -> float:
    """max_i Gamma_i (Gamma itself for one value; a CPU tensor): the prior is quantum iff it is > 0."""
    return float(largest(gamma.tolist() if isinstance(gamma, Tensor) else gamma))


def unit_gammas(gamma: Gamma, units: int) -> list[float]:
    """Gamma_i of each of `units` units as Python floats (one value repeated for a single Gamma)."""
    if isinstance(gamma, Tensor):
        if gamma.shape != (units,):
            raise ValueError(f"gamma must hold one value per unit, {units}, got shape {tuple(gamma.shape)}")
        return gamma.tolist()
    return [float(gamma)] * units


def describe_gamma(gamma: Gamma) -> str:
    """Gamma in a message, as `qvae.gamma.describe` writes the config's: the number, or "per unit (n values
    in a..b)"."""
    return describe(gamma.tolist() if isinstance(gamma, Tensor) else gamma)


# ---------------------------------------------------------------- exact quantum mechanics (small n)


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


def qbm_hamiltonian(rbm: RBM, gamma: Gamma) -> Tensor:
    """Dense H = diag(E(z)) - sum_i Gamma_i sigma^x_i, (2^n, 2^n) float64, lexicographic basis."""
    gamma = check_gamma(gamma, units=rbm.num_units)
    energies = _diagonal_energies(rbm)
    index = torch.arange(len(energies))
    hamiltonian = torch.diag(energies)
    for mask, unit_gamma in zip(_flip_masks(rbm.num_units), unit_gammas(gamma, rbm.num_units)):
        hamiltonian[index, index ^ mask] = -unit_gamma
    return hamiltonian


def _eigen(rbm: RBM, gamma: Gamma) -> tuple[Tensor, Tensor]:
    return torch.linalg.eigh(qbm_hamiltonian(rbm, gamma))


def exact_qbm_z_distribution(rbm: RBM, gamma: Gamma) -> Tensor:
    """p(z) = <z|e^{-H}|z> / Tr e^{-H} over all 2^n states (float64, CPU, order of `all_binary_states`)."""
    eigenvalues, vectors = _eigen(rbm, gamma)
    weights = torch.exp(-(eigenvalues - eigenvalues.min()))
    diagonal = (vectors**2) @ weights
    return diagonal / diagonal.sum()


def exact_qbm_log_partition(rbm: RBM, gamma: Gamma) -> float:
    """log Tr e^{-H} from the spectrum of the dense Hamiltonian."""
    eigenvalues, _ = _eigen(rbm, gamma)
    return torch.logsumexp(-eigenvalues, 0).item()


def exact_trotter_z_distribution(rbm: RBM, gamma: Gamma, slices: int) -> Tensor:
    """The z-marginal of one slice of the P-slice path integral: diag((D T)^P) / Tr.

    D = e^{-diag(E)/P}, T = e^{sum_i (Gamma_i/P) sigma^x_i}. This is what `PIMCSampler` samples
    exactly (at any P); it tends to `exact_qbm_z_distribution` as P grows.
    """
    step, _ = _trotter_step(rbm, gamma, slices)
    diagonal = torch.linalg.matrix_power(step, slices).diagonal()
    return diagonal / diagonal.sum()


def _trotter_step(rbm: RBM, gamma: Gamma, slices: int) -> tuple[Tensor, float]:
    """(D T with D = e^{-(diag(E) - shift)/P}, shift = min E): (D T)^P = e^{-shift} (D_unshifted T)^P.

    T = the Kronecker product over units (unit 0 first) of e^{a_i sigma^x} = [[cosh, sinh], [sinh, cosh]](a_i),
    a_i = Gamma_i / P; the identity for a unit with Gamma_i = 0."""
    gamma = check_gamma(gamma, units=rbm.num_units)
    if slices < 1:
        raise ValueError(f"slices must be >= 1, got {slices}")
    energies = _diagonal_energies(rbm)
    transfer = torch.ones(1, 1, dtype=torch.float64)
    for unit_gamma in unit_gammas(gamma, rbm.num_units):
        a = unit_gamma / slices
        single = torch.tensor([[math.cosh(a), math.sinh(a)], [math.sinh(a), math.cosh(a)]], dtype=torch.float64)
        transfer = torch.kron(transfer, single)
    shift = energies.min().item()
    return torch.exp(-(energies - shift) / slices)[:, None] * transfer, shift


def exact_trotter_log_partition(rbm: RBM, gamma: Gamma, slices: int) -> float:
    """log Tr (D T)^P: the P-slice approximation of log Tr e^{-H} that `estimate_qbm_log_z` targets."""
    step, shift = _trotter_step(rbm, gamma, slices)
    return math.log(torch.linalg.matrix_power(step, slices).trace().item()) - shift


# ---------------------------------------------------------------- the path-integral mapping
def trotter_coupling(gamma: Gamma, slices: int) -> float | Tensor:
    """J_perp = -1/2 log tanh(Gamma / P) (spin convention); inf when Gamma = 0 (slices locked).

    Per-unit Gamma gives per-unit J (a tensor on Gamma's device), inf exactly where Gamma_i = 0."""
    if isinstance(gamma, Tensor):
        return -0.5 * torch.log(torch.tanh(gamma / slices))
    a = gamma / slices
    return math.inf if a == 0.0 else -0.5 * math.log(math.tanh(a))


