"""QVAE terms against enumeration of a tiny latent space."""

import math

import pytest
import torch

from qvae.config import Config
from qvae.models.qvae import QVAE
from qvae.priors.rbm import all_binary_states

TINY = dict(input_dim=12, hidden_dim=16, latent_dim=6, num_visible=3, num_hidden=3, train_size=0)


def tiny_model(seed: int = 0, **changes) -> QVAE:
    torch.manual_seed(seed)
    model = QVAE(Config(**{**TINY, **changes}), data_mean=torch.full((12,), 0.3)).double()
    with torch.no_grad():  # a prior far from uniform so the KL terms matter
        model.prior.weight.normal_(0, 1)
        model.prior.visible_bias.normal_(0, 1)
        model.prior.hidden_bias.normal_(0, 1)
    return model


def brute_force_kl(model: QVAE, x: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p(z)) by summing over all 2^6 latent states."""
    states = all_binary_states(6, dtype=torch.float64)
    log_p = -model.prior.energy(states) - torch.logsumexp(-model.prior.energy(states), 0)
    q = torch.sigmoid(model.encode(x))  # (B, 6)
    log_q = torch.where(states[None] > 0, torch.log(q[:, None]), torch.log1p(-q[:, None])).sum(-1)
    return (log_q.exp() * (log_q - log_p[None])).sum(-1)


def test_kl_with_exact_log_z_equals_enumerated_kl():
    model = tiny_model()
    x = torch.rand(5, 12, dtype=torch.float64)
    terms = model(x)
    kl = terms["kl_unnormalized"] + model.prior.log_partition_exact()
    assert kl.item() == pytest.approx(brute_force_kl(model, x).mean().item(), abs=1e-9)
    assert kl.item() >= 0


def test_surrogate_gradient_is_the_kl_gradient_for_the_prior():
    """d kl_surrogate / d theta_prior = d KL / d theta_prior when negatives come from p(z)."""
    model = tiny_model(1)
    x = torch.rand(8, 12, dtype=torch.float64)
    states = all_binary_states(6, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        p = torch.softmax(-model.prior.energy(states), 0)
    n = 400_000
    negative = states[torch.multinomial(p, n, replacement=True, generator=gen)]
    surrogate = model(x, negative)["kl_surrogate"]
    grads = torch.autograd.grad(surrogate, list(model.prior.parameters()))
    exact = brute_force_kl(model, x).mean()
    exact_grads = torch.autograd.grad(exact, list(model.prior.parameters()))
    for g, e in zip(grads, exact_grads):
        # Monte Carlo error of a mean of N bounded energy gradients: well under 5/sqrt(N)
        assert torch.allclose(g, e, atol=5 / math.sqrt(n))


def test_loss_combines_terms_with_kl_beta_and_weight_decay():
    model = tiny_model(2)
    x = torch.rand(4, 12, dtype=torch.float64)
    negative = all_binary_states(6, dtype=torch.float64)
    terms = model(x, negative)
    expected = terms["cost"] + model.config.kl_beta * terms["kl_surrogate"] + terms["wd_loss"]
    assert terms["loss"].item() == pytest.approx(expected.item())
    p = model.prior
    wd = 0.01 * (p.weight.square().sum() + 0.5 * (p.visible_bias.square().sum() + p.hidden_bias.square().sum()))
    assert terms["wd_loss"].item() == pytest.approx(wd.item())


def test_cost_is_bernoulli_negative_log_likelihood_of_intensities():
    model = tiny_model(3)
    x = torch.rand(3, 12, dtype=torch.float64)
    gen = torch.Generator().manual_seed(4)
    cost = model(x, generator=gen)["cost"]
    gen = torch.Generator().manual_seed(4)
    zeta = model.smoothing.rsample(model.encode(x), gen)
    probs = torch.sigmoid(model.decoder(zeta) + model.train_bias)
    manual = -(x * probs.log() + (1 - x) * (1 - probs).log()).sum(-1).mean()
    assert cost.item() == pytest.approx(manual.item(), rel=1e-9)


def test_train_bias_is_the_logit_of_the_clamped_mean():
    mean = torch.tensor([0.0, 0.5, 1.0] * 4)
    model = QVAE(Config(**TINY), data_mean=mean)
    assert torch.allclose(torch.sigmoid(model.train_bias), mean.clamp(0.001, 0.999), atol=1e-6)


def test_generate_shape_range_and_reproducibility():
    model = tiny_model(4).float()
    a = model.generate(10, sweeps=5, generator=torch.Generator().manual_seed(7))
    b = model.generate(10, sweeps=5, generator=torch.Generator().manual_seed(7))
    assert a.shape == (10, 12) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    with pytest.raises(ValueError, match="number of images"):
        model.generate(0)


def test_generate_from_seeds_depends_only_on_each_seed():
    model = tiny_model(5).float()
    together = model.generate_from_seeds([3, 7, 11], sweeps=10)
    alone = model.generate_from_seeds([7], sweeps=10)
    assert together.shape == (3, 12)
    # the latent draw is identical; the decoder's batched matmul may round differently per batch size
    assert torch.allclose(together[1], alone[0], atol=1e-6)
    assert not torch.allclose(together[0], together[2], atol=1e-3)
    chunked = model.generate_from_seeds([3, 7, 11], sweeps=10, chunk_size=2)
    assert torch.allclose(chunked, together, atol=1e-6)
    assert torch.equal(model.generate_from_seeds([3, 7, 11], sweeps=10), together)  # same call, same bits


def latent_readout(model: QVAE) -> None:
    """Replace the decoder: pixel i < 6 is bright iff zeta_i > 0.5, i.e. iff z_i = 1."""
    readout = torch.nn.Linear(6, 12)
    with torch.no_grad():
        readout.weight.zero_()
        readout.weight[:6].copy_(20 * torch.eye(6))
        readout.bias.fill_(-10.0)
        model.train_bias.zero_()
    model.decoder = readout


def test_generate_from_seeds_samples_the_prior():
    """The per-seed Gibbs path targets p(z): its latent marginal matches enumeration."""
    model = tiny_model(6).float()
    latent_readout(model)
    n = 20_000
    z = (model.generate_from_seeds(list(range(n)), sweeps=30)[:, :6] > 0.5).float()
    states = all_binary_states(6)
    exact = torch.softmax(-model.prior.energy(states).double(), 0)
    from .tv import empirical_tv, tv_bound
    assert empirical_tv(z, exact) < tv_bound(64, n)


def test_image_seeds_of_different_requests_give_different_images():
    """Seeds that agree in their low 32 bits must still give different images."""
    from qvae.models.qvae import image_seeds

    model = tiny_model(7).float()
    a = model.generate_from_seeds(image_seeds(1, 3), sweeps=5)
    b = model.generate_from_seeds(image_seeds(2, 3), sweeps=5)
    assert (a - b).abs().max() > 1e-3
    assert image_seeds(0, 3) == [0, 1, 2] and image_seeds(1, 2) == [2**32, 2**32 + 1]


# ---------------------------------------------------------------- the quantum prior (gamma > 0)
QUANTUM = dict(gamma=1.0, sampler="pimc", trotter_slices=16)


def brute_force_quantum_kl(model: QVAE, x: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p_Gamma(z)) with the QBM's z-basis distribution from dense diagonalisation."""
    from qvae.priors.qbm_exact import exact_qbm_z_distribution

    states = all_binary_states(6, dtype=torch.float64)
    log_p = exact_qbm_z_distribution(model.prior, model.gamma).log()
    q = torch.sigmoid(model.encode(x))
    log_q = torch.where(states[None] > 0, torch.log(q[:, None]), torch.log1p(-q[:, None])).sum(-1)
    return (log_q.exp() * (log_q - log_p[None])).sum(-1)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_q_elbo_kl_is_an_upper_bound_on_the_quantum_kl(gamma):
    """kl_unnormalized + log Tr e^{-H} >= KL(q || p_Gamma), with equality at Gamma = 0."""
    from qvae.priors.qbm_exact import exact_qbm_log_partition

    model = tiny_model(8, **{**QUANTUM, "gamma": gamma, "sampler": "pimc" if gamma else "pcd"})
    x = torch.rand(6, 12, dtype=torch.float64)
    bound = model(x)["kl_unnormalized"].item() + exact_qbm_log_partition(model.prior, gamma)
    true_kl = brute_force_quantum_kl(model, x).mean().item()
    if gamma == 0:
        assert bound == pytest.approx(true_kl, abs=1e-9)
    else:
        assert bound > true_kl + 1e-4 and true_kl > 0


