"""prior_kl_uniform = KL(p || uniform) against brute-force enumeration of tiny priors."""

import math

import numpy as np
import pytest
import torch

from qvae.config import Config
from qvae.priors.build import kl_uniform_method, make_prior
from qvae.priors.kl_uniform import (
    qbm_kl_uniform_exact,
    rbm_kl_uniform_exact,
    rbm_kl_uniform_sampled,
)
from qvae.priors.qbm_exact import exact_qbm_z_distribution
from qvae.priors.rbm import RBM, all_binary_states
from tests.test_rbm import random_rbm


def brute_kl_uniform(rbm: RBM) -> float:
    """sum_z p(z) log(p(z) / 2^-n) from the definition, every state one by one, in numpy."""
    n = rbm.num_units
    states = all_binary_states(n, dtype=torch.float64)
    energies = np.array([float(rbm.energy(z[None]).detach()) for z in states])
    p = np.exp(-(energies - energies.min()))
    p /= p.sum()
    return float(np.sum(p * (np.log(p) + n * math.log(2))))


@pytest.mark.parametrize("nv,nh", [(3, 5), (6, 2), (4, 4)])
def test_exact_matches_the_definition(nv, nh):
    rbm = random_rbm(nv, nh, scale=1.0, seed=nv)
    assert rbm_kl_uniform_exact(rbm) == pytest.approx(brute_kl_uniform(rbm), rel=1e-10, abs=1e-12)


def test_a_zero_rbm_is_uniform_and_a_peaked_one_is_far_from_it():
    rbm = random_rbm(4, 4, scale=0.0)
    assert rbm_kl_uniform_exact(rbm) == pytest.approx(0.0, abs=1e-12)
    peaked = random_rbm(4, 4, scale=6.0, seed=3)  # nearly one state: KL -> n log 2
    assert 0.5 * 8 * math.log(2) < rbm_kl_uniform_exact(peaked) <= 8 * math.log(2)


def test_the_exact_figure_leaves_a_float32_module_untouched():
    rbm = RBM(3, 3)
    before = {k: v.clone() for k, v in rbm.state_dict().items()}
    rbm_kl_uniform_exact(rbm)
    assert rbm.weight.dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in rbm.state_dict().items())


def test_sampled_estimate_from_exact_samples_and_log_z_converges():
    rbm = random_rbm(3, 4, scale=1.0, seed=7)
    states = all_binary_states(7, dtype=torch.float64)
    p = torch.softmax(-rbm.energy(states).detach(), 0)
    draws = states[torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))]
    estimate = rbm_kl_uniform_sampled(rbm, rbm.log_partition_exact(), draws)
    assert estimate == pytest.approx(brute_kl_uniform(rbm), abs=0.02)


def test_qbm_at_zero_field_is_the_rbm_and_a_field_moves_it_towards_uniform():
    rbm = random_rbm(3, 3, scale=1.5, seed=2)
    assert qbm_kl_uniform_exact(rbm, 0.0) == pytest.approx(brute_kl_uniform(rbm), abs=1e-9)
    p = exact_qbm_z_distribution(rbm, 2.0)
    assert qbm_kl_uniform_exact(rbm, 2.0) == pytest.approx(float((p * (p * 64).log()).sum()), abs=1e-12)
    assert qbm_kl_uniform_exact(rbm, 2.0) < qbm_kl_uniform_exact(rbm, 0.0)  # a transverse field mixes the states


def test_priors_name_their_method_and_the_sampled_path_uses_fresh_chains():
    small = Config(latent_dim=8, num_visible=4, num_hidden=4)
    assert kl_uniform_method(small) == "exact"
    assert kl_uniform_method(Config()) == "log_z_plus_chain_energy"  # 2^128 states: AIS log Z + chain energy
    assert kl_uniform_method(Config(prior="gaussian")) == "none"
    assert kl_uniform_method(Config(gamma=0.5, sampler="pimc")) == "none"  # 256 qubits: no tractable figure
    # 17 + 17 units: beyond the exact rule (2^16 states), so fresh Gibbs chains give the mean energy;
    # exact enumeration of 2^17 states is still possible here, as the independent truth
    config = Config(latent_dim=34, num_visible=17, num_hidden=17, generate_sweeps=100, sampler_chains=4000)
    rbm = random_rbm(17, 17, scale=0.15, seed=5).float()
    prior = make_prior(config, rbm)
    assert prior.kl_uniform_method() == "log_z_plus_chain_energy"
    truth = rbm_kl_uniform_exact(rbm)
    estimate = prior.kl_to_uniform(rbm.log_partition_exact(), torch.Generator().manual_seed(0))
    assert truth > 0.5 and estimate == pytest.approx(truth, abs=0.1)
