"""The QVAE: MLP encoder, overlapping (exponential or power-function) smoothing, RBM prior, MLP decoder.

Generative path: z ~ p(z) (RBM) -> zeta ~ r(zeta|z) -> x ~ Bernoulli(sigmoid(decoder(zeta) + b)).
Inference: q(z|x) factorial Bernoulli with logits from the encoder; zeta ~ q(zeta|x) by the
implicit reparameterisation (see smoothing.py).

Per example, with E_q the expectation under q(z|x):

    cost         = -log p(x | zeta)                     (one-sample reconstruction term)
    kl           = E_q[E(z)] - H(q) + log Z             = KL(q(z|x) || p(z))   exactly
    elbo         = -cost - kl

log Z of a 128x128 RBM is intractable, so the forward pass returns `kl_unnormalized` =
E_q[E(z)] - H(q) (= kl - log Z); `kl`/`elbo` are completed by adding an estimate of log Z
(exact for small RBMs, AIS otherwise). What is optimised is the surrogate

    loss = cost + kl_beta * kl_surrogate + wd_loss,   kl_surrogate = E_q[E(z)] - H(q) - mean E(z-)

with z- negative-phase samples from the sampler (no gradient through them): its gradient equals
the gradient of cost + kl_beta * kl, because d log Z / d theta = -E_p[dE/dtheta]. Its *value* is
not the KL (it equals KL - H(p) in expectation), which is why it carries its own name.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qvae.config import Config
from qvae.models.importance import iw_bound, relaxed_log_prior
from qvae.models.smoothing import make_smoothing
from qvae.priors.boltzmann import QBMPrior, RBMPrior
from qvae.priors.build import make_prior
from qvae.priors.rbm import RBM
from qvae.priors.samplers import Sampler

SEED_STRIDE = 2**32
MAX_REQUEST_SEED = 2**31 - 1


def image_seeds(seed: int, n: int) -> list[int]:
    """Per-image seeds of a request for n images with `seed`: seed * 2^32 + i.

    Requests with different seeds never share an image seed, and request seed 0 asks for image
    seeds 0..n-1 (the images the main job's FID was computed on).
    """
    if not 0 <= seed <= MAX_REQUEST_SEED:
        raise ValueError(f"seed must be in 0..{MAX_REQUEST_SEED}, got {seed}")
    if not 0 <= n <= SEED_STRIDE:
        raise ValueError(f"number of images must be in 0..{SEED_STRIDE}, got {n}")
    return [seed * SEED_STRIDE + i for i in range(n)]


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU,
}


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers with `activation` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def encoder_decoder(config: Config, encoder_out: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The encoder (input to `encoder_out` logits or moments) and decoder (latent to pixel logits), each with
    `hidden_layers` hidden layers of width `hidden_dim`: both priors share this architecture."""
    c = config
    hidden = [c.hidden_dim] * c.hidden_layers
    return (mlp([c.input_dim, *hidden, encoder_out], c.activation),
            mlp([c.latent_dim, *hidden, c.input_dim], c.activation))


def bernoulli_entropy(logits: Tensor) -> Tensor:
    """Entropy of Bernoulli(sigmoid(logits)), elementwise, stable for large |logits|."""
    return F.binary_cross_entropy_with_logits(logits, torch.sigmoid(logits), reduction="none")


class CentredData(nn.Module):
    """What every model here shares: the training mean centres the encoder's input, and its logit
    is the decoder's output bias (so an untrained decoder predicts the mean image); and the KL's
    weight in the loss, kl_beta, ramped up from 0 during a KL warm-up (`kl_scale`, set by the
    training loop in place, so that a captured CUDA graph reads each step's value)."""

    def __init__(self, input_dim: int, data_mean: Tensor | None = None, kl_beta: float = 1.0,
                 kl_warmup: bool = False) -> None:
        super().__init__()
        self.register_buffer("data_mean", torch.zeros(input_dim))
        self.register_buffer("train_bias", torch.zeros(input_dim))
        self.register_buffer("kl_scale", torch.ones(()), persistent=False)  # not in checkpoints: set per step
        self.kl_beta, self.kl_warmup = kl_beta, kl_warmup
        if data_mean is not None:
            self.set_data_mean(data_mean)

    def kl_weight(self) -> Tensor | float:
        """kl_beta, times the warm-up's current scale in (0, 1] when the run has a warm-up."""
        return self.kl_beta * self.kl_scale if self.kl_warmup else self.kl_beta

    @torch.no_grad()
    def set_data_mean(self, mean: Tensor) -> None:
        mean = mean.reshape(-1).to(self.data_mean)
        if mean.numel() != self.data_mean.numel():
            raise ValueError(f"data mean has {mean.numel()} values, expected input_dim={self.data_mean.numel()}")
        self.data_mean.copy_(mean)
        self.train_bias.copy_(torch.logit(mean.clamp(0.001, 0.999)))


class QVAE(CentredData):
    """A VAE with binary latents and a Boltzmann prior: the RBM, or the QBM when config.gamma > 0.

    `prior` is the `RBM` module holding the trained parameters (its state-dict keys are the
    checkpoints'); `latent_prior` is the prior object wrapping it (`RBMPrior` or `QBMPrior`), which
    the model, the training loop and the metrics ask for sampling, log Z and what is a bound.

    The QBM's transverse field Gamma is fixed per run (a hyperparameter); only the diagonal
    parameters (the RBM's b and W) are trained. The objective is then the Q-ELBO of Khoshaman et
    al. (2018): the positive phase uses the classical energy E(z) of the encoder's states, since
    -log p_Gamma(z) <= E(z) + log Z_Gamma (<z|e^{-H}|z> >= e^{-E(z)}), and the negative phase uses
    QBM samples, whose mean dE/dtheta is exactly d log Z_Gamma / dtheta. So `kl_unnormalized`
    + log Z_Gamma is an upper bound on the KL, and -cost minus it a lower bound on the ELBO.
    """

    def __init__(self, config: Config, data_mean: Tensor | None = None) -> None:
        super().__init__(config.input_dim, data_mean, config.kl_beta, config.kl_warmup_epochs > 0)
        self.config = config
        c = config
        self.encoder, self.decoder = encoder_decoder(c, c.latent_dim)
        self.prior = RBM(c.num_visible, c.num_hidden)
        self.smoothing = make_smoothing(c.smoothing, c.dist_beta)
        self.latent_prior: RBMPrior | QBMPrior = make_prior(c, self.prior)  # a plain object: no state-dict keys

    # ---------------------------------------------------------------- pieces
    def encode(self, x: Tensor) -> Tensor:
        """Logits of q(z=1 | x)."""
        return self.encoder(x - self.data_mean)

    def decode(self, zeta: Tensor) -> Tensor:
        """Logits of p(x=1 | zeta)."""
        return self.decoder(zeta) + self.train_bias

    def weight_decay_loss(self) -> Tensor:
        """The seed's L2 penalty on the RBM: wd * (sum W^2 + 0.5 * sum b^2)."""
        p = self.prior
        bias_sq = p.visible_bias.square().sum() + p.hidden_bias.square().sum()
        return self.config.weight_decay * (p.weight.square().sum() + 0.5 * bias_sq)

    # ---------------------------------------------------------------- the objective
    def forward(self, x: Tensor, negative: Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Named terms, each averaged over the batch.

        `negative`: samples of p(z) for the log Z gradient; without them (evaluation) the
        surrogate and loss are omitted. `x` may hold intensities in [0, 1] (the seed's
        Bernoulli-on-intensities cost) or binarised pixels.
        """
        logits = self.encode(x)
        zeta = self.smoothing.rsample(logits, generator)
        x_logits = self.decode(zeta)
        cost = F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").sum(-1)
        terms = self._elbo_terms(logits, cost)
        if negative is not None:
            negative_energy = self.prior.energy(negative.detach()).mean()
            kl_surrogate = terms["kl_unnormalized"] - negative_energy
            wd_loss = self.weight_decay_loss()
            terms.update(
                negative_energy=negative_energy,
                kl_surrogate=kl_surrogate,
                wd_loss=wd_loss,
                loss=terms["cost"] + self.kl_weight() * kl_surrogate + wd_loss,
            )
        return terms

    def _elbo_terms(self, logits: Tensor, cost: Tensor) -> dict[str, Tensor]:
        """The ELBO's batch-mean terms from the encoder's `logits` and each image's `cost` (B,): the exact KL
        without log Z (E_q[E(z)] - H(q)) and the ELBO it leaves."""
        q = torch.sigmoid(logits)
        cross_energy = self.prior.energy(q)  # = E_q[E(z)] exactly: bilinear energy, factorial q
        entropy = bernoulli_entropy(logits).sum(-1)
        kl_unnormalized = cross_energy - entropy
        return {
            "cost": cost.mean(),
            "kl_unnormalized": kl_unnormalized.mean(),
            "entropy": entropy.mean(),
            "cross_energy": cross_energy.mean(),
            "elbo_unnormalized": (-cost - kl_unnormalized).mean(),
        }

    def training_step(self, x: Tensor, sampler: Sampler,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The terms of one step: the ELBO's (iw_samples = 0) or the importance-weighted bound's."""
        negative = sampler.sample(self.prior, self.config.sampler_chains)
        if self.config.iw_samples:
            return self.importance_weighted(x, negative, generator)
        return self(x, negative, generator)

    def importance_weighted(self, x: Tensor, negative: Tensor,
                            generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The training terms of the importance-weighted bound with k = iw_samples proposals zeta ~ q(zeta|x)
        (DVAE#, see importance.py): log w = log p(x|zeta) + kl_beta (log p(zeta) - log q(zeta|x)).

        `iw_bound_unnormalized` is the bound at kl_beta = 1 without log Z (the training loop adds it), and
        the one-sample terms (cost, kl_unnormalized, ...) are kept, averaged over the k proposals, so
        that a run reports the same ELBO whichever objective it trains on.
        """
        logits = self.encode(x)
        log_px, log_prior_over_q = self.relaxed_log_weights(x, logits, self.config.iw_samples, generator)
        negative_energy = self.prior.energy(negative.detach()).mean()
        wd_loss = self.weight_decay_loss()
        kl_weight = self.kl_weight()
        # + kl_weight * log Z in the loss: its gradient, -E_p[dE/dtheta], from the negative phase
        loss = -iw_bound(log_px + kl_weight * log_prior_over_q).mean() - kl_weight * negative_energy + wd_loss
        return {
            **self._elbo_terms(logits, -log_px.mean(0)),
            "iw_bound_unnormalized": iw_bound(log_px + log_prior_over_q).mean().detach(),
            "negative_energy": negative_energy,
            "wd_loss": wd_loss,
            "loss": loss,
        }

    def relaxed_log_weights(self, x: Tensor, logits: Tensor, k: int,
                            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """For k reparameterised zeta ~ q(zeta|x) per image (`logits` = encode(x)): log p(x|zeta) and
        log p(zeta) + log Z - log q(zeta|x), each (k, B), the prior by its mean-field bound."""
        zeta = self.smoothing.rsample(logits.expand(k, *logits.shape), generator)
        x_logits = self.decode(zeta)
        log_px = -F.binary_cross_entropy_with_logits(x_logits, x.expand_as(x_logits), reduction="none").sum(-1)
        log_prior_over_q = (relaxed_log_prior(self.prior, self.smoothing, zeta, self.config.mean_field_iterations)
                            - self.smoothing.log_mixture_pdf(zeta, logits).sum(-1))
        return log_px, log_prior_over_q

    # ---------------------------------------------------------------- using the model
    @torch.no_grad()
    def latent_features(self, x: Tensor) -> Tensor:
        """q(z=1|x): deterministic latent features (for t-SNE and probes)."""
        return torch.sigmoid(self.encode(x))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        zeta = self.smoothing.rsample(self.encode(x), generator)
        return torch.sigmoid(self.decode(zeta))

    @property
    def gamma(self) -> float | Tensor:
        """The transverse field of the prior (0: the classical RBM; a tensor: one value per latent unit)."""
        return self.latent_prior.gamma

    @torch.no_grad()
    def sample_prior(self, n: int, sweeps: int | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
        """n states of the prior from a uniformly random start: block Gibbs (RBM) or world-line
        path-integral sweeps (QBM, slice 0 of each path); `sweeps` defaults to generate_sweeps."""
        sweeps = self.config.generate_sweeps if sweeps is None else sweeps
        return self.latent_prior.sample(n, sweeps, generator)

    @torch.no_grad()
    def generate_from_seeds(self, seeds: Sequence[int], sweeps: int | None = None,
                            chunk_size: int = 256) -> Tensor:
        """One image per seed, (len(seeds), input_dim) in [0, 1].

        Each image depends only on its own seed (and the model), not on which other seeds share
        the call: every row draws all its random numbers from its own PCG64 stream keyed by the
        full 64-bit seed (torch's CPU generator would only use 32 bits of it), so seed 7 gives the
        same digit alone or in a batch, on any device. The prior draws z from the stream first
        (`latent_prior.sample_from_streams`: `sweeps` block-Gibbs or world-line PIMC sweeps), then
        the smoothing draws its uniforms from the same stream.
        """
        if len(seeds) < 1:
            raise ValueError("seeds must hold at least one seed")
        sweeps = self.config.generate_sweeps if sweeps is None else int(sweeps)
        if sweeps < 0:
            raise ValueError(f"sweeps must be >= 0, got {sweeps}")
        p, device = self.prior, self.train_bias.device
        images = []
        for start in range(0, len(seeds), chunk_size):
            streams = [np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed))))
                       for seed in seeds[start:start + chunk_size]]
            z = self.latent_prior.sample_from_streams(streams, sweeps)
            u = torch.from_numpy(np.stack([s.random(p.num_units, dtype=np.float32) for s in streams]))
            zeta = self.smoothing.zeta_given_z(z, u.to(device=device, dtype=p.weight.dtype))
            images.append(torch.sigmoid(self.decode(zeta)))
        return torch.cat(images)

    @torch.no_grad()
    def generate(self, n: int, sweeps: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """n images (n, input_dim) in [0, 1]: z ~ p(z), zeta ~ r(zeta|z), sigmoid(decoder)."""
        if n < 1:
            raise ValueError(f"number of images must be >= 1, got {n}")
        z = self.sample_prior(n, sweeps, generator)
        zeta = self.smoothing.sample_given_z(z, generator)
        return torch.sigmoid(self.decode(zeta))
