"""The kaiwu bridge: kaiwu solvers as samplers, our samplers as kaiwu solvers, safe loading."""

from __future__ import annotations

import math
import os
import sys
import types

import numpy as np
import pytest
import torch
from kaiwu.core import IsingSolver

from qvae.priors.kaiwu import (
    IsingSolverSampler,
    KaiwuUnavailableError,
    SamplerIsingSolver,
    bipartition,
    load_kaiwu_solver,
)
from qvae.priors.rbm import RBM, all_binary_states, exact_distribution, ising_energy, state_index
from qvae.priors.samplers import AnnealingSampler, PCDSampler

NV, NH = 3, 3
K = 2 ** (NV + NH)


def tv_bound(num_states: int, num_samples: int, delta: float = 1e-6) -> float:
    """A bound that the TV distance of N iid samples' empirical law exceeds with prob. < delta.

    E[TV] = 1/2 sum_k E|p^_k - p_k| <= 1/2 sum_k sqrt(p_k / N) <= 1/2 sqrt(K / N) (Jensen, then
    Cauchy-Schwarz), and TV changes by at most 1/N when one sample changes, so McDiarmid gives
    P(TV >= E[TV] + t) <= exp(-2 N t^2): t = sqrt(ln(1/delta) / (2N)).
    """
    return 0.5 * math.sqrt(num_states / num_samples) + math.sqrt(math.log(1 / delta) / (2 * num_samples))


def tv_distance(z: torch.Tensor, p: torch.Tensor) -> float:
    counts = torch.bincount(state_index(z), minlength=len(p)).double()
    return 0.5 * (counts / counts.sum() - p).abs().sum().item()


def random_rbm(seed: int, nv: int = NV, nh: int = NH, scale: float = 1.0) -> RBM:
    gen = torch.Generator().manual_seed(seed)
    rbm = RBM(nv, nh, init_std=scale, generator=gen)
    with torch.no_grad():
        rbm.visible_bias.copy_(torch.randn(nv, generator=gen) * scale)
        rbm.hidden_bias.copy_(torch.randn(nh, generator=gen) * scale)
    return rbm.double()


def spins_to_states(spins: np.ndarray) -> torch.Tensor:
    """Binary states of solver spins, auxiliary rule applied."""
    s = torch.as_tensor(spins, dtype=torch.float64)
    return (s[:, :-1] * s[:, -1:] + 1) / 2


class ExactBoltzmannSolver(IsingSolver):
    """Stands in for a licensed kaiwu solver: exact samples of p(s) ~ exp(s^T J s), 100 per call.

    It enumerates all 2^(n+1) spin vectors, auxiliary spin included, so half its rows have the
    auxiliary spin -1 before kaiwu's negtail flip, as a real solver's may.
    """

    def __init__(self, seed: int = 0, size_limit: int = 100) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)
        self.size_limit = size_limit
        self.calls = 0

    def _solve(self, ising_matrix: np.ndarray) -> np.ndarray:
        self.calls += 1
        m = ising_matrix.shape[0]
        spins = 2.0 * all_binary_states(m, dtype=torch.float64).numpy() - 1.0
        log_p = -ising_energy(spins, ising_matrix)
        p = np.exp(log_p - log_p.max())
        return spins[self.rng.choice(len(spins), size=self.size_limit, p=p / p.sum())]


# ---------------------------------------------------------------- kaiwu solver as a sampler
def test_solver_sampler_matches_exact_distribution() -> None:
    rbm = random_rbm(1)
    solver = ExactBoltzmannSolver(seed=2)
    sampler = IsingSolverSampler(solver, seed=3)
    z = sampler.sample(rbm, 4000)
    assert z.shape == (4000, NV + NH) and z.dtype == rbm.weight.dtype
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    p = exact_distribution(rbm)
    bound = tv_bound(K, 4000)
    assert tv_distance(z, p) <= bound
    # the bound discriminates: ignoring the auxiliary spin (all states flipped) would fail it
    assert 0.5 * (p - p[torch.arange(K - 1, -1, -1)]).abs().sum().item() > 2 * bound


