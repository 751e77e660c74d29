"""Total-variation helpers shared by the sampler tests."""

from __future__ import annotations

import math

import torch

from qvae.priors.rbm import state_index


def empirical_tv(samples: torch.Tensor, exact: torch.Tensor) -> float:
    """TV distance between the histogram of binary rows `samples` and the distribution `exact`."""
    counts = torch.bincount(state_index(samples), minlength=exact.numel()).double()
    return 0.5 * (counts / counts.sum() - exact).abs().sum().item()


def tv_bound(num_states: int, num_samples: int, delta: float = 1e-6) -> float:
    """A bound the TV of N iid samples exceeds with probability < delta.

    E[TV] <= 1/2 sum_k sqrt(p_k / N) <= 1/2 sqrt(K / N) (Jensen, then Cauchy-Schwarz), and TV is a
    function of N samples with bounded differences 1/N, so by McDiarmid it exceeds its mean by
    more than sqrt(ln(1/delta) / (2N)) with probability < delta.
    """
    return 0.5 * math.sqrt(num_states / num_samples) + math.sqrt(math.log(1 / delta) / (2 * num_samples))
