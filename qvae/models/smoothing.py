"""Overlapping exponential relaxation of binary latents (DVAE++ / DVAE#).

Each binary z in {0, 1} is smoothed to a continuous zeta in [0, 1]:

    r(zeta | z=0) = beta * exp(-beta * zeta) / (1 - exp(-beta))      (mass near 0)
    r(zeta | z=1) = r(1 - zeta | z=0)                                  (mass near 1)

With q = P(z=1 | x) the approximate posterior over zeta is the mixture
q(zeta) = (1-q) r(zeta|0) + q r(zeta|1). Both components overlap on [0, 1], so zeta is a smooth
function of q and gradients reach the encoder through the *implicit* reparameterisation
d zeta / d q = -(dF/dq) / (dF/dzeta) (DVAE# sec. 3.4), where F is the mixture's CDF. The decoder
only ever sees zeta, so the ELBO of the generative path z -> zeta -> x contains KL(q(z|x) || p(z))
exactly (the smoothing r(zeta|z) is shared by posterior and prior).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


class OverlappingExponential:
    """The mixture of two mirrored truncated exponentials on [0, 1], sharpness `beta`."""

    def __init__(self, beta: float) -> None:
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
            raise ValueError(f"dist_beta must be a finite number > 0, got {beta!r}")
        self.beta = float(beta)
        # 1 - exp(-beta), computed without cancellation for small beta
        self._norm = -math.expm1(-self.beta)

    # ---------------------------------------------------------------- the two components
    def pdf0(self, zeta: Tensor) -> Tensor:
        """r(zeta | z=0)."""
        return self.beta * torch.exp(-self.beta * zeta) / self._norm

    def pdf1(self, zeta: Tensor) -> Tensor:
        """r(zeta | z=1) = r(1 - zeta | z=0)."""
        return self.pdf0(1.0 - zeta)

    def log_pdf0(self, zeta: Tensor) -> Tensor:
        """log r(zeta | z=0), without the overflow of pdf0 for large beta."""
        return math.log(self.beta / self._norm) - self.beta * zeta

    def log_ratio(self, zeta: Tensor) -> Tensor:
        """log r(zeta | z=1) - log r(zeta | z=0) = beta (2 zeta - 1): the field zeta puts on z."""
        return self.beta * (2.0 * zeta - 1.0)

    def cdf0(self, zeta: Tensor) -> Tensor:
        return -torch.expm1(-self.beta * zeta) / self._norm

    def cdf1(self, zeta: Tensor) -> Tensor:
        return 1.0 - self.cdf0(1.0 - zeta)

    def sample_given_z(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """zeta ~ r(zeta | z) by inverse CDF; used for generation from prior samples z."""
        rho = torch.rand(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return self.zeta_given_z(z, rho)

    def zeta_given_z(self, z: Tensor, rho: Tensor) -> Tensor:
        """The inverse CDF of r(zeta | z) at uniforms rho (elementwise)."""
        zeta0 = -torch.log1p(-rho * self._norm) / self.beta
        return torch.where(z > 0.5, 1.0 - zeta0, zeta0)

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