def test_solver_sampler_calls_until_enough_rows() -> None:
    solver = ExactBoltzmannSolver(seed=0)
    z = IsingSolverSampler(solver).sample(random_rbm(4), 250)
    assert z.shape == (250, NV + NH)
    assert solver.calls == 3


class FixedSolver:
    def __init__(self, result: object) -> None:
        self.result = result

    def solve(self, ising_matrix: np.ndarray) -> object:
        return self.result


def test_solver_sampler_applies_the_auxiliary_spin() -> None:
    spins = np.array([[1, -1, 1, 1, -1, -1, -1], [1, -1, 1, 1, -1, -1, 1]])
    z = IsingSolverSampler(FixedSolver(spins)).sample(random_rbm(0), 2)
    assert sorted(z.tolist()) == [[0, 1, 0, 0, 1, 1], [1, 0, 1, 1, 0, 0]]


def test_solver_sampler_state_dict_resumes_the_shuffle() -> None:
    rbm = random_rbm(5)
    spins = 2.0 * all_binary_states(NV + NH + 1, dtype=torch.float64).numpy()[:100] - 1.0
    sampler = IsingSolverSampler(FixedSolver(spins), seed=7)
    state = sampler.state_dict()
    first = sampler.sample(rbm, 30)
    sampler.load_state_dict(state)
    assert torch.equal(sampler.sample(rbm, 30), first)
    assert not torch.equal(sampler.sample(rbm, 30), first)


