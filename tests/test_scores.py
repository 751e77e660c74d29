"""Honest numbers end to end: the main job logs test NLL and latent accuracy (for the QVAE and the
Gaussian baseline), and `qvae evaluate` recomputes them, with FID, from the logged models."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch
from mlflow import MlflowClient

import qvae
from qvae.cli import main
from qvae.config import Config, ConfigError, JobOptions
from qvae.data.mnist import load_mnist
from qvae.metrics.nll import test_nll as iw_test_nll
from qvae.models.gaussian import GaussianVAE
from qvae.tracking.job import run_main_job

TINY = dict(epochs=2, batch_size=50, hidden_dim=64, latent_dim=16, num_visible=8, num_hidden=8, train_size=1000,
            validation_size=100, test_size=100, lr=3e-3, kl_beta=1.0, sampler_chains=16, log_z_betas=10, log_z_chains=8,
            generate_sweeps=15, device="cpu")
SCORES = dict(nll_samples=40, nll_ais_chains=16, nll_ais_betas=20, probe_epochs=3)


@pytest.fixture(scope="module")
def runs(tracking_store, mnist_dir):
    """One tiny QVAE run and one tiny Gaussian-VAE run of the main job, with NLL and probe on."""
    options = JobOptions(fid_samples=0, tsne_interval=0, tsne_final_points=0, progress=False, **SCORES)
    out = {}
    for prior in ("boltzmann", "gaussian"):
        config = Config(**TINY, prior=prior, data_dir=str(mnist_dir))
        out[prior] = run_main_job(config, options)
    return out


@pytest.mark.parametrize("prior", ["boltzmann", "gaussian"])
def test_main_job_logs_test_nll_and_latent_accuracy(runs, prior):
    result = runs[prior]
    run = MlflowClient().get_run(result.run_id)
    m, p = run.data.metrics, run.data.params
    assert 0 < m["test_nll_stderr"] < m["test_nll"] < 784 * 0.7  # below a coin flip per pixel
    assert 0.3 < m["latent_accuracy"] <= 1.0  # 10 classes: chance is 0.1
    assert p["nll_samples"] == "40" and p["probe_epochs"] == "3"
    assert ("test_nll_log_z" in m) == (prior == "boltzmann")
    # the IW bound is at least as tight as the ELBO of the same model on the same images (K = 40 >= 1)
    assert m["test_nll"] < -m["test_elbo"] + 1.0
    boltzmann_only = {"sampler", "sampler_chains", "num_visible", "gamma", "log_z_betas", "log_z_method",
                      "prior_kl_uniform_method", "generate_sweeps"}
    assert (boltzmann_only <= set(p)) == (prior == "boltzmann")  # a Gaussian run has no sampler, no log Z
    assert prior == "boltzmann" or not boltzmann_only & set(p)


def test_gaussian_model_loads_and_generates_per_seed(runs):
    gen = qvae.load_generator(runs["gaussian"].model_uri, device="cpu")
    assert isinstance(gen.model, GaussianVAE)
    images = gen.generate(4, seed=2)
    assert images.shape == (4, 1, 28, 28) and torch.equal(gen.generate(4, seed=2), images)


@pytest.mark.reference_classifier
def test_evaluate_command_scores_a_logged_model(runs, mnist_dir, inception_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QVAE_CACHE_DIR", str(inception_cache))
    output = tmp_path / "scores.json"
    rc = main(["evaluate", "--model", runs["boltzmann"].model_uri, "--data-dir", str(mnist_dir), "--device", "cpu",
               "--fid-samples", "20", "--nll-samples", "40", "--nll-images", "100", "--nll-ais-chains", "16",
               "--nll-ais-betas", "20", "--probe-epochs", "1", "--output", str(output), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    report = json.loads(output.read_text())
    m = report["metrics"]
    for name in ("fid", "fid_64", "kid", "test_nll", "test_nll_stderr", "latent_accuracy"):
        assert name in m, name
    assert m["fid"] > 0 and m["fid_samples"] == 20 and report["nll"]["images"] == 100
    # the same images, samples and seed as the main job's NLL (its test set is the first 100 images)
    logged = MlflowClient().get_run(runs["boltzmann"].run_id).data.metrics["test_nll"]
    assert m["test_nll"] == pytest.approx(logged, abs=1e-6)
    # ... and what the library computes on the loaded model directly
    model = qvae.load_generator(runs["boltzmann"].model_uri, device="cpu").model
    direct = iw_test_nll(model, load_mnist(mnist_dir, validation_size=100, test_size=100).test_x,
                         samples=40, ais_chains=16, ais_betas=20)
    assert m["test_nll"] == pytest.approx(direct.nll, abs=1e-6)
    assert "test_nll" in printed and "latent_accuracy" in printed and "FID (20 images)" in printed


def test_evaluate_command_rejects_bad_settings(runs, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", runs["boltzmann"].model_uri, "--nll-images", "1"])
    assert exit_info.value.code == 2 and "nll_images must be 0 (all) or in 2..10000" in capsys.readouterr().err


def test_job_options_name_the_parameter_and_range():
    config = Config(validation_size=500, test_size=500)
    with pytest.raises(ConfigError, match=r"nll_images must be 0 \(all\) or in 2\.\.500"):
        JobOptions(fid_samples=0, nll_images=501).validate(config)
    with pytest.raises(ConfigError, match=r"nll_samples must be an integer in 0\.\.1000000; 0 skips"):
        JobOptions(fid_samples=0, nll_samples=-1).validate(config)
    with pytest.raises(ConfigError, match=r"probe_epochs must be an integer in 0\.\.10000"):
        JobOptions(fid_samples=0, probe_epochs=1.5).validate(config)
    with pytest.raises(ConfigError, match=r"nll_ais_betas must be an integer in 2\.\."):
        JobOptions(fid_samples=0, nll_ais_betas=1).validate(config)
    assert mlflow.get_tracking_uri()  # the module's store is still active


def test_a_quantum_prior_reports_its_own_nll_beside_the_bound(mnist_dir):
    """With nll_clamped_chains > 0 the final scores of a QBM-prior model hold test_nll (its own
    likelihood, clamped path integral) and test_nll_bound, the first below the second: for an
    untrained prior the bound's gap is about n log cosh Γ (8 units at Γ = 1: ~3.5 nats)."""
    from qvae.config import ScoreSettings
    from qvae.metrics.scores import final_scores, score_details
    from qvae.models.build import build_model

    data = load_mnist(mnist_dir, train_size=200, validation_size=100, test_size=40)
    config = Config(hidden_dim=32, latent_dim=8, num_visible=4, num_hidden=4, sampler="pimc", gamma=1.0,
                    trotter_slices=8, device="cpu")
    torch.manual_seed(0)
    model = build_model(config)
    settings = ScoreSettings(fid_samples=0, nll_samples=20, nll_clamped_chains=4, nll_clamped_betas=20)
    scores = final_scores(model, data, settings, seed=0)
    m = scores["metrics"]
    assert {"test_nll", "test_nll_stderr", "test_nll_bound", "test_nll_bound_stderr"} <= set(m)
    assert m["test_nll"] < m["test_nll_bound"] - 1.0
    details = score_details(scores)
    assert "clamped at z" in details["nll_true"]["method"] and details["nll"]["bound"]
    off = final_scores(model, data, ScoreSettings(fid_samples=0, nll_samples=20), seed=0)["metrics"]
    assert "test_nll_bound" in off and "test_nll" not in off  # 0 chains: only the bound, as before
    # a tuning trial's validation scores: its own val_nll beside val_nll_bound, and val_nll is what it minimises
    from tuning.objective import objective_value

    val = final_scores(model, data, settings, split="validation", seed=0)["metrics"]
    assert {"val_nll", "val_nll_bound"} <= set(val) and val["val_nll"] < val["val_nll_bound"] - 1.0
    assert objective_value("val_nll", val) == val["val_nll"]
