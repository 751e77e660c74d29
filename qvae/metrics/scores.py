"""The final scores of a trained model: FID/KID, test NLL and latent-probe accuracy.

One place that turns a model and MNIST into the numbers the main job logs, `qvae evaluate`
prints and `benchmarks/compare.py` tabulates, so all three measure the same thing the same way:

    fid, fid_64, kid, kid_std    generated images of request seed 0 vs the first fid_samples test images
    test_nll (+ _stderr)         importance-weighted -log p(x) in nats (nll.py); test_nll_bound for gamma > 0
    latent_accuracy              test accuracy of an MLP trained on the encoder's features (probe.py)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from qvae.metrics.nll import DEFAULT_AIS_BETAS, DEFAULT_AIS_CHAINS, NllResult, test_nll
from qvae.metrics.probe import DEFAULT_EPOCHS, ProbeResult, latent_probe
from qvae.models.qvae import image_seeds


@dataclass
class ScoreSettings:
    """How much evaluation to do; 0 skips a score. Defaults: the full protocol (a GPU's worth)."""

    fid_samples: int = 10_000
    fid_batch_size: int = 100
    nll_samples: int = 1000
    nll_images: int = 0  # 0: every test image
    nll_ais_chains: int = DEFAULT_AIS_CHAINS
    nll_ais_betas: int = DEFAULT_AIS_BETAS
    probe_epochs: int = DEFAULT_EPOCHS
    seed: int = 0
    fid_cache_dir: str | None = None  # Inception weights and real-image statistics (default: the qvae cache)

    @classmethod
    def from_options(cls, options: Any, seed: int = 0) -> ScoreSettings:
        """From any object with the same field names (e.g. `JobOptions`)."""
        names = ("fid_samples", "fid_batch_size", "nll_samples", "nll_images", "nll_ais_chains", "nll_ais_betas",
                 "probe_epochs")
        return cls(**{n: getattr(options, n) for n in names}, seed=seed)


def fid_scores(model: Any, test_x: torch.Tensor, settings: ScoreSettings, progress: bool = False) -> dict[str, float]:
    """FID (2048 and 64 features) and KID of request seed 0's images against the first test images."""
    from qvae.metrics.fid import compute_fid

    device = model.train_bias.device
    n = settings.fid_samples
    generated = model.generate_from_seeds(image_seeds(0, n))  # = request seed 0 of the logged model
    scores = compute_fid(generated, test_x[:n].to(device), device=device, batch_size=settings.fid_batch_size,
                         cache_dir=settings.fid_cache_dir, progress=progress)
    return {k: float(v) for k, v in scores.items()}


def nll_score(model: Any, test_x: torch.Tensor, settings: ScoreSettings, progress: bool = False) -> NllResult:
    x = test_x[:settings.nll_images] if settings.nll_images else test_x
    return test_nll(model, x, samples=settings.nll_samples, ais_chains=settings.nll_ais_chains,
                    ais_betas=settings.nll_ais_betas, seed=settings.seed, progress=progress)


def probe_score(model: Any, data: Any, settings: ScoreSettings, progress: bool = False) -> ProbeResult:
    return latent_probe(model, data.train_x, data.train_y, data.test_x, data.test_y, epochs=settings.probe_epochs,
                        seed=settings.seed, progress=progress)


def score_details(scores: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready `nll` / `probe` details of a `final_scores` result (those it computed)."""
    details: dict[str, Any] = {}
    if "nll" in scores:
        details["nll"] = scores["nll"].as_dict()
    if "probe" in scores:
        details["probe"] = asdict(scores["probe"])
    return details


def final_scores(model: Any, data: Any, settings: ScoreSettings, progress: bool = False) -> dict[str, Any]:
    """Every score the settings ask for: flat metrics, plus `nll` / `probe` details when computed."""
    model.eval()
    metrics: dict[str, float] = {}
    details: dict[str, Any] = {}
    if settings.fid_samples:
        metrics.update(fid_scores(model, data.test_x, settings, progress))
    if settings.nll_samples:
        nll = nll_score(model, data.test_x, settings, progress)
        metrics.update(nll.metrics())
        details["nll"] = nll
    if settings.probe_epochs:
        probe = probe_score(model, data, settings, progress)
        metrics["latent_accuracy"] = probe.accuracy
        details["probe"] = probe
    return {"metrics": metrics, **details}
