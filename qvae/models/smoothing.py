"""Overlapping relaxations of binary latents (DVAE++ / DVAE#): exponential and power-function.

Each binary z in {0, 1} is smoothed to a continuous zeta in [0, 1] by a density r(zeta | z=0) with
its mass near 0 and its mirror image r(zeta | z=1) = r(1 - zeta | z=0):

    exponential (DVAE++):    r(zeta | z=0) = beta * exp(-beta * zeta) / (1 - exp(-beta))
    power function (DVAE#):  r(zeta | z=0) = (1/beta) * zeta^(1/beta - 1)

With q = P(z=1 | x) the approximate posterior over zeta is the mixture
q(zeta) = (1-q) r(zeta|0) + q r(zeta|1). Both components overlap on [0, 1], so zeta is a smooth
function of q and gradients reach the encoder through the *implicit* reparameterisation
d zeta / d q = -(dF/dq) / (dF/dzeta) (DVAE# sec. 3.4), where F is the mixture's CDF. The decoder
only ever sees zeta, so the ELBO of the generative path z -> zeta -> x contains KL(q(z|x) || p(z))
exactly (the smoothing r(zeta|z) is shared by posterior and prior).

The power function is much sharper at the same beta (DVAE# uses beta 30-40): at beta = 40 two
thirds of its draws lie within 1e-7 of z, which float32 cannot tell from z itself. Its densities
are therefore evaluated at zeta + 1e-7 (and 1 - zeta + 1e-7), as DVAE#'s reference code does,
which keeps every log density finite; its CDF and samples are exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SMOOTHINGS = ("exponential", "power")


class OverlappingSmoothing:
    """The mixture of r(zeta|0) and its mirror image r(zeta|1): sampling with the implicit gradient,
    densities and CDFs. Subclasses give the component: pdf0, log_pdf0, log_ratio, cdf0, zeta_given_z."""

    beta: float

    def __init__(self, beta: float) -> None:
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
            raise ValueError(f"dist_beta must be a finite number > 0, got {beta!r}")
        self.beta = float(beta)

    # ---------------------------------------------------------------- one component (subclasses)
    def pdf0(self, zeta: Tensor) -> Tensor:
        """r(zeta | z=0)."""
        raise NotImplementedError

    def log_pdf0(self, zeta: Tensor) -> Tensor:
        """log r(zeta | z=0)."""
        raise NotImplementedError

    def log_ratio(self, zeta: Tensor) -> Tensor:
        """log r(zeta | z=1) - log r(zeta | z=0): the field zeta puts on z."""
        raise NotImplementedError

    def cdf0(self, zeta: Tensor) -> Tensor:
        """R(zeta | z=0), the component's CDF."""
        raise NotImplementedError

    def zeta_given_z(self, z: Tensor, rho: Tensor) -> Tensor:
        """The inverse CDF of r(zeta | z) at uniforms rho (elementwise)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- the mirrored component
    def pdf1(self, zeta: Tensor) -> Tensor:
        """r(zeta | z=1) = r(1 - zeta | z=0)."""
        return self.pdf0(1.0 - zeta)

    def cdf1(self, zeta: Tensor) -> Tensor:
        return 1.0 - self.cdf0(1.0 - zeta)

    def sample_given_z(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """zeta ~ r(zeta | z) by inverse CDF; used for generation from prior samples z."""
        rho = torch.rand(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return self.zeta_given_z(z, rho)

    # ---------------------------------------------------------------- the mixture
    def pdf(self, zeta: Tensor, q: Tensor) -> Tensor:
        """Mixture density (1-q) r(zeta|0) + q r(zeta|1)."""
        return (1.0 - q) * self.pdf0(zeta) + q * self.pdf1(zeta)

    def log_pdf(self, zeta: Tensor, q: Tensor) -> Tensor:
        return torch.log(self.pdf(zeta, q))

    def log_mixture_pdf(self, zeta: Tensor, logits: Tensor) -> Tensor:
        """log q(zeta | logits), q = sigmoid(logits), elementwise and stable at any logit."""
        log_r0 = self.log_pdf0(zeta)
        return torch.logaddexp(F.logsigmoid(-logits) + log_r0, F.logsigmoid(logits) + log_r0 + self.log_ratio(zeta))

    def cdf(self, zeta: Tensor, q: Tensor) -> Tensor:
        return (1.0 - q) * self.cdf0(zeta) + q * self.cdf1(zeta)

    def rsample(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """zeta ~ q(zeta | logits) with the implicit reparameterisation gradient to `logits`.

        Ancestral sampling (z ~ Bernoulli(q), then zeta ~ r(zeta|z)) is exact and numerically
        safe at any q; its gradient is dzeta/dq = (R0(zeta) - R1(zeta)) / pdf(zeta; q).
        """
        q = torch.sigmoid(logits)
        with torch.no_grad():
            u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
            z = (u < q).to(logits.dtype)
            zeta = self.sample_given_z(z, generator)
            dzeta_dq = (self.cdf0(zeta) - self.cdf1(zeta)) / self.pdf(zeta, q)
        if not logits.requires_grad:
            return zeta
        return zeta + dzeta_dq * (q - q.detach())


class OverlappingExponential(OverlappingSmoothing):
    """The mixture of two mirrored truncated exponentials on [0, 1], sharpness `beta`."""

    def __init__(self, beta: float) -> None:
        super().__init__(beta)
        # 1 - exp(-beta), computed without cancellation for small beta
        self._norm = -math.expm1(-self.beta)

    def pdf0(self, zeta: Tensor) -> Tensor:
        """r(zeta | z=0)."""
        return self.beta * torch.exp(-self.beta * zeta) / self._norm

    def log_pdf0(self, zeta: Tensor) -> Tensor:
        """log r(zeta | z=0), without the overflow of pdf0 for large beta."""
        return math.log(self.beta / self._norm) - self.beta * zeta

    def log_ratio(self, zeta: Tensor) -> Tensor:
        """log r(zeta | z=1) - log r(zeta | z=0) = beta (2 zeta - 1): the field zeta puts on z."""
        return self.beta * (2.0 * zeta - 1.0)

    def cdf0(self, zeta: Tensor) -> Tensor:
        return -torch.expm1(-self.beta * zeta) / self._norm

    def zeta_given_z(self, z: Tensor, rho: Tensor) -> Tensor:
        """The inverse CDF of r(zeta | z) at uniforms rho (elementwise)."""
        zeta0 = -torch.log1p(-rho * self._norm) / self.beta
        return torch.where(z > 0.5, 1.0 - zeta0, zeta0)

    def inverse_cdf(self, rho: Tensor, q: Tensor) -> Tensor:
        """Closed-form F^{-1}(rho; q): solve the quadratic in u = exp(beta * zeta).

        Differentiable in q by autograd; an independent route to the same gradient as
        `rsample`'s implicit one (used to check it).
        """
        a = q * math.exp(-self.beta)
        b = (1.0 - q) - a - rho * self._norm
        c_neg = 1.0 - q  # c = -(1 - q) <= 0, so the positive root is the one we need
        disc = torch.sqrt(b * b + 4.0 * a * c_neg)
        # two algebraically equal forms of the positive root; pick the cancellation-free one
        u = torch.where(b >= 0, 2.0 * c_neg / (b + disc), (disc - b) / (2.0 * a))
        return (torch.log(u) / self.beta).clamp(0.0, 1.0)


class OverlappingPower(OverlappingSmoothing):
    """The mixture of two mirrored power functions on [0, 1], r(zeta|0) = lam zeta^(lam - 1) with lam = 1/beta
    (DVAE#'s power-function smoothing); densities at zeta + EPS (see the module's docstring)."""

    EPS = 1e-7  # DVAE#'s: below it float32 cannot tell zeta from z, and the density would be infinite at z

    def __init__(self, beta: float) -> None:
        super().__init__(beta)
        self.lam = 1.0 / self.beta

    def pdf0(self, zeta: Tensor) -> Tensor:
        return self.lam * (zeta + self.EPS) ** (self.lam - 1.0)

    def log_pdf0(self, zeta: Tensor) -> Tensor:
        return math.log(self.lam) + (self.lam - 1.0) * torch.log(zeta + self.EPS)

    def log_ratio(self, zeta: Tensor) -> Tensor:
        """(lam - 1) (log(1 - zeta) - log(zeta)), each at + EPS: bounded by (1 - lam) log(1/EPS) ~ 16."""
        return (self.lam - 1.0) * (torch.log(1.0 - zeta + self.EPS) - torch.log(zeta + self.EPS))

    def cdf0(self, zeta: Tensor) -> Tensor:
        return zeta.clamp(0.0, 1.0) ** self.lam

    def zeta_given_z(self, z: Tensor, rho: Tensor) -> Tensor:
        zeta0 = rho**self.beta
        # below the smallest normal float, 0: subnormal inputs made the decoder's matmul 10x slower on x86 CPUs
        zeta0 = torch.where(zeta0 < torch.finfo(zeta0.dtype).tiny, 0.0, zeta0)
        return torch.where(z > 0.5, 1.0 - zeta0, zeta0)


def make_smoothing(kind: str, beta: float) -> OverlappingSmoothing:
    """The relaxation `kind` (one of SMOOTHINGS) with sharpness `beta` (config: smoothing, dist_beta)."""
    if kind == "exponential":
        return OverlappingExponential(beta)
    if kind == "power":
        return OverlappingPower(beta)
    raise ValueError(f"smoothing must be one of {', '.join(SMOOTHINGS)}, got {kind!r}")
