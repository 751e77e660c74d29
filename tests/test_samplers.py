"""Samplers against the exact Boltzmann distribution of a 6x6 RBM."""

import numpy as np
import pytest
import torch

from qvae.config import Config
from qvae.priors.build import make_sampler
from qvae.priors.kaiwu import IsingSolverSampler, KaiwuUnavailableError
from qvae.priors.qbm import PIMCSampler
from qvae.priors.rbm import all_binary_states, exact_distribution, ising_energy
from qvae.priors.samplers import (
    AnnealingSampler,
    PCDSampler,
    Sampler,
    geometric_temperatures,
    kaiwu_temperatures,
)

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


class ExactIsingSolver:
    """Stands in for a kaiwu solver (`sampler=kaiwu` loads it by its dotted name): exact samples of
    p(s) ~ exp(-E_ising(s)) over every spin vector, auxiliary spin included, 5000 per call."""

    def __init__(self, seed: int = 0, size_limit: int = 5000) -> None:
        self.rng = np.random.default_rng(seed)
        self.size_limit = size_limit

    def solve(self, ising_matrix: np.ndarray) -> np.ndarray:
        spins = 2.0 * all_binary_states(ising_matrix.shape[0], dtype=torch.float64).numpy() - 1.0
        log_p = -ising_energy(spins, ising_matrix)
        p = np.exp(log_p - log_p.max())
        return spins[self.rng.choice(len(spins), size=self.size_limit, p=p / p.sum())]


FACTORY_N = 20_000
FACTORY_CASES = {  # config -> the sampler class it must build, and the settings that must reach it
    "pcd": (dict(sampler="pcd", sampler_chains=FACTORY_N, sampler_sweeps=50, seed=7), PCDSampler,
            dict(num_chains=FACTORY_N, sweeps=50)),
    "sa": (dict(sampler="sa", sampler_chains=FACTORY_N, sampler_sweeps=60, sa_initial_temperature=50.0,
                sa_final_temperature=1.0, seed=7), AnnealingSampler, dict(num_chains=FACTORY_N)),
    "kaiwu": (dict(sampler="kaiwu", kaiwu_solver=f"{__name__}.ExactIsingSolver", seed=7), IsingSolverSampler,
              dict(seed=7)),
    "pimc": (dict(sampler="pimc", sampler_chains=FACTORY_N, sampler_sweeps=50, trotter_slices=4, seed=7),
             PIMCSampler, dict(num_chains=FACTORY_N, sweeps=50, slices=4, gamma=0.0)),
}


@pytest.mark.parametrize("name", list(FACTORY_CASES))
def test_make_sampler_builds_each_sampler_and_it_samples_the_rbm(name, rbm_and_exact):
    """All four samplers a config can name satisfy the `Sampler` protocol, carry the config's
    settings, and return n binary states of the prior's width distributed as p(z) (at Gamma = 0
    PIMC samples the classical RBM; the kaiwu bridge with an exact solver does too)."""
    rbm, exact = rbm_and_exact
    fields, cls, settings = FACTORY_CASES[name]
    sampler = make_sampler(Config(**fields))
    assert isinstance(sampler, Sampler) and type(sampler) is cls
    for attribute, value in settings.items():
        assert getattr(sampler, attribute) == value, attribute
    if name == "sa":
        assert sampler.temperatures[0] == pytest.approx(50.0) and sampler.temperatures[-1] == pytest.approx(1.0)
        assert len(sampler.temperatures) == 60
    samples = sampler.sample(rbm, FACTORY_N)
    assert samples.shape == (FACTORY_N, rbm.num_units) and samples.dtype == rbm.weight.dtype
    assert set(samples.unique().tolist()) == {0.0, 1.0}
    assert empirical_tv(samples, exact) < tv_bound(4096, FACTORY_N)


@pytest.mark.parametrize("name", ["pcd", "sa", "pimc"])
def test_make_sampler_state_round_trip(name, rbm_and_exact):
    rbm, _ = rbm_and_exact
    fields = {**FACTORY_CASES[name][0], "sampler_chains": 64, "sampler_sweeps": 3}
    a = make_sampler(Config(**fields))
    a.sample(rbm, 64)
    state = a.state_dict()
    expected = a.sample(rbm, 64)
    b = make_sampler(Config(**fields))
    b.load_state_dict(state)
    assert torch.equal(b.sample(rbm, 64), expected)


def test_make_sampler_passes_the_transverse_field_to_pimc(rbm_and_exact):
    rbm, _ = rbm_and_exact
    sampler = make_sampler(Config(sampler="pimc", gamma=0.5, trotter_slices=8, sampler_chains=32))
    assert (sampler.gamma, sampler.slices, sampler.num_chains) == (0.5, 8, 32)
    samples = sampler.sample(rbm, 32)
    assert samples.shape == (32, 12) and set(samples.unique().tolist()) <= {0.0, 1.0}
    assert sampler.visible.shape == (32, 8, 6) and sampler.hidden.shape == (32, 8, 6)


def test_make_sampler_without_the_kaiwu_sdk_says_so():
    with pytest.raises(KaiwuUnavailableError, match="kaiwu"):
        make_sampler(Config(sampler="kaiwu"))
