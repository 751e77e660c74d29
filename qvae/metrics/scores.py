"""The final scores of a trained model: FID/KID, test NLL and latent-probe accuracy.

One place that turns a model and MNIST into the numbers the main job logs, `qvae evaluate`
prints and `benchmarks/compare.py` tabulates, so all three measure the same thing the same way:

    fid, fid_64, kid, kid_std    generated images of request seed 0 vs the first fid_samples test images
    test_nll (+ _stderr)         importance-weighted -log p(x) in nats (nll.py); test_nll_bound for gamma > 0
    latent_accuracy              test accuracy of an MLP trained on the encoder's features (probe.py)

How much of each to do is a `ScoreSettings` (declared with the other settings in qvae.config).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from qvae.config import ScoreSettings
from qvae.metrics.nll import NllResult, test_nll
from qvae.metrics.probe import ProbeResult, latent_probe
from qvae.models.qvae import image_seeds

__all__ = ["ScoreSettings", "fid_scores", "final_scores", "nll_score", "probe_score", "score_details"]


def fid_scores(model: Any, test_x: torch.Tensor, settings: ScoreSettings, progress: bool = False,
               cache_dir: str | None = None) -> dict[str, float]:
    """FID (2048 and 64 features) and KID of request seed 0's images against the first test images."""
    from qvae.metrics.fid import compute_fid

    device = model.train_bias.device
    n = settings.fid_samples
    generated = model.generate_from_seeds(image_seeds(0, n))  # = request seed 0 of the logged model
    scores = compute_fid(generated, test_x[:n].to(device), device=device, batch_size=settings.fid_batch_size,
                         cache_dir=cache_dir, progress=progress)
    return {k: float(v) for k, v in scores.items()}


def nll_score(model: Any, test_x: torch.Tensor, settings: ScoreSettings, seed: int = 0,
              progress: bool = False) -> NllResult:
    x = test_x[:settings.nll_images] if settings.nll_images else test_x
    return test_nll(model, x, samples=settings.nll_samples, ais_chains=settings.nll_ais_chains,
                    ais_betas=settings.nll_ais_betas, seed=seed, progress=progress)


def probe_score(model: Any, data: Any, settings: ScoreSettings, seed: int = 0, progress: bool = False) -> ProbeResult:
    return latent_probe(model, data.train_x, data.train_y, data.test_x, data.test_y, epochs=settings.probe_epochs,
                        seed=seed, progress=progress)


def score_details(scores: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready `nll` / `probe` details of a `final_scores` result (those it computed)."""
    details: dict[str, Any] = {}
    if "nll" in scores:
        details["nll"] = scores["nll"].as_dict()
    if "probe" in scores:
        details["probe"] = asdict(scores["probe"])
    return details


def final_scores(model: Any, data: Any, settings: ScoreSettings, *, seed: int = 0, progress: bool = False,
                 cache_dir: str | None = None) -> dict[str, Any]:
    """Every score the settings ask for: flat metrics, plus `nll` / `probe` details when computed.
    `seed` drives the NLL's samples and the probe (the main job passes the config's seed);
    `cache_dir` holds the Inception weights and real-image statistics (default: the qvae cache)."""
    model.eval()
    metrics: dict[str, float] = {}
    details: dict[str, Any] = {}
    if settings.fid_samples:
        metrics.update(fid_scores(model, data.test_x, settings, progress, cache_dir))
    if settings.nll_samples:
        nll = nll_score(model, data.test_x, settings, seed, progress)
        metrics.update(nll.metrics())
        details["nll"] = nll
    if settings.probe_epochs:
        probe = probe_score(model, data, settings, seed, progress)
        metrics["latent_accuracy"] = probe.accuracy
        details["probe"] = probe
    return {"metrics": metrics, **details}
