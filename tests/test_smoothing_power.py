"""DVAE#'s power-function relaxation against closed forms, a bisection-inverted CDF and its own samples."""

import math

import pytest
import torch

from qvae.config import Config, ConfigError
from qvae.models.smoothing import OverlappingPower, make_smoothing

F64 = dict(dtype=torch.float64)


def inverse_mixture_cdf(s: OverlappingPower, rho: torch.Tensor, q: torch.Tensor, iterations: int = 200) -> torch.Tensor:
    """F^-1(rho; q) by bisection on the exact CDF (1-q) zeta^lam + q (1 - (1-zeta)^lam): an independent route."""
    lo, hi = torch.zeros_like(rho), torch.ones_like(rho)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        below = (1 - q) * mid**s.lam + q * (1 - (1 - mid) ** s.lam) < rho
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("beta", [2.0, 10.0, 40.0])
def test_densities_are_the_power_functions_away_from_the_ends(beta):
    s, lam = OverlappingPower(beta), 1 / beta
    zeta = torch.linspace(1e-3, 1 - 1e-3, 999, **F64)
    assert torch.allclose(s.pdf0(zeta), lam * zeta ** (lam - 1), rtol=2e-4)  # + EPS shifts it by < 1e-4 here
    assert torch.allclose(s.pdf1(zeta), lam * (1 - zeta) ** (lam - 1), rtol=2e-4)
    assert torch.allclose(s.log_pdf0(zeta), torch.log(s.pdf0(zeta)))
    assert torch.allclose(s.log_ratio(zeta), torch.log(s.pdf1(zeta)) - torch.log(s.pdf0(zeta)))
    logits = torch.tensor([-30.0, -2.0, 0.0, 1.5, 30.0], **F64)
    expected = torch.log(torch.sigmoid(-logits) * s.pdf0(zeta[:, None]) + torch.sigmoid(logits) * s.pdf1(zeta[:, None]))
    assert torch.allclose(s.log_mixture_pdf(zeta[:, None], logits), expected, atol=1e-9)
    assert torch.allclose(s.cdf0(zeta), zeta**lam) and torch.allclose(s.cdf1(zeta), 1 - (1 - zeta) ** lam)


def test_every_log_density_stays_finite_at_the_ends_in_float32():
    s = OverlappingPower(40.0)
    zeta = torch.tensor([0.0, 1e-30, 0.5, 1 - 1e-7, 1.0])
    for values in (s.log_pdf0(zeta), s.log_ratio(zeta), s.log_mixture_pdf(zeta, torch.zeros(5))):
        assert torch.isfinite(values).all()
    assert s.log_ratio(zeta).abs().max() <= (1 - 1 / 40) * math.log(1 / s.EPS) + 1e-3


@pytest.mark.parametrize("q", [0.05, 0.5, 0.8])
def test_rsample_follows_the_mixture_cdf(q):
    """Kolmogorov-Smirnov against the exact CDF: 200k samples, critical value 1.95/sqrt(n) at alpha = 0.001.
    Over [0, 1): draws of z = 1 within 1e-16 of 1 are exactly 1.0 in float64, an atom the exact CDF lacks."""
    s = OverlappingPower(10.0)
    n = 200_000
    logits = torch.full((n,), math.log(q / (1 - q)), **F64)
    zeta, _ = torch.sort(s.rsample(logits, torch.Generator().manual_seed(0)))
    cdf = (1 - q) * zeta**0.1 + q * (1 - (1 - zeta) ** 0.1)
    below = torch.searchsorted(zeta, zeta, side="left") / n  # the empirical CDF just below each draw
    above = torch.searchsorted(zeta, zeta, side="right") / n  # and at it
    inside = zeta < 1
    assert torch.maximum(above - cdf, cdf - below)[inside].max().item() < 1.95 / math.sqrt(n)


def test_two_thirds_of_the_draws_lie_within_eps_of_z_at_beta_40():
    """The module's claim: P(zeta < 1e-7 | z = 0) = (1e-7)^(1/40) = 0.668."""
    s = OverlappingPower(40.0)
    zeta = s.sample_given_z(torch.zeros(400_000, **F64), torch.Generator().manual_seed(3))
    assert (zeta < 1e-7).double().mean().item() == pytest.approx(1e-7 ** (1 / 40), abs=3e-3)


@pytest.mark.parametrize("beta", [2.0, 10.0, 30.0])
def test_implicit_gradient_matches_the_bisection_inverse_cdf(beta):
    """d zeta / d logit from rsample equals d F^-1(rho; q) / d logit at rho = F(zeta; q), F^-1 by bisection."""
    s = OverlappingPower(beta)
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(400, generator=gen, **F64) * 2).requires_grad_()
    zeta = s.rsample(logits, gen)
    (grad,) = torch.autograd.grad(zeta.sum(), logits)
    with torch.no_grad():
        q = torch.sigmoid(logits)
        rho = s.cdf(zeta, q)
        inside = (zeta > 1e-3) & (zeta < 1 - 1e-3)  # where the densities' EPS shifts them by < 1e-4
        h = 1e-4
        plus = inverse_mixture_cdf(s, rho, torch.sigmoid(logits + h))
        minus = inverse_mixture_cdf(s, rho, torch.sigmoid(logits - h))
        finite_difference = (plus - minus) / (2 * h)
    assert inside.sum() > 30
    assert torch.allclose(grad[inside], finite_difference[inside], rtol=1e-3, atol=1e-8)
    # within 1e-3 of an end the gradient nearly vanishes, as the exact one does (EPS changes it by < 1e-5 there)
    assert torch.allclose(grad[~inside], finite_difference[~inside], atol=1e-5)


def test_no_draw_is_subnormal():
    """Subnormal floats slow every later operation on x86 CPUs (the decoder's matmul 10x): draws below the
    smallest normal float are 0, which at beta = 40 is 11 % of the z = 0 draws (rho < tiny^(1/40))."""
    s = OverlappingPower(40.0)
    zeta = s.sample_given_z(torch.zeros(100_000), torch.Generator().manual_seed(4))
    tiny = torch.finfo(torch.float32).tiny
    assert not ((zeta > 0) & (zeta < tiny)).any()
    assert (zeta == 0).float().mean().item() == pytest.approx(tiny ** (1 / 40), abs=5e-3)


def test_an_unknown_smoothing_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="exponential, power"):
        make_smoothing("gaussian", 10.0)
    with pytest.raises(ConfigError, match="smoothing"):
        Config(smoothing="gaussian")
    with pytest.raises(ValueError, match="dist_beta"):
        OverlappingPower(0.0)


@pytest.mark.parametrize("iw_samples", [0, 3])
def test_a_qvae_with_the_power_relaxation_trains(small_data, iw_samples):
    from qvae.train import train
    from tests.test_train import SMALL

    result = train(Config(epochs=2, smoothing="power", dist_beta=40.0, kl_beta=1.0, iw_samples=iw_samples, **SMALL),
                   small_data, progress=False)
    first, last = result.history
    assert all(math.isfinite(v) for v in last.values())
    assert last["val_cost"] < first["val_cost"] and last["val_elbo"] > first["val_elbo"]
