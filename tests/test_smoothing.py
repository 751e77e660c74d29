"""The overlapping exponential relaxation against closed forms and numerical truths."""

import math

import pytest
import torch

from qvae.models.smoothing import OverlappingExponential


@pytest.mark.parametrize("beta", [1.0, 10.0, 40.0])
@pytest.mark.parametrize("q", [0.0, 0.2, 0.5, 0.97, 1.0])
def test_mixture_density_integrates_to_one_and_matches_cdf(beta, q):
    s = OverlappingExponential(beta)
    zeta = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    pdf = s.pdf(zeta, torch.tensor(q, dtype=torch.float64))
    assert torch.trapezoid(pdf, zeta).item() == pytest.approx(1.0, abs=1e-6)
    # the CDF is the integral of the pdf (cumulative trapezoid), everywhere on [0, 1]
    cumulative = torch.cumulative_trapezoid(pdf, zeta)
    cdf = s.cdf(zeta[1:], torch.tensor(q, dtype=torch.float64))
    assert torch.allclose(cumulative, cdf, atol=1e-6)


def test_components_are_mirror_images_and_closed_form():
    beta = 10.0
    s = OverlappingExponential(beta)
    zeta = torch.rand(100, dtype=torch.float64)
    expected = beta * torch.exp(-beta * zeta) / (1 - math.exp(-beta))
    assert torch.allclose(s.pdf0(zeta), expected)
    assert torch.allclose(s.pdf1(zeta), s.pdf0(1 - zeta))


@pytest.mark.parametrize("q", [1e-6, 0.1, 0.5, 0.9, 1 - 1e-6])
def test_inverse_cdf_inverts_cdf(q):
    s = OverlappingExponential(10.0)
    rho = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    qt = torch.full_like(rho, q)
    assert torch.allclose(s.cdf(s.inverse_cdf(rho, qt), qt), rho, atol=1e-9)


@pytest.mark.parametrize("q", [0.05, 0.5, 0.8])
def test_rsample_follows_the_mixture_cdf(q):
    """Kolmogorov-Smirnov: 200k samples, critical value 1.95/sqrt(n) at alpha = 0.001."""
    s = OverlappingExponential(10.0)
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    logits = torch.full((n,), math.log(q / (1 - q)), dtype=torch.float64)
    zeta, _ = torch.sort(s.rsample(logits, gen))
    cdf = s.cdf(zeta, torch.full_like(zeta, q))
    ecdf_hi = torch.arange(1, n + 1, dtype=torch.float64) / n
    ks = torch.maximum(ecdf_hi - cdf, cdf - (ecdf_hi - 1 / n)).max().item()
    assert ks < 1.95 / math.sqrt(n)


def test_sample_given_z_lands_near_z():
    s = OverlappingExponential(10.0)
    gen = torch.Generator().manual_seed(1)
    z = torch.tensor([0.0, 1.0]).repeat(50_000)
    zeta = s.sample_given_z(z, gen)
    assert zeta[z == 0].mean().item() == pytest.approx(0.1 - 10 * math.exp(-10) / (1 - math.exp(-10)), abs=2e-3)
    assert zeta[z == 1].mean().item() == pytest.approx(1 - zeta[z == 0].mean().item(), abs=2e-3)


@pytest.mark.parametrize("beta", [2.0, 10.0, 30.0])
def test_implicit_gradient_matches_finite_difference_of_inverse_cdf(beta):
    """d zeta / d logit from rsample equals d F^-1(rho; q) / d logit at rho = F(zeta; q)."""
    s = OverlappingExponential(beta)
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(500, dtype=torch.float64, generator=gen) * 2).requires_grad_()
    zeta = s.rsample(logits, gen)
    (grad,) = torch.autograd.grad(zeta.sum(), logits)
    with torch.no_grad():
        rho = s.cdf(zeta, torch.sigmoid(logits))
        eps = 1e-5
        plus = s.inverse_cdf(rho, torch.sigmoid(logits + eps))
        minus = s.inverse_cdf(rho, torch.sigmoid(logits - eps))
        finite_difference = (plus - minus) / (2 * eps)
    # float64 finite differences of the closed form lose ~4 digits at beta=30 (u = e^{beta zeta})
    assert torch.allclose(grad, finite_difference, rtol=1e-3, atol=1e-7)


def test_rejects_bad_beta():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="dist_beta"):
            OverlappingExponential(bad)


@pytest.mark.parametrize("beta", [1.0, 10.0, 40.0])
def test_log_mixture_pdf_is_the_log_of_the_mixture_at_any_logit(beta):
    s = OverlappingExponential(beta)
    zeta = torch.linspace(0, 1, 101, dtype=torch.float64)[:, None]
    logits = torch.tensor([-8.0, -2.0, 0.0, 1.5, 8.0], dtype=torch.float64)
    expected = torch.log(s.pdf(zeta, torch.sigmoid(logits)))
    assert torch.allclose(s.log_mixture_pdf(zeta, logits), expected, atol=1e-9)
    # saturated logits, where 1 - sigmoid(l) cancels: against sigmoid(-l) r0 + sigmoid(l) r1, which does not
    extreme = torch.tensor([-30.0, 30.0], dtype=torch.float64)
    expected = torch.log(torch.sigmoid(-extreme) * s.pdf0(zeta) + torch.sigmoid(extreme) * s.pdf1(zeta))
    assert torch.allclose(s.log_mixture_pdf(zeta, extreme), expected, atol=1e-9)
    assert torch.allclose(s.log_pdf0(zeta), torch.log(s.pdf0(zeta)))
    assert torch.allclose(s.log_ratio(zeta), torch.log(s.pdf1(zeta)) - torch.log(s.pdf0(zeta)))