def test_quantum_negative_phase_gives_the_q_elbo_gradient():
    """With negatives from the QBM's z-basis law, d kl_surrogate = d (kl_unnormalized + log Tr e^{-H})
    for the diagonal parameters (log Tr e^{-H} differentiated by central differences)."""
    from qvae.priors.qbm_exact import exact_qbm_log_partition, exact_qbm_z_distribution

    model = tiny_model(9, **QUANTUM)
    x = torch.rand(8, 12, dtype=torch.float64)
    states = all_binary_states(6, dtype=torch.float64)
    p = exact_qbm_z_distribution(model.prior, model.gamma)
    n = 400_000
    negative = states[torch.multinomial(p, n, replacement=True, generator=torch.Generator().manual_seed(0))]
    params = list(model.prior.parameters())
    grads = torch.autograd.grad(model(x, negative)["kl_surrogate"], params)
    positive = torch.autograd.grad(model(x)["kl_unnormalized"], params)
    eps = 1e-5
    for param, g, pos in zip(params, grads, positive):
        for index in [(0, 0), (2, 1)] if param.dim() == 2 else [(0,), (2,)]:
            with torch.no_grad():
                param[index] += eps
                up = exact_qbm_log_partition(model.prior, model.gamma)
                param[index] -= 2 * eps
                down = exact_qbm_log_partition(model.prior, model.gamma)
                param[index] += eps
            expected = pos[index].item() + (up - down) / (2 * eps)
            assert g[index].item() == pytest.approx(expected, abs=5 / math.sqrt(n))


