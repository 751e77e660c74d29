"""How far a Boltzmann prior is from uniform: KL(p ‖ uniform) = n log 2 − H(p), in nats.

A prior that never learns (the seed's kl_beta = 1e-6 against weight_decay = 0.01 holds |W| near
5e-5) has this near 0: the model is then an autoencoder with a Bernoulli(1/2) prior, whatever its
log Z says. For p(z) = e^{-E(z)} / Z the entropy is H(p) = log Z + E_p[E(z)], so

    prior_kl_uniform = n log 2 − log Z − E_p[E(z)].

`exact` enumerates the smaller RBM layer (the same rule as exact log Z): p of each of its states
and, the other layer being factorial given it, the mean energy in closed form. Otherwise the mean
energy comes from fresh equilibrium chains (`sampled`: AIS log Z and the chains' mean energy, both
estimates, so the figure is too). For the QBM only the exact spectrum gives the z-marginal's
entropy; beyond it no figure is reported.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor

from qvae.priors.qbm_exact import Gamma, exact_qbm_z_distribution
from qvae.priors.rbm import RBM, all_binary_states

EXACT, SAMPLED = "exact", "log_z_plus_chain_energy"


@torch.no_grad()
def rbm_kl_uniform_exact(rbm: RBM) -> float:
    """KL(p ‖ uniform) of the RBM, exact: enumerate the smaller layer, sum the other out."""
    r = copy.deepcopy(rbm).double().cpu()  # a float64 copy: the trained module stays as it is
    if r.num_visible <= r.num_hidden:
        small = all_binary_states(r.num_visible, dtype=torch.float64)
        log_unnormalised = -r.free_energy_visible(small)
        expected_other = torch.sigmoid(r.hidden_logits(small))  # E[h | v]: the energy is linear in h
        energies = r.energy(torch.cat([small, expected_other], dim=1))
    else:
        small = all_binary_states(r.num_hidden, dtype=torch.float64)
        log_unnormalised = -r.free_energy_hidden(small)
        expected_other = torch.sigmoid(r.visible_logits(small))
        energies = r.energy(torch.cat([expected_other, small], dim=1))
    log_z = torch.logsumexp(log_unnormalised, 0)
    mean_energy = (torch.softmax(log_unnormalised, 0) * energies).sum()
    return (r.num_units * math.log(2) - log_z - mean_energy).item()


@torch.no_grad()
def rbm_kl_uniform_sampled(rbm: RBM, log_z: float, samples: Tensor) -> float:
    """KL(p ‖ uniform) from an estimate of log Z and equilibrium samples of p (rows of z)."""
    return rbm.num_units * math.log(2) - log_z - rbm.energy(samples).mean().item()


def kl_uniform_exact_from(p: Tensor) -> float:
    """KL(p ‖ uniform) of a distribution given over all its 2^n states."""
    p = p.double()
    nonzero = p[p > 0]
    return math.log(len(p)) + (nonzero * nonzero.log()).sum().item()


def qbm_kl_uniform_exact(rbm: RBM, gamma: Gamma) -> float:
    """KL of the QBM's z-marginal <z|e^{-H}|z> / Tr e^{-H} from uniform, from the dense spectrum."""
    return kl_uniform_exact_from(exact_qbm_z_distribution(rbm, gamma))
