"""Importance-weighted test negative log-likelihood (Burda et al. 2016), the literature's number.

For each test image x, with K proposals from the encoder,

    log p(x) ~ log (1/K) sum_k w_k,   log w_k = log p(x | zeta_k) + log p(z_k) - log q(z_k | x)

where for the Boltzmann prior z_k ~ q(z|x) (factorial Bernoulli), zeta_k ~ r(zeta|z_k) and
log p(z) = -E(z) - log Z; the smoothing r(zeta|z) is shared by proposal and model and cancels.
For the Gaussian VAE z_k ~ N(mu, sigma^2) and log p(z) is the exact N(0, I) density. The
estimate is a stochastic lower bound on log p(x) that tightens as K grows (so with the exact log Z
the reported NLL is an upper bound in expectation); K = 1 gives the ELBO.

Direction with an AIS log Z: AIS estimates Z without bias, so log Z is underestimated on average
(Jensen), every log p(z) is then too high and the NLL too low. With AIS the figure is therefore no
longer a bound in either direction: the K-sample gap pushes it up, the log Z error pulls it down.
`test_nll_log_z_stderr` beside it says how large the second can be.

log Z: the prior's own (`model.latent_prior.log_z`, see qvae/priors/log_z.py): exact enumeration
for small RBMs, otherwise AIS. Its error shifts every image's estimate by the same amount, so it
does not average out over images: the reported standard error is sqrt(se_images^2 + se_logZ^2),
se_images being the standard error of the mean over images.

Quantum prior (Γ > 0, `latent_prior.is_bound`): the model's p(z) = <z|e^{-H}|z> / Z_gamma is not tractable.
Since <z|e^{-H}|z> >= e^{-<z|H|z>} = e^{-E(z)} (Jensen over H's spectrum in the state |z>), using
log p(z) ~ -E(z) - log Z_gamma under-estimates every weight: the result is an upper bound on the
NLL, reported as `test_nll_bound`.

Protocol vs DVAE# (Vahdat et al. 2018): they report log-likelihood with K = 4000 importance
samples on statically binarised MNIST and log Z by AIS with 1000 inverse temperatures. Our
defaults (`DEFAULT_*` below) match those on a GPU; on a CPU use fewer samples and images. Numbers
are only comparable with theirs for binarize=static/dynamic models: with binarize=none the
"likelihood" is the Bernoulli cross-entropy on grey levels (comparable between our models, not
with the literature).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from qvae import heap
from qvae.data.mnist import model_inputs
from qvae.metrics.names import split_name
from qvae.priors.build import LatentPrior
from qvae.priors.log_z import check_log_z_method
from qvae.stopping import raise_if_interrupted

# DVAE#'s protocol (GPU defaults)
DEFAULT_SAMPLES, DEFAULT_AIS_BETAS, DEFAULT_AIS_CHAINS = 4000, 1000, 1000
ROWS_PER_CHUNK = 2**14  # images x samples decoded at once (about 150 MB for the default widths)
RELEASE_EVERY_BATCHES = 16  # freed heap memory back to the OS (qvae/heap.py): 1% of the time (benchmarks/nll_memory.py)


@dataclass(frozen=True)
class NllResult:
    """An importance-weighted test NLL (nats per image) and how it was obtained."""

    nll: float  # mean over images of -log p(x) estimates
    stderr: float  # sqrt(se_images^2 + log_z_stderr^2)
    stderr_images: float  # standard error of the mean over images
    samples: int  # K importance samples per image
    images: int
    log_z: float | None  # None for the Gaussian prior
    log_z_stderr: float
    log_z_method: str  # as the run param: exact | ais | ais_trotter_P<slices> | none
    bound: bool  # True: an upper bound on the NLL (quantum prior), not an estimate of it
    method: str  # a one-line description of the protocol

    split: str = "test"  # the images it was computed on: test (the final score) or validation (tuning)

    @property
    def name(self) -> str:
        """test_nll / val_nll, or test_nll_bound / val_nll_bound for a quantum prior."""
        return split_name("test_nll_bound" if self.bound else "test_nll", self.split)

    def metrics(self) -> dict[str, float]:
        """`<name>`, its `_stderr`, and the log Z it used with that estimate's standard error
        (`<name>_log_z`, `<name>_log_z_stderr`; 0 when exact) when the prior has one."""
        out = {self.name: self.nll, f"{self.name}_stderr": self.stderr}
        if self.log_z is not None:
            out.update({f"{self.name}_log_z": self.log_z, f"{self.name}_log_z_stderr": self.log_z_stderr})
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name}


# ---------------------------------------------------------------- log Z of the prior
@torch.no_grad()
def prior_log_z(model: Any, ais_chains: int = DEFAULT_AIS_CHAINS, ais_betas: int = DEFAULT_AIS_BETAS,
                generator: torch.Generator | None = None, method: str = "auto") -> tuple[float, float, str]:
    """(log Z, its standard error, how) of the model's prior; log Tr e^{-H} for a quantum prior.

    `method`: auto (the training loop's rule, the prior's `log_z_method()`: exact when small enough,
    else AIS with `ais_chains` x `ais_betas`), exact, or ais (AIS even where enumeration is possible).
    """
    check_log_z_method(method)
    return model.latent_prior.log_z(ais_chains, ais_betas, generator, method)


# ---------------------------------------------------------------- importance weights
def proposals(model: Any, x: Tensor, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """K encoder proposals per image for a Boltzmann-prior QVAE: z ~ q(z|x) (K, B, n), then zeta ~
    r(zeta|z); returns z, log p(x|zeta) and log q(z|x), each of the last two (K, B)."""
    logits = model.encode(x)  # (B, n)
    probs = torch.sigmoid(logits).expand(k, *logits.shape)
    u = torch.rand(probs.shape, generator=generator, device=x.device, dtype=x.dtype)
    z = (u < probs).to(x.dtype)  # (K, B, n)
    zeta = model.smoothing.sample_given_z(z, generator)
    x_logits = model.decode(zeta)
    log_px = -F.binary_cross_entropy_with_logits(x_logits, x.expand_as(x_logits), reduction="none").sum(-1)
    log_q = -F.binary_cross_entropy_with_logits(logits.expand_as(z), z, reduction="none").sum(-1)
    return z, log_px, log_q


def boltzmann_log_weights(model: Any, x: Tensor, k: int, log_z: float,
                          generator: torch.Generator | None = None) -> Tensor:
    """log w of K proposals per image for the (R/Q)BM-prior QVAE, log p(z) = -E(z) - log Z: a (K, B) tensor."""
    z, log_px, log_q = proposals(model, x, k, generator)
    log_pz = -model.prior.energy(z) - log_z
    return log_px + log_pz - log_q


@dataclass(frozen=True)
class ClampedPathIntegral:
    """How the true QBM weights get log p_P(z): AIS of the path integral clamped at z (qbm_likelihood.py)."""

    chains: int
    betas: int


def log_weights(model: Any, x: Tensor, k: int, log_z: float | None,
                generator: torch.Generator | None = None, clamped: ClampedPathIntegral | None = None) -> Tensor:
    """(K, B) log importance weights; models with their own `log_importance_weights` use it. With
    `clamped` (a quantum prior) log p(z) is the path-integral estimate of log p_P(z), not the bound."""
    own = getattr(model, "log_importance_weights", None)
    if own is not None:
        return own(x, k, generator)
    if log_z is None:
        raise ValueError("a Boltzmann-prior model needs log Z for its importance weights")
    if clamped is not None:
        return quantum_log_weights(model, x, k, log_z, clamped, generator)
    return boltzmann_log_weights(model, x, k, log_z, generator)


def quantum_log_weights(model: Any, x: Tensor, k: int, log_z: float, clamped: ClampedPathIntegral,
                        generator: torch.Generator | None = None) -> Tensor:
    """log w of K proposals per image with log p_P(z) = log <z|(D T)^P|z> - `log_z` (log Tr (D T)^P)
    estimated per proposal: an unbiased estimate of each w, so log mean_k w stays a stochastic lower
    bound on log p_P(x), as with an exact prior."""
    from qvae.priors.qbm_likelihood import estimate_log_diagonal

    z, log_px, log_q = proposals(model, x, k, generator)
    prior = model.latent_prior
    log_diagonal, _ = estimate_log_diagonal(model.prior, z.reshape(-1, z.shape[-1]), prior.gamma, prior.slices,
                                            clamped.chains, clamped.betas, generator)
    return log_px + log_diagonal.reshape(z.shape[:2]).to(log_px.dtype) - log_z - log_q


@torch.no_grad()
def log_likelihoods(model: Any, x: Tensor, samples: int, log_z: float | None,
                    generator: torch.Generator | None = None, progress: bool = False,
                    clamped: ClampedPathIntegral | None = None, release_every: int = RELEASE_EVERY_BATCHES) -> Tensor:
    """Per-image IW estimates of log p(x) (float64, shape (N,)), batched to bound memory; every
    `release_every` batches (0: never) the C heap's freed memory goes back to the OS."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    rows = ROWS_PER_CHUNK if clamped is None else max(1, ROWS_PER_CHUNK // clamped.chains)  # AIS rows per z
    k_chunk = max(1, min(samples, rows))
    batch = max(1, rows // k_chunk)
    out = []
    for index, start in enumerate(tqdm(range(0, len(x), batch), desc="test NLL", disable=not progress, leave=False)):
        raise_if_interrupted()
        if release_every and index % release_every == 0:
            heap.release_freed_memory()  # else glibc keeps what the batches freed, GBs over a long run
        xb = x[start:start + batch]
        parts = []
        for k0 in range(0, samples, k_chunk):
            k = min(k_chunk, samples - k0)
            parts.append(torch.logsumexp(log_weights(model, xb, k, log_z, generator, clamped).double(), 0))
        out.append(torch.logsumexp(torch.stack(parts), 0) - math.log(samples))
    return torch.cat(out)


@torch.no_grad()
def test_nll(model: Any, x: Tensor, *, samples: int = DEFAULT_SAMPLES, ais_chains: int = DEFAULT_AIS_CHAINS,
             ais_betas: int = DEFAULT_AIS_BETAS, seed: int = 0, log_z_method: str = "auto",
             progress: bool = False, split: str = "test", clamped_chains: int = 0,
             clamped_betas: int = 100, log_z: tuple[float, float, str] | None = None) -> NllResult:
    """The importance-weighted NLL of `model` on the grey images `x` of `split` (moved to the model's
    device and, for a binarised model, binarised by `model_inputs`' fixed rule).

    `samples` is K; `ais_*` set the AIS log Z estimate when the prior is too large to enumerate.
    For a quantum prior, `clamped_chains` > 0 estimates the model's own NLL (not the bound): each
    proposal's log p_P(z) by AIS of the path integral clamped at z (`clamped_chains` x
    `clamped_betas` per z, qvae/priors/qbm_likelihood.py), normalised by log Tr (D T)^P (exact for
    small priors, else path-integral AIS). `log_z` (value, standard error, method), when this model's
    log Z was already estimated (e.g. by the bound's call), is used instead of estimating it again.
    Deterministic given `seed` on one device.
    """
    if len(x) < 2:
        raise ValueError(f"need at least 2 test images for a standard error, got {len(x)}")
    was_training = model.training
    model.eval()
    device = model.train_bias.device
    x = model_inputs(x.to(device), getattr(model.config, "binarize", "none"))
    generator = torch.Generator(device=device).manual_seed(seed)
    prior: LatentPrior = model.latent_prior
    if not prior.needs_log_z:  # the Gaussian: normalised, its weights need no log Z
        log_z, log_z_err, how = None, 0.0, "none"
    elif log_z is not None:
        log_z, log_z_err, how = log_z
    else:
        log_z, log_z_err, how = prior_log_z(model, ais_chains, ais_betas, generator, log_z_method)
    clamped = None
    if prior.is_bound and clamped_chains > 0:
        clamped = ClampedPathIntegral(clamped_chains, clamped_betas)
        if how == "exact":  # the P-slice normaliser, so that p_P(z) sums to one
            from qvae.priors.qbm_exact import exact_trotter_log_partition

            log_z, how = exact_trotter_log_partition(model.prior, prior.gamma, prior.slices), f"exact_P{prior.slices}"
    ll = log_likelihoods(model, x, samples, log_z, generator, progress, clamped)
    model.train(was_training)
    se_images = (ll.std() / math.sqrt(len(ll))).item()
    bound = prior.is_bound and clamped is None
    name = prior.log_z_symbol
    log_z_text = ("" if how == "none" else f", exact {name}" if how == "exact"
                  else f", exact log Tr (D T)^P ({how})" if how.startswith("exact_P")
                  else f", AIS {name} ({how}, {ais_chains} chains x {ais_betas} betas)")
    method = (f"importance-weighted, K={samples} per image on {len(x)} {split} images{log_z_text}"
              + ("; upper bound: log p(z) >= -E(z) - log Z_gamma" if bound else "")
              + (f"; log p_P(z) by the path integral clamped at z (AIS, {clamped_chains} chains x {clamped_betas} "
                 f"betas per z, P={prior.slices}: Trotter error O((gamma/P)^2))" if clamped else ""))
    return NllResult(nll=-ll.mean().item(), stderr=math.sqrt(se_images**2 + log_z_err**2), stderr_images=se_images,
                     samples=samples, images=len(x), log_z=log_z, log_z_stderr=log_z_err, log_z_method=how,
                     bound=bound, method=method, split=split)


test_nll.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported into one
