"""The importance-weighted bound (IWAE, Burda et al. 2015): the training objective both models offer
besides the ELBO (`iw_samples` >= 1), and DVAE#'s relaxed Boltzmann prior that makes it trainable
with binary latents (Vahdat et al. 2018).

With k proposals h_i ~ q(h | x) per image and log weights log w_i = log p(x, h_i) - log q(h_i | x),

    L_k = E[log (1/k) sum_i w_i]  <=  log p(x),   rising with k (k = 1: the single-sample ELBO).

Its gradient, sum_i softmax(log w)_i grad log w_i, is plain autograd through the log-sum-exp, so
a model only has to build log w with reparameterised proposals.

A QVAE's proposals are the smoothed zeta (reparameterisable), so its weights need the prior's
marginal density p(zeta) = sum_z p(z) r(zeta | z), which no one can sum for 128 + 128 units.
`relaxed_log_prior` bounds it from below by mean field, as DVAE# does: log sum_z e^{-E(z)} r(zeta|z)
>= max over factorial m of E_m[-E(z) + log r(zeta|z)] + H(m), so every weight errs low and L_k
stays a lower bound on log p(x). Its gradient holds m fixed (exact at the fixed point, where the
bound is stationary in m); log Z is left out here and enters the loss through the negative phase.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from qvae.models.smoothing import OverlappingSmoothing
from qvae.priors.rbm import RBM

# DVAE#'s, and config.mean_field_iterations' default. A sharp relaxation's field (|log r1/r0| ~ 12 nats on average
# at power beta = 30) dominates a trained RBM's couplings, so two updates already reach the fixed point to ~1e-5
# nats (docs/results.md); each update costs two (k B, 128) x (128, 128) products
MEAN_FIELD_ITERATIONS = 5


def iw_bound(log_weights: Tensor) -> Tensor:
    """log (1/k) sum_i w_i over the first dimension of (k, B) log weights: the bound of each image."""
    return torch.logsumexp(log_weights, 0) - math.log(log_weights.shape[0])


def mean_field(rbm: RBM, field: Tensor, iterations: int = MEAN_FIELD_ITERATIONS) -> Tensor:
    """Logits of the factorial m that (locally) maximises E_m[-E(z) + field . z] + H(m), by alternating
    layer updates from m = 1/2 (no gradient: the bound is stationary in m)."""
    if iterations < 1:
        raise ValueError(f"mean-field iterations must be >= 1, got {iterations}")
    with torch.no_grad():
        field_v, field_h = rbm.split(field)
        mean_v = torch.full_like(field_v, 0.5)
        for _ in range(iterations):
            logits_h = mean_v @ rbm.weight + rbm.hidden_bias + field_h
            logits_v = torch.sigmoid(logits_h) @ rbm.weight.t() + rbm.visible_bias + field_v
            mean_v = torch.sigmoid(logits_v)
        logits_h = mean_v @ rbm.weight + rbm.hidden_bias + field_h
        return torch.cat([logits_v, logits_h], -1)


def relaxed_log_prior(rbm: RBM, smoothing: OverlappingSmoothing, zeta: Tensor,
                      iterations: int = MEAN_FIELD_ITERATIONS) -> Tensor:
    """A lower bound on log sum_z e^{-E(z)} r(zeta | z) per row (log p(zeta) + log Z), by mean field.

    The value is the mean-field bound; the gradient (to the RBM and, through zeta, the encoder) is
    that of E_m[-E(z) + log r(zeta|z)] at the fixed point m.
    """
    field = smoothing.log_ratio(zeta)
    logits = mean_field(rbm, field.detach(), iterations)
    m = torch.sigmoid(logits)
    entropy = F.binary_cross_entropy_with_logits(logits, m, reduction="none").sum(-1)
    expected = -rbm.energy(m) + (m * field + smoothing.log_pdf0(zeta)).sum(-1)
    return expected + entropy
