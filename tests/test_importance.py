"""The importance-weighted objective (qvae/models/importance.py) against enumeration and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qvae.config import Config
from qvae.models.gaussian import GaussianVAE, gaussian_kl
from qvae.models.importance import iw_bound, mean_field, relaxed_log_prior
from qvae.models.qvae import QVAE
from qvae.models.smoothing import OverlappingExponential, OverlappingPower
from qvae.priors.rbm import RBM
from tests.test_nll import TINY, classical_log_pz, exact_log_px, randomised, states


def exact_relaxed_log_prior(rbm: RBM, smoothing: OverlappingExponential, zeta: torch.Tensor) -> torch.Tensor:
    """log sum_z e^{-E(z)} prod_i r(zeta_i | z_i), summing every z of a small RBM."""
    z = torch.tensor(states(rbm.num_units), dtype=zeta.dtype)  # (S, n)
    log_r = torch.where(z[:, None] > 0.5, torch.log(smoothing.pdf1(zeta))[None], torch.log(smoothing.pdf0(zeta))[None])
    return torch.logsumexp(-rbm.energy(z)[:, None] + log_r.sum(-1), 0)


def random_rbm(seed: int, scale: float) -> RBM:
    gen = torch.Generator().manual_seed(seed)
    rbm = RBM(3, 4).double()
    with torch.no_grad():
        for p in rbm.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale)
    return rbm


def test_iw_bound_is_the_log_mean_weight():
    log_w = torch.tensor([[0.0, -1.0], [math.log(3.0), -1.0]])
    assert torch.allclose(iw_bound(log_w), torch.tensor([math.log(2.0), -1.0]))
    assert torch.equal(iw_bound(log_w[:1]), log_w[0])  # k = 1: the single-sample ELBO's log weight


@pytest.mark.parametrize("scale", [0.3, 1.5])
def test_mean_field_bounds_the_relaxed_prior_from_below(scale):
    smoothing = OverlappingExponential(4.0)
    zeta = torch.rand(200, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rbm = random_rbm(0, scale)
    with torch.no_grad():
        exact = exact_relaxed_log_prior(rbm, smoothing, zeta)
        bound = relaxed_log_prior(rbm, smoothing, zeta, iterations=50)
    assert torch.all(bound <= exact + 1e-10)
    assert (exact - bound).max() < (0.05 if scale < 1 else 5.0)  # weak couplings: mean field is nearly exact


def test_mean_field_is_exact_without_couplings():
    smoothing = OverlappingExponential(10.0)
    rbm = random_rbm(2, 1.0)
    with torch.no_grad():
        rbm.weight.zero_()
    zeta = torch.rand(50, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(relaxed_log_prior(rbm, smoothing, zeta, iterations=1),
                              exact_relaxed_log_prior(rbm, smoothing, zeta), atol=1e-10)


def test_the_gradient_is_the_converged_bounds_derivative():
    """Holding m fixed is exact at the fixed point (envelope theorem): compare with central differences."""
    smoothing = OverlappingExponential(4.0)
    rbm = random_rbm(4, 0.5)
    zeta = torch.rand(5, 7, generator=torch.Generator().manual_seed(5), dtype=torch.float64, requires_grad=True)
    relaxed_log_prior(rbm, smoothing, zeta, iterations=200).sum().backward()
    eps = 1e-6
    for param, index in ((rbm.weight, (1, 2)), (rbm.visible_bias, (0,)), (rbm.hidden_bias, (3,))):
        with torch.no_grad():
            param[index] += eps
            up = relaxed_log_prior(rbm, smoothing, zeta, iterations=200).sum()
            param[index] -= 2 * eps
            down = relaxed_log_prior(rbm, smoothing, zeta, iterations=200).sum()
            param[index] += eps
        assert param.grad[index].item() == pytest.approx(((up - down) / (2 * eps)).item(), rel=1e-5, abs=1e-8)
    with torch.no_grad():
        shifted = zeta.detach().clone()
        shifted[2, 4] += eps
        up = relaxed_log_prior(rbm, smoothing, shifted, iterations=200)[2]
        shifted[2, 4] -= 2 * eps
        down = relaxed_log_prior(rbm, smoothing, shifted, iterations=200)[2]
    assert zeta.grad[2, 4].item() == pytest.approx(((up - down) / (2 * eps)).item(), rel=1e-5)


def test_mean_field_needs_an_iteration():
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        mean_field(random_rbm(0, 1.0), torch.zeros(1, 7, dtype=torch.float64), iterations=0)


@pytest.mark.parametrize("smoothing", [OverlappingExponential(4.0), OverlappingPower(30.0)],
                         ids=["exponential", "power"])
def test_each_mean_field_update_tightens_the_bound_below_the_enumerated_marginal(smoothing):
    """Each layer update maximises the bound over one layer given the other, so more iterations never
    loosen it; strong couplings, where the first update is far from the fixed point."""
    rbm = random_rbm(6, 1.5)
    zeta = torch.rand(300, 7, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    with torch.no_grad():
        exact = exact_relaxed_log_prior(rbm, smoothing, zeta)
        bounds = torch.stack([relaxed_log_prior(rbm, smoothing, zeta, iterations=n) for n in range(1, 9)])
    assert torch.all(bounds <= exact + 1e-10)
    assert torch.all(bounds[1:] >= bounds[:-1] - 1e-10)
    assert (bounds[1] - bounds[0]).max() > 1e-3  # the test can fail: a second update moves some bounds


@torch.no_grad()
def test_the_qvae_takes_its_mean_field_updates_from_the_config():
    config = Config(**{**TINY, "iw_samples": 3})
    one = randomised(QVAE(Config(**{**config.to_dict(), "mean_field_iterations": 1})), seed=4, scale=1.5).double()
    many = QVAE(Config(**{**config.to_dict(), "mean_field_iterations": 50})).double()
    many.load_state_dict(one.state_dict())
    x = torch.tensor(states(6)[[3, 17, 44]], dtype=torch.float64)
    logits = one.encode(x)
    weights = {n: model.relaxed_log_weights(x, logits, 200, torch.Generator().manual_seed(0))[1]
               for n, model in (("one", one), ("many", many))}
    # the same proposals (one seed), priced by one update and by 50: the converged bound is never lower
    assert torch.all(weights["many"] >= weights["one"] - 1e-10)
    assert (weights["many"] - weights["one"]).max() > 1e-3


def test_the_mean_field_updates_are_checked():
    from qvae.config import ConfigError

    with pytest.raises(ConfigError, match=r"mean_field_iterations.*1\.\.100"):
        Config(mean_field_iterations=0)


@pytest.fixture(scope="module")
def tiny():
    model = randomised(QVAE(Config(**TINY)), seed=1).double()
    x = torch.tensor(states(6)[[5, 22, 40, 63]], dtype=torch.float64)
    model.float()
    truth = exact_log_px(model, x.float(), classical_log_pz(model), nodes=5)  # converged (test_nll.py)
    return model.double(), x, truth


@torch.no_grad()
def test_with_the_exact_relaxed_prior_the_weights_reach_the_exact_likelihood(tiny):
    """The proposal density log q(zeta|x) and the sampling agree: K = 20 000 weights with the enumerated
    p(zeta) estimate log p(x) (enumeration and quadrature) to sampling accuracy."""
    model, x, truth = tiny
    log_z = model.prior.log_partition_exact()
    logits = model.encode(x)
    zeta = model.smoothing.rsample(logits.expand(20_000, *logits.shape), torch.Generator().manual_seed(0))
    x_logits = model.decode(zeta)
    log_px = -torch.nn.functional.binary_cross_entropy_with_logits(x_logits, x.expand_as(x_logits),
                                                                   reduction="none").sum(-1)
    log_prior = exact_relaxed_log_prior(model.prior, model.smoothing, zeta.reshape(-1, 6)).reshape(zeta.shape[:2])
    log_w = log_px + log_prior - log_z - model.smoothing.log_mixture_pdf(zeta, logits).sum(-1)
    assert np.allclose(iw_bound(log_w).numpy(), truth, atol=0.03), (iw_bound(log_w), truth)


@torch.no_grad()
def test_the_mean_field_bound_stays_below_the_likelihood_and_tightens_with_k(tiny):
    model, x, truth = tiny
    log_z = model.prior.log_partition_exact()
    gen = torch.Generator().manual_seed(1)
    repeats = 2000
    many = x.repeat(repeats, 1)
    logits = model.encode(many)
    means, errors = {}, {}
    for k in (1, 10):
        bounds = (iw_bound(sum(model.relaxed_log_weights(many, logits, k, gen))) - log_z).reshape(repeats, len(x))
        means[k], errors[k] = bounds.mean(0).numpy(), (bounds.std(0) / math.sqrt(len(bounds))).numpy()
    assert np.all(means[1] + 4 * errors[1] < truth)
    assert np.all(means[10] > means[1] + 4 * errors[1])
    assert np.all(means[10] < truth + 4 * errors[10])


@torch.no_grad()
def test_the_gaussian_vaes_single_sample_weight_averages_to_its_elbo():
    config = Config(input_dim=5, hidden_dim=8, latent_dim=2, num_visible=1, num_hidden=1, prior="gaussian",
                    device="cpu", iw_samples=1)
    model = randomised(GaussianVAE(config), seed=3, scale=0.7, encoder_scale=0.5)
    x = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 1, 1]], dtype=torch.float32)
    mean, log_var = model.encode(x)
    gen = torch.Generator().manual_seed(2)
    log_w = model.log_importance_weights(x, 200_000, gen).double()
    # E[log w] = E_q[log p(x|z)] - KL: the KL in closed form, the cost by the same samples
    x_logits = model.decode(mean + (0.5 * log_var).exp() * torch.randn((200_000, *mean.shape), generator=gen))
    cost = torch.nn.functional.binary_cross_entropy_with_logits(x_logits, x.expand_as(x_logits),
                                                                reduction="none").sum(-1).double().mean(0)
    elbo = -cost - gaussian_kl(mean, log_var).double()
    assert torch.allclose(log_w.mean(0), elbo, atol=4 * log_w.std(0).max().item() / math.sqrt(200_000) + 0.01)
    terms = model.training_step(x, None, gen)
    assert terms["iw_bound"] == pytest.approx(terms["elbo"].item(), abs=3.0)  # k = 1: one noisy ELBO sample


@pytest.mark.parametrize("prior", ["boltzmann", "gaussian"])
def test_training_on_the_bound_reports_it_beside_the_elbo(small_data, prior):
    from qvae.train import train
    from tests.test_train import SMALL

    result = train(Config(epochs=2, iw_samples=4, prior=prior, **SMALL), small_data, progress=False)
    last = result.history[-1]
    assert last["iw_bound"] > last["elbo"]  # k = 4 proposals per image: a tighter bound than one sample's ELBO
    assert last["iw_bound"] < 0 and math.isfinite(last["val_elbo"])
    assert result.history[-1]["val_cost"] < result.history[0]["val_cost"]


def test_the_kl_warm_up_ramps_the_weight_step_by_step(small_data):
    from qvae.train import train
    from tests.test_train import SMALL

    seen = []

    class Record:
        def on_epoch_end(self, report):
            seen.append(report.model.kl_scale.item())

    steps = 1024 // 64
    train(Config(epochs=3, kl_warmup_epochs=2, **SMALL), small_data, callbacks=[Record()], progress=False)
    assert seen == pytest.approx([steps / (2 * steps), 1.0, 1.0])
    plain = QVAE(Config(**SMALL))
    assert plain.kl_weight() == plain.config.kl_beta  # no warm-up: the plain float, as before


def test_a_warm_up_longer_than_the_run_is_refused():
    from qvae.config import ConfigError

    with pytest.raises(ConfigError, match=r"kl_warmup_epochs must be <= epochs \(3"):
        Config(epochs=3, kl_warmup_epochs=4)
    with pytest.raises(ConfigError, match="iw_samples"):
        Config(iw_samples=-1)
