"""Samplers against the exact Boltzmann distribution of a 6x6 RBM."""

import pytest
import torch

from qvae.config import Config
from qvae.priors.build import make_sampler
from qvae.priors.rbm import all_binary_states, exact_distribution
from qvae.priors.samplers import AnnealingSampler, PCDSampler, geometric_temperatures, kaiwu_temperatures

from .test_rbm import random_rbm
from .tv import empirical_tv, tv_bound

N = 100_000  # independent chains, one sample each: iid up to the chains' mixing


@pytest.fixture(scope="module")
def rbm_and_exact():
    rbm = random_rbm(6, 6, scale=0.7, seed=3)
    return rbm.float(), exact_distribution(rbm)


def test_pcd_samples_the_boltzmann_distribution(rbm_and_exact):
    rbm, exact = rbm_and_exact
    sampler = PCDSampler(num_chains=N, sweeps=50, seed=0)
    samples = sampler.sample(rbm, N)
    assert samples.shape == (N, 12) and set(samples.unique().tolist()) <= {0.0, 1.0}
    assert empirical_tv(samples, exact) < tv_bound(4096, N)


def test_pcd_chains_persist_between_calls(rbm_and_exact):
    rbm, exact = rbm_and_exact
    sampler = PCDSampler(num_chains=N, sweeps=1, seed=1)
    for _ in range(30):  # 30 calls of one sweep each reach equilibrium only if chains persist
        samples = sampler.sample(rbm, N)
    assert empirical_tv(samples, exact) < tv_bound(4096, N)


def test_annealing_to_temperature_one_samples_the_boltzmann_distribution(rbm_and_exact):
    rbm, exact = rbm_and_exact
    samples = AnnealingSampler(num_chains=N, sweeps=60, final_temperature=1.0, seed=2).sample(rbm, N)
    assert empirical_tv(samples, exact) < tv_bound(4096, N)


def test_annealing_towards_zero_is_an_optimiser_not_a_sampler(rbm_and_exact):
    """kaiwu's schedule (to T=0.001) returns low-energy states: far from p(z) in TV."""
    rbm, exact = rbm_and_exact
    sampler = AnnealingSampler(num_chains=20_000, seed=3,
                               temperatures=kaiwu_temperatures(100.0, 0.9, 0.001, 1))
    samples = sampler.sample(rbm, 20_000)
    assert empirical_tv(samples, exact) > 3 * tv_bound(4096, 20_000)
    ground_energy = rbm.energy(all_binary_states(12)).min().item()
    assert rbm.energy(samples).min().item() == pytest.approx(ground_energy, abs=1e-5)


def test_sampler_state_round_trip_reproduces_the_next_call(rbm_and_exact):
    rbm, _ = rbm_and_exact
    for make in (lambda: PCDSampler(64, 3, seed=5), lambda: AnnealingSampler(64, 10, seed=5)):
        a = make()
        a.sample(rbm, 64)
        state = a.state_dict()
        expected = a.sample(rbm, 64)
        b = make()
        b.load_state_dict(state)
        assert torch.equal(b.sample(rbm, 64), expected)


def test_schedules():
    temps = geometric_temperatures(100.0, 1.0, 5)
    assert temps[0] == pytest.approx(100) and temps[-1] == pytest.approx(1.0) and len(temps) == 5
    kaiwu = kaiwu_temperatures(100.0, 0.95, 0.001, 10)
    assert len(kaiwu) == 225 * 10 and kaiwu[-1] >= 0.001 > kaiwu[-1] * 0.95


def test_make_sampler_from_config():
    assert isinstance(make_sampler(Config(sampler="pcd")), PCDSampler)
    assert isinstance(make_sampler(Config(sampler="sa")), AnnealingSampler)
