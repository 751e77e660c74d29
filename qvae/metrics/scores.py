"""The final scores of a trained model on one split: FID/KID, ELBO, NLL, latent probe, class coverage.

One place that turns a model and MNIST into the numbers the main job logs, `qvae evaluate`
prints and `benchmarks/compare.py` tabulates, so all three measure the same thing the same way.
On the test split (the main job's final scores, read once, of the chosen checkpoint):

    fid, fid_64, kid, kid_std     generated images of request seed 0 vs the first fid_samples test images
    test_elbo (+ test_kl, ...)    the ELBO terms averaged over the test images (log Z completes the KL)
    test_nll (+ _stderr, _log_z_stderr)  importance-weighted -log p(x) in nats (nll.py); test_nll_bound for gamma > 0,
                                  and its own test_nll beside it with nll_clamped_chains > 0
    latent_accuracy               test accuracy of an MLP trained on the encoder's features (probe.py)
    class_entropy, class_confidence  which digits the FID samples are (classes.py)

On the validation split (a tuning trial's scores, which choose) the same numbers are named
`val_fid`, `val_fid_64`, `val_kid`, `val_nll`, `val_latent_accuracy`, ... (`split_name`).
Encoders read images in the form the model was trained on (`model_inputs`); FID compares grey
real images with the decoder's means. How much of each to do is a `ScoreSettings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import torch

from qvae.config import ScoreSettings
from qvae.data.mnist import MnistData, model_inputs
from qvae.metrics.names import split_name
from qvae.metrics.nll import NllResult, test_nll
from qvae.metrics.probe import ProbeResult, latent_probe
from qvae.models.qvae import image_seeds
from qvae.timing import PhaseTimer

__all__ = ["ScoreSettings", "elbo_scores", "fid_scores", "final_scores", "nll_score",
           "probe_score", "score_details", "split_name"]


def fid_samples(model: Any, settings: ScoreSettings) -> torch.Tensor:
    """The images FID and class coverage score: request seed 0 of the logged model, fid_samples of them."""
    return model.generate_from_seeds(image_seeds(0, settings.fid_samples))


def fid_scores(model: Any, real_x: torch.Tensor, settings: ScoreSettings, progress: bool = False,
               cache_dir: str | None = None, generated: torch.Tensor | None = None) -> dict[str, float]:
    """FID (2048 and 64 features) and KID of request seed 0's images against the first real images
    (grey levels: each split's real statistics are cached apart, keyed by the images)."""
    from qvae.metrics.fid import compute_fid

    device = model.train_bias.device
    n = settings.fid_samples
    generated = fid_samples(model, settings) if generated is None else generated
    scores = compute_fid(generated, real_x[:n].to(device), device=device, batch_size=settings.fid_batch_size,
                         cache_dir=cache_dir, progress=progress)
    return {k: float(v) for k, v in scores.items()}


def standard_classifier(mnist_root: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None,
                        progress: bool = False, expected_md5: Mapping[str, str] | None = None) -> torch.nn.Module:
    """The reference classifier (classes.py) that labels generated digits: trained on the standard
    training split (the first 50 000 images, whatever a run's own sizes) and checked on the validation
    split; cached after the first use."""
    from qvae.data.mnist import RAW_MD5, load_mnist
    from qvae.metrics.classes import reference_classifier
    from qvae.metrics.fid import default_cache_dir

    full = load_mnist(mnist_root, sources=("local",), expected_md5=expected_md5 or RAW_MD5)
    return reference_classifier(full.train_x, full.train_y, full.val_x, full.val_y,
                                cache_dir or default_cache_dir(), progress=progress)


def class_coverage(generated: torch.Tensor, data: MnistData, cache_dir: str | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """`class_entropy`, `class_confidence` and `class_counts` of the generated images, labelled by
    the standard reference classifier."""
    from qvae.metrics.classes import class_scores

    classifier = standard_classifier(data.source.raw_dir.parents[1], cache_dir, progress, data.source.md5)
    return class_scores(classifier, generated.reshape(len(generated), -1).cpu())


def elbo_scores(model: Any, x: torch.Tensor, split: str = "test", seed: int = 0,
                batch_size: int = 500) -> dict[str, float]:
    """The ELBO and its terms averaged over `x` (cost, the KL and ELBO that log Z completes, log Z and
    its standard error): the training objective's figure on held-out images, e.g. `test_elbo`."""
    from qvae.train import evaluate

    config = model.config
    device = model.train_bias.device
    generator = torch.Generator(device=device).manual_seed(seed)
    terms = evaluate(model, None, model_inputs(x.to(device), config.binarize), batch_size, generator)
    prior = model.latent_prior
    out = {"cost": terms["cost"]}
    if not prior.needs_log_z:  # the Gaussian's KL is exact
        out.update(kl=terms["kl"], elbo=terms["elbo"])
    elif config.log_z_betas:
        log_z, log_z_stderr, _ = prior.log_z(config.log_z_chains, config.log_z_betas, generator)
        completed = prior.complete_with_log_z(terms, log_z)
        out.update({prior.kl_name: completed[prior.kl_name], prior.elbo_name: completed[prior.elbo_name],
                    "log_z": log_z, "log_z_stderr": log_z_stderr})
    else:
        out["elbo_unnormalized"] = terms["elbo_unnormalized"]
    return {split_name(k, split): v for k, v in out.items()}


def nll_score(model: Any, x: torch.Tensor, settings: ScoreSettings, seed: int = 0, progress: bool = False,
              split: str = "test", beside: NllResult | None = None) -> NllResult:
    """The importance-weighted NLL. `beside`: the bound of a QBM prior, already computed; this call then
    gives the prior's own NLL (settings.nll_clamped_*) with the bound's log Z, not estimated twice."""
    x = x[:settings.nll_images] if settings.nll_images else x
    chains, log_z = 0, None
    if beside is not None:
        chains, log_z = settings.nll_clamped_chains, (beside.log_z, beside.log_z_stderr, beside.log_z_method)
    return test_nll(model, x, samples=settings.nll_samples, ais_chains=settings.nll_ais_chains,
                    ais_betas=settings.nll_ais_betas, seed=seed, progress=progress, split=split,
                    clamped_chains=chains, clamped_betas=settings.nll_clamped_betas, log_z=log_z)


def probe_score(model: Any, data: MnistData, settings: ScoreSettings, seed: int = 0, progress: bool = False,
                split: str = "test") -> ProbeResult:
    """The probe trained on the training split's features, scored on `split`'s."""
    binarize = model.config.binarize
    x, y = data.split(split)
    return latent_probe(model, model_inputs(data.train_x, binarize), data.train_y, model_inputs(x, binarize), y,
                        epochs=settings.probe_epochs, seed=seed, progress=progress)


def score_details(scores: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready `nll` / `probe` / `class_counts` details of a `final_scores` result (those it computed)."""
    details: dict[str, Any] = {k: scores[k] for k in ("class_counts",) if k in scores}
    for key in ("nll", "nll_true"):
        if key in scores:
            details[key] = scores[key].as_dict()
    if "probe" in scores:
        details["probe"] = asdict(scores["probe"])
    return details


def final_scores(model: Any, data: MnistData, settings: ScoreSettings, *, split: str = "test", seed: int = 0,
                 progress: bool = False, cache_dir: str | None = None,
                 timer: PhaseTimer | None = None) -> dict[str, Any]:
    """Every score the settings ask for on `split` ("test": once, at the end; "validation": to choose),
    as flat metrics named by `split_name`, plus `nll` / `probe` details when computed.
    `seed` drives the NLL's samples and the probe (the main job passes the config's seed);
    `cache_dir` holds the Inception weights and real-image statistics (default: the qvae cache)."""
    model.eval()
    x, _ = data.split(split)
    timer = timer or PhaseTimer()
    metrics: dict[str, float] = {}
    details: dict[str, Any] = {}
    if split == "test":  # on validation the chosen epoch's val_elbo (per-epoch series) already is this figure
        with timer.phase("elbo"):
            metrics.update(elbo_scores(model, x, split, seed))
    if settings.fid_samples:
        with timer.phase("generate"):
            generated = fid_samples(model, settings)
        with timer.phase("fid"):
            fid = fid_scores(model, x, settings, progress, cache_dir, generated)
        metrics.update({split_name(k, split): v for k, v in fid.items()})
        with timer.phase("classes"):
            classes = class_coverage(generated, data, cache_dir, progress)
        metrics.update({split_name(k, split): classes[k] for k in ("class_entropy", "class_confidence")})
        details["class_counts"] = classes["class_counts"]
    if settings.nll_samples:
        with timer.phase("nll"):
            nll = nll_score(model, x, settings, seed, progress, split)
        metrics.update(nll.metrics())
        details["nll"] = nll
        if nll.bound and settings.nll_clamped_chains:  # a QBM prior: its own NLL beside the bound
            with timer.phase("nll_true"):
                true = nll_score(model, x, settings, seed, progress, split, beside=nll)
            metrics.update(true.metrics())
            details["nll_true"] = true
    if settings.probe_epochs:
        with timer.phase("probe"):
            probe = probe_score(model, data, settings, seed, progress, split)
        metrics[split_name("latent_accuracy", split)] = probe.accuracy
        details["probe"] = probe
    return {"metrics": metrics, **details}
