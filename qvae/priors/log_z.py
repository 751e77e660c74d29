"""log Z of the Boltzmann priors: which estimator a prior's size allows, and the estimators themselves.

The KL against a Boltzmann prior needs log Z (see qvae/models/qvae.py). Exact where the state
space is small enough to sum: the RBM's smaller layer enumerated, the other summed out (up to
2^16 states), the QBM's dense Hamiltonian diagonalised (up to `MAX_EXACT_QUBITS` units). Otherwise
annealed importance sampling: of the RBM, or of the QBM's P-slice path integral, whose Trotter
error O((Γ / P)^2) is not part of the reported standard error. The method names (exact, ais,
ais_trotter_P<n>) are the `log_z_method` run param.
"""

from __future__ import annotations

import torch

from qvae.priors.qbm import estimate_qbm_log_z
from qvae.priors.qbm_exact import MAX_EXACT_QUBITS, Gamma, exact_qbm_log_partition
from qvae.priors.rbm import RBM

EXACT_LOG_Z_MAX_STATES = 2**16  # enumerate the smaller layer up to this many states, else AIS
LOG_Z_METHODS = ("auto", "exact", "ais")  # what a caller may ask for; auto: exact where the rule allows


def rbm_log_z_method(num_visible: int, num_hidden: int) -> str:
    """exact when the smaller layer has at most 2^16 states, else ais."""
    return "exact" if 2 ** min(num_visible, num_hidden) <= EXACT_LOG_Z_MAX_STATES else "ais"


def qbm_log_z_method(num_units: int, slices: int) -> str:
    """exact from the dense Hamiltonian up to `MAX_EXACT_QUBITS` units, else ais_trotter_P<slices>."""
    return "exact" if num_units <= MAX_EXACT_QUBITS else qbm_ais_method(slices)


def qbm_ais_method(slices: int) -> str:
    """The name of path-integral AIS with P = `slices`: its Trotter error depends on P."""
    return f"ais_trotter_P{slices}"


def check_log_z_method(method: str) -> str:
    if method not in LOG_Z_METHODS:
        raise ValueError(f"method must be auto, exact or ais, got {method!r}")
    return method


def resolve_log_z_method(requested: str, rule: str, ais_name: str, what: str) -> str:
    """The method a request for `requested` (auto | exact | ais) runs, given the size rule's choice `rule`.

    auto follows the rule; ais runs AIS even where enumeration is possible; exact refuses (naming
    `what`) where the rule says the state space is too large.
    """
    check_log_z_method(requested)
    if requested == "auto" or (requested == "exact") == (rule == "exact"):
        return rule
    if requested == "exact":
        raise ValueError(f"exact log Z is out of reach for this prior ({what}); use method=auto or ais")
    return ais_name


@torch.no_grad()
def rbm_log_z(rbm: RBM, method: str, chains: int, betas: int,
              generator: torch.Generator | None) -> tuple[float, float]:
    """(log Z, standard error) of the RBM: enumeration for method exact (error 0), else AIS."""
    if method == "exact":
        return rbm.log_partition_exact(), 0.0
    return rbm.log_partition_ais(chains, betas, generator)


@torch.no_grad()
def qbm_log_z(rbm: RBM, gamma: Gamma, slices: int, method: str, chains: int, betas: int,
              generator: torch.Generator | None) -> tuple[float, float]:
    """(log Tr e^{-H}, standard error): the dense spectrum for method exact, else path-integral AIS."""
    if method == "exact":
        return exact_qbm_log_partition(rbm, gamma), 0.0
    return estimate_qbm_log_z(rbm, gamma, slices, chains, betas, generator)
