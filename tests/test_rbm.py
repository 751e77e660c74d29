"""The RBM prior against brute-force enumeration of tiny models."""

import numpy as np
import pytest
import torch

from qvae.priors.rbm import (
    RBM,
    all_binary_states,
    binary_to_spins,
    exact_distribution,
    ising_energy,
    spins_to_binary,
    state_index,
)


def random_rbm(nv: int, nh: int, scale: float = 1.0, seed: int = 0) -> RBM:
    gen = torch.Generator().manual_seed(seed)
    rbm = RBM(nv, nh).double()
    with torch.no_grad():
        rbm.weight.copy_(torch.randn(nv, nh, generator=gen, dtype=torch.float64) * scale)
        rbm.visible_bias.copy_(torch.randn(nv, generator=gen, dtype=torch.float64) * scale)
        rbm.hidden_bias.copy_(torch.randn(nh, generator=gen, dtype=torch.float64) * scale)
    return rbm


def brute_energy(rbm: RBM, z: np.ndarray) -> float:
    """E(z) from the definition, one state at a time, in numpy."""
    w = rbm.weight.detach().numpy()
    b = torch.cat([rbm.visible_bias, rbm.hidden_bias]).detach().numpy()
    v, h = z[: rbm.num_visible], z[rbm.num_visible:]
    return float(-b @ z - v @ w @ h)


def test_energy_matches_definition_state_by_state():
    rbm = random_rbm(3, 4)
    states = all_binary_states(7, dtype=torch.float64)
    energies = rbm.energy(states).detach().numpy()
    for z, e in zip(states.numpy(), energies):
        assert e == pytest.approx(brute_energy(rbm, z), abs=1e-12)


def test_energy_of_probabilities_is_the_expected_energy():
    """Bilinear energy: E(q) = E_q[E(z)] for factorial q (the positive phase relies on it)."""
    rbm = random_rbm(3, 3)
    q = torch.rand(6, dtype=torch.float64)
    states = all_binary_states(6, dtype=torch.float64)
    probs = torch.prod(torch.where(states > 0, q, 1 - q), dim=1)
    expected = (probs * rbm.energy(states)).sum()
    assert rbm.energy(q[None])[0].item() == pytest.approx(expected.item(), abs=1e-12)


@pytest.mark.parametrize("nv,nh", [(2, 5), (5, 3), (6, 6)])
def test_exact_log_partition_matches_brute_force(nv, nh):
    rbm = random_rbm(nv, nh, scale=1.5)
    states = all_binary_states(nv + nh, dtype=torch.float64)
    brute = torch.logsumexp(-rbm.energy(states), 0).item()
    assert rbm.log_partition_exact() == pytest.approx(brute, abs=1e-9)


def test_free_energies_sum_out_the_other_layer():
    rbm = random_rbm(3, 4)
    states = all_binary_states(7, dtype=torch.float64)
    energies = rbm.energy(states).reshape(8, 16)  # visible states x hidden states
    assert torch.allclose(rbm.free_energy_visible(all_binary_states(3, torch.float64)),
                          -torch.logsumexp(-energies, 1))
    assert torch.allclose(rbm.free_energy_hidden(all_binary_states(4, torch.float64)),
                          -torch.logsumexp(-energies, 0))


def test_conditionals_match_enumeration():
    rbm = random_rbm(3, 2)
    p = exact_distribution(rbm).reshape(8, 4)  # p(v, h)
    v_states = all_binary_states(3, torch.float64)
    h_states = all_binary_states(2, torch.float64)
    p_h_given_v = p / p.sum(1, keepdim=True)
    expected = p_h_given_v @ h_states  # E[h | v]
    assert torch.allclose(torch.sigmoid(rbm.hidden_logits(v_states)), expected)


def test_ais_estimate_agrees_with_exact_log_z():
    rbm = random_rbm(8, 10, scale=0.8).float()
    exact = rbm.log_partition_exact()
    gen = torch.Generator().manual_seed(0)
    estimate, stderr = rbm.log_partition_ais(num_chains=512, num_betas=500, generator=gen)
    assert stderr < 0.05
    assert abs(estimate - exact) < max(5 * stderr, 0.02)


def test_ising_conversion_preserves_energies_up_to_a_constant():
    rbm = random_rbm(3, 3)
    ising = rbm.to_ising()
    assert ising.shape == (7, 7) and np.allclose(ising, ising.T)
    states = all_binary_states(6, dtype=torch.float64)
    energies = rbm.energy(states).detach().numpy()
    for sign in (+1.0, -1.0):  # the auxiliary spin may come back as -1: the mapping still holds
        spins = sign * binary_to_spins(states)
        assert torch.equal(spins_to_binary(spins), states.float())
        diff = ising_energy(spins, ising) - energies
        assert np.allclose(diff, diff[0])


def test_from_ising_inverts_to_ising():
    rbm = random_rbm(4, 3)
    back = RBM.from_ising(rbm.to_ising(), num_visible=4).double()
    for name, value in rbm.state_dict().items():
        assert torch.allclose(back.state_dict()[name], value)


def test_from_ising_rejects_couplings_inside_a_layer():
    ising = random_rbm(2, 2).to_ising()
    ising[0, 1] = ising[1, 0] = 0.3
    with pytest.raises(ValueError, match="inside a layer"):
        RBM.from_ising(ising, num_visible=2)


def test_state_index_inverts_enumeration():
    states = all_binary_states(5)
    assert torch.equal(state_index(states), torch.arange(32))


def test_exact_distribution_keeps_double_precision():
    rbm = random_rbm(3, 3, scale=1.3)
    with torch.no_grad():
        rbm.weight[0, 0] = 1 / 3  # not representable in float32
    states = all_binary_states(6, dtype=torch.float64)
    brute = torch.softmax(-rbm.energy(states), 0)
    assert torch.allclose(exact_distribution(rbm), brute, rtol=1e-13, atol=0)