def test_quantum_generation_samples_the_qbm_and_depends_only_on_each_seed():
    from qvae.priors.qbm_exact import exact_qbm_z_distribution, exact_trotter_z_distribution

    from .tv import empirical_tv, tv_bound

    model = tiny_model(10, **{**QUANTUM, "gamma": 2.0}).float()
    latent_readout(model)
    n = 8000
    images = model.generate_from_seeds(list(range(n)), sweeps=8)
    z = (images[:, :6] > 0.5).float()
    exact = exact_trotter_z_distribution(model.prior, model.gamma, 16)
    assert empirical_tv(z, exact) < tv_bound(64, n)
    classical = torch.softmax(-model.prior.energy(all_binary_states(6)).double(), 0)
    # far enough from the RBM's law that passing the bound above rules the classical law out
    assert 0.5 * (exact_qbm_z_distribution(model.prior, model.gamma) - classical).abs().sum() > 2 * tv_bound(64, n)
    assert torch.allclose(model.generate_from_seeds([5], sweeps=8)[0], images[5], atol=1e-6)
    unseeded = (model.sample_prior(n, sweeps=8, generator=torch.Generator().manual_seed(1)))
    assert empirical_tv(unseeded, exact) < tv_bound(64, n)


@pytest.mark.parametrize("prior,encoder_out", [("boltzmann", 6), ("gaussian", 12)])
def test_hidden_layers_stack_layers_of_hidden_dim_in_both_networks(prior, encoder_out):
    from qvae.models.build import build_model

    def widths(network: torch.nn.Sequential) -> list[int]:
        linear = [m for m in network if isinstance(m, torch.nn.Linear)]
        return [linear[0].in_features] + [m.out_features for m in linear]

    model = build_model(Config(**TINY, hidden_layers=3, prior=prior))
    assert widths(model.encoder) == [12, 16, 16, 16, encoder_out]
    assert widths(model.decoder) == [6, 16, 16, 16, 12]
    assert sum(isinstance(m, torch.nn.Tanh) for m in model.decoder) == 3  # between layers, none on the logits
    assert all(term.isfinite().all() for term in model(torch.rand(5, 12)).values())
