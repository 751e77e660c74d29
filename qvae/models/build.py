"""The model a config asks for: `build_model(config)` picks the QVAE or the Gaussian baseline."""

from __future__ import annotations

from torch import Tensor

from qvae.config import Config
from qvae.models.gaussian import GaussianVAE
from qvae.models.qvae import QVAE

Model = QVAE | GaussianVAE
MODEL_CLASSES = (QVAE, GaussianVAE)


def build_model(config: Config, data_mean: Tensor | None = None) -> Model:
    """`prior=gaussian`: the N(0, I) VAE; otherwise the QVAE (RBM prior, or QBM for gamma > 0)."""
    if config.prior == "gaussian":
        return GaussianVAE(config, data_mean)
    return QVAE(config, data_mean)
