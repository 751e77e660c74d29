"""log p_Γ(z) by the clamped path integral (qvae/priors/qbm_likelihood.py) against exact answers:
brute-force enumeration of single chains, and the exact P-slice diagonal <z|(D T)^P|z> of small
QBMs from dense matrices (qbm_exact.py), for every z."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from qvae.priors.qbm_exact import exact_trotter_log_partition, exact_trotter_z_distribution, trotter_coupling
from qvae.priors.qbm_likelihood import (
    clamped_chain_log_partition,
    estimate_log_diagonal,
    estimate_log_prob,
    sample_clamped_paths,
)
from qvae.priors.rbm import RBM, all_binary_states


def random_rbm(nv: int, nh: int, scale: float, seed: int = 0) -> RBM:
    gen = torch.Generator().manual_seed(seed)
    rbm = RBM(nv, nh)
    with torch.no_grad():
        for p in rbm.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return rbm


def brute_chain(f: list[float], coupling: float, first: int) -> dict[tuple[int, ...], float]:
    """Unnormalised weights exp(sum f_k x_k - 2J #kinks) of every periodic path with x_0 = first."""
    out = {}
    for rest in itertools.product((0, 1), repeat=len(f) - 1):
        x = (first, *rest)
        kinks = sum(x[k] != x[(k + 1) % len(x)] for k in range(len(x)))
        out[x] = math.exp(sum(fk * xk for fk, xk in zip(f, x)) - 2 * coupling * kinks)
    return out


def test_the_clamped_chain_partition_is_the_sum_over_its_paths():
    gen = torch.Generator().manual_seed(1)
    fields = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64) * 1.5
    first = torch.tensor([[0, 1, 1], [1, 0, 1]], dtype=torch.float64)
    coupling = trotter_coupling(1.3, 5)
    got = clamped_chain_log_partition(fields, coupling, first)
    for r, m in itertools.product(range(2), range(3)):
        exact = math.log(sum(brute_chain(fields[r, :, m].tolist(), coupling, int(first[r, m])).values()))
        assert got[r, m].item() == pytest.approx(exact, abs=1e-10)


def test_clamped_paths_start_at_the_clamp_and_follow_the_exact_law():
    f = [0.7, -0.4, 1.1, 0.2]
    coupling = trotter_coupling(2.0, 4)
    n = 40_000
    fields = torch.tensor(f, dtype=torch.float64)[None, :, None].expand(n, 4, 1).contiguous()
    for first in (0, 1):
        paths = sample_clamped_paths(fields, coupling, torch.full((n, 1), float(first), dtype=torch.float64),
                                     torch.Generator().manual_seed(first))
        assert torch.all(paths[:, 0, 0] == first)
        weights = brute_chain(f, coupling, first)
        total = sum(weights.values())
        counts: dict[tuple[int, ...], int] = {}
        for row in paths[:, :, 0].long().tolist():
            counts[tuple(row)] = counts.get(tuple(row), 0) + 1
        tv = 0.5 * sum(abs(counts.get(x, 0) / n - w / total) for x, w in weights.items())
        assert tv < 0.015, tv  # 8 paths, 40 000 samples: sampling TV ~ 0.005


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_log_diagonal_of_every_z_matches_the_exact_p_slice_value(gamma):
    """3 + 3 units, P = 8, every one of the 64 states: the AIS estimate of log <z|(D T)^P|z> within
    4 standard errors + 0.01 of the dense-matrix value."""
    rbm, slices = random_rbm(3, 3, 0.8), 8
    z = all_binary_states(6, dtype=torch.float64)
    exact = (exact_trotter_z_distribution(rbm, gamma, slices).log()
             + exact_trotter_log_partition(rbm, gamma, slices))
    got, stderr = estimate_log_diagonal(rbm, z, gamma, slices, chains=128, betas=100,
                                        generator=torch.Generator().manual_seed(0))
    error = (got - exact).abs()
    assert torch.all(error < 4 * stderr + 0.01), (error.max().item(), stderr.max().item())
    result = estimate_log_prob(rbm, z, gamma, slices, exact_trotter_log_partition(rbm, gamma, slices), chains=128,
                               betas=100, generator=torch.Generator().manual_seed(0))
    assert torch.logsumexp(result.log_prob, 0).item() == pytest.approx(0.0, abs=0.01)  # a distribution over z