@pytest.mark.parametrize("result, match", [
    (None, "returned None"),
    (np.ones((5, NV + NH)), r"shape \(k >= 1, 7\)"),
    (np.zeros((5, NV + NH + 1)), r"spins in \{-1, \+1\}"),
    (np.ones((0, NV + NH + 1)), "shape"),
])
def test_solver_sampler_rejects_bad_solver_output(result: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        IsingSolverSampler(FixedSolver(result)).sample(random_rbm(0), 10)


# ---------------------------------------------------------------- our sampler as a kaiwu solver
def solve_many(solver: SamplerIsingSolver, ising: np.ndarray, calls: int) -> np.ndarray:
    return np.concatenate([solver.solve(ising) for _ in range(calls)])


def test_sampler_solver_samples_the_rbm() -> None:
    rbm = random_rbm(11)
    solver = SamplerIsingSolver(PCDSampler(num_chains=500, sweeps=10, seed=0), num_solutions=500)
    spins = solve_many(solver, rbm.to_ising(), 8)
    assert spins.shape == (4000, NV + NH + 1)
    assert np.isin(spins, (-1, 1)).all() and (spins[:, -1] == 1).all()
    # PCD chains persist across calls; 10 sweeps of a 6-unit RBM leave them close to independent
    assert tv_distance(spins_to_states(spins), exact_distribution(rbm)) <= tv_bound(K, 4000)


def test_sampler_solver_discovers_the_bipartition_of_permuted_variables() -> None:
    rbm = random_rbm(12)
    n = NV + NH
    perm = np.random.default_rng(0).permutation(n)
    ising = rbm.to_ising()[np.ix_(list(perm) + [n], list(perm) + [n])]
    solver = SamplerIsingSolver(lambda: PCDSampler(num_chains=500, sweeps=10, seed=1), num_solutions=500)
    spins = solve_many(solver, ising, 8)
    original = np.empty_like(spins)
    original[:, perm] = spins[:, :n]
    original[:, n] = spins[:, n]
    assert tv_distance(spins_to_states(original), exact_distribution(rbm)) <= tv_bound(K, 4000)


def test_bipartition_puts_isolated_variables_visible() -> None:
    couplings = np.zeros((5, 5))
    couplings[1, 3] = couplings[3, 1] = 0.5
    assert bipartition(couplings) == ([0, 1, 2, 4], [3])
    assert bipartition(np.zeros((2, 2))) == ([0], [1])


def test_sampler_solver_rejects_a_non_bipartite_matrix() -> None:
    ising = np.zeros((4, 4))
    for i, j in [(0, 1), (1, 2), (0, 2)]:
        ising[i, j] = ising[j, i] = 0.3
    solver = SamplerIsingSolver(PCDSampler(num_chains=10, seed=0), num_solutions=10)
    with pytest.raises(ValueError, match="not bipartite"):
        solver.solve(ising)


def test_annealing_sampler_solver_finds_the_ground_state() -> None:
    rbm = random_rbm(13, nv=4, nh=5, scale=2.0)
    ising = rbm.to_ising()
    sampler = AnnealingSampler(num_chains=50, sweeps=200, final_temperature=0.001, seed=0)
    solver = SamplerIsingSolver(sampler, num_solutions=50)
    spins = solver.solve(ising, sort_solutions=True)
    states = all_binary_states(rbm.num_units, dtype=torch.float64)
    brute_force = 2.0 * np.concatenate([states.numpy(), np.ones((len(states), 1))], axis=1) - 1.0
    brute_force[:, -1] = 1.0
    assert solver.get_hamiltonian()[0] == pytest.approx(ising_energy(brute_force, ising).min())
    best = spins_to_states(spins[:1])
    assert rbm.energy(best).item() == pytest.approx(rbm.energy(states).min().item())


# ---------------------------------------------------------------- loading the licensed SDK
def test_missing_enterprise_sdk_raises_a_helpful_error() -> None:
    with pytest.raises(KaiwuUnavailableError) as info:
        load_kaiwu_solver("kaiwu.classical.SimulatedAnnealingOptimizer", initial_temperature=100)
    message = str(info.value)
    assert "qvae-mlops[kaiwu]" in message and "3.10" in message and "licence" in message
    assert "sampler=pcd" in message and "sampler=sa" in message


def install_fake_sdk(monkeypatch: pytest.MonkeyPatch, solve: object) -> None:
    module = types.ModuleType("fake_kaiwu_sdk")
    module.Optimizer = type("Optimizer", (), {"__init__": lambda self, **kw: setattr(self, "kw", kw),
                                              "solve": solve})
    monkeypatch.setitem(sys.modules, "fake_kaiwu_sdk", module)


@pytest.mark.timeout(30)
def test_unlicensed_sdk_cannot_hang_on_its_licence_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    def solve(self: object, ising_matrix: np.ndarray) -> np.ndarray:
        input("Please enter your kaiwu user_id: ")
        return np.ones((1, ising_matrix.shape[0]))

    install_fake_sdk(monkeypatch, solve)
    read_end, write_end = os.pipe()  # a stdin that never delivers a line: unguarded input() blocks
    try:
        with open(read_end, closefd=True) as never_ready:
            monkeypatch.setattr(sys, "stdin", never_ready)
            solver = load_kaiwu_solver("fake_kaiwu_sdk.Optimizer", size_limit=10)
            assert solver.kw == {"size_limit": 10}
            with pytest.raises(KaiwuUnavailableError, match="not licensed.*kaiwu.license.init"):
                IsingSolverSampler(solver).sample(random_rbm(0), 5)
            assert sys.stdin is never_ready
    finally:
        os.close(write_end)


def test_licence_errors_become_kaiwu_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def solve(self: object, ising_matrix: np.ndarray) -> np.ndarray:
        raise RuntimeError("License verification failed")

    install_fake_sdk(monkeypatch, solve)
    with pytest.raises(KaiwuUnavailableError, match="not licensed"):
        load_kaiwu_solver("fake_kaiwu_sdk.Optimizer").solve(np.zeros((3, 3)))


def test_licensed_solver_passes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_sdk(monkeypatch, lambda self, ising_matrix: ExactBoltzmannSolver(seed=0).solve(ising_matrix))
    sampler = IsingSolverSampler(load_kaiwu_solver("fake_kaiwu_sdk.Optimizer"))
    assert sampler.sample(random_rbm(0), 120).shape == (120, NV + NH)