def test_the_estimate_never_falls_below_the_classical_path():
    """<z|(D T)^P|z> >= e^{-E(z)} cosh(Γ/P)^{nP} (the kink-free path alone), on a model too large for
    dense matrices: the true QBM likelihood is at least what the Q-ELBO's bound uses."""
    rbm, gamma, slices = random_rbm(16, 16, 0.3, seed=3), 1.0, 16
    z = torch.randint(0, 2, (8, 32), generator=torch.Generator().manual_seed(4)).double()
    got, stderr = estimate_log_diagonal(rbm, z, gamma, slices, chains=32, betas=50,
                                        generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        classical = -rbm.double().energy(z) + 32 * slices * math.log(math.cosh(gamma / slices))
    assert torch.all(got > classical), (got - classical).min().item()
    assert torch.all(stderr < 0.5)


def test_gamma_zero_and_bad_shapes_are_refused():
    rbm = random_rbm(2, 2, 0.5)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        estimate_log_diagonal(rbm, torch.zeros(1, 4), 0.0, 4)
    with pytest.raises(ValueError, match=r"z must have shape \(N, 4\)"):
        estimate_log_diagonal(rbm, torch.zeros(1, 5), 1.0, 4)


# ---------------------------------------------------------------- per-unit Γ_l, rigid units included
UNIT_GAMMA = torch.tensor([2.0, 0.0, 0.5, 0.0, 1.5, 3.0], dtype=torch.float64)  # a rigid unit in each layer


@pytest.mark.usefixtures("one_torch_thread")
def test_clamped_chains_with_per_unit_couplings_include_the_rigid_one():
    """Per-unit J = (J(1.3), inf, J(0.4)): the clamped sum per unit against enumeration, where the rigid
    unit has one path (the clamp's value in every slice), and its sampled paths are that path."""
    gen = torch.Generator().manual_seed(1)
    fields = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64) * 1.5
    first = torch.tensor([[0, 1, 1], [1, 0, 1]], dtype=torch.float64)
    coupling = trotter_coupling(torch.tensor([1.3, 0.0, 0.4], dtype=torch.float64), 5)
    got = clamped_chain_log_partition(fields, coupling, first)
    for r, m in itertools.product(range(2), range(3)):
        if m == 1:  # rigid: the constant path x_k = first
            exact = float(first[r, m]) * fields[r, :, m].sum().item()
        else:
            exact = math.log(sum(brute_chain(fields[r, :, m].tolist(), coupling[m].item(), int(first[r, m])).values()))
        assert got[r, m].item() == pytest.approx(exact, abs=1e-10), (r, m)
    paths = sample_clamped_paths(fields.repeat(500, 1, 1), coupling, first.repeat(500, 1), gen)
    assert torch.equal(paths[:, :, 1], first.repeat(500, 1)[:, 1:2].expand(-1, 5))


@pytest.mark.usefixtures("one_torch_thread")
def test_log_diagonal_with_per_unit_gamma_matches_the_exact_p_slice_value():
    """3 + 3 units with a rigid unit in each layer, P = 8, every z: the AIS estimate of log <z|(D T)^P|z>
    within 4 standard errors + 0.01 of the dense-matrix value, which differs from the mean-Γ one."""
    rbm, slices = random_rbm(3, 3, 0.8), 8
    z = all_binary_states(6, dtype=torch.float64)
    log_z = exact_trotter_log_partition(rbm, UNIT_GAMMA, slices)
    exact = exact_trotter_z_distribution(rbm, UNIT_GAMMA, slices).log() + log_z
    mean_field = exact_trotter_z_distribution(rbm, UNIT_GAMMA.mean().item(), slices).log()
    assert (exact - log_z - mean_field).abs().max() > 0.3  # the test can fail
    result = estimate_log_prob(rbm, z, UNIT_GAMMA, slices, log_z, chains=64, betas=60,
                               generator=torch.Generator().manual_seed(0))
    error = (result.log_diagonal - exact).abs()
    assert torch.all(error < 4 * result.stderr + 0.01), (error.max().item(), result.stderr.max().item())
    assert torch.logsumexp(result.log_prob, 0).item() == pytest.approx(0.0, abs=0.01)


def test_per_unit_gamma_zero_everywhere_and_the_wrong_length_are_refused():
    rbm = random_rbm(2, 2, 0.5)
    with pytest.raises(ValueError, match=r"gamma must be > 0 \(for one unit at least\)"):
        estimate_log_diagonal(rbm, torch.zeros(1, 4), [0.0] * 4, 4)
    with pytest.raises(ValueError, match=r"gamma must hold one value per unit, 4 \(num_visible \+ num_hidden\), got 5"):
        estimate_log_diagonal(rbm, torch.zeros(1, 4), [1.0] * 5, 4)
