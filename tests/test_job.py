"""End to end: `mlflow run .` on a tiny config against a temporary tracking store."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.reference_classifier  # the job scores its samples' classes
REPO = Path(__file__).resolve().parents[1]
EPOCHS = 2
TINY = dict(epochs=EPOCHS, batch_size=50, hidden_dim=64, latent_dim=16, num_visible=8, num_hidden=8,
            train_size=300, validation_size=200, test_size=200, sampler_chains=32, log_z_betas=20, log_z_chains=16,
            generate_sweeps=20, fid_samples=16, tsne_interval=1, tsne_points=60, tsne_final_points=100,
            device="cpu", run_name="tiny-e2e")
PER_EPOCH = ("loss", "cost", "kl", "elbo", "val_loss", "val_cost", "val_kl", "val_elbo", "log_z", "prior_kl_uniform",
             "epoch_seconds", "flops_utilisation")
PHASES = ("data", "train", "elbo", "generate", "fid", "classes", "nll", "probe", "pictures", "model", "cpu_wait",
          "tsne")
ARTIFACTS = ("original.png", "reconstruction.png", "generated.png", "training_curves.png", "tsne_final.png",
             "tsne_evolution.gif", "tsne_frames/epoch_001.png", "tsne_frames/epoch_002.png",
             "checkpoints/last.pt", "checkpoints/best.pt", "fid_results.txt", "class_histogram.png")


def mlflow_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}", MLFLOW_DISABLE_TELEMETRY="true",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_dir, inception_cache):
    """One `mlflow run . --env-manager local` of the main entry point; returns (client, run, env)."""
    import mlflow
    from mlflow import MlflowClient

    tmp = tmp_path_factory.mktemp("mlflow")
    env = mlflow_env(tmp)
    env["QVAE_CACHE_DIR"] = str(inception_cache)
    (tmp / "tmp").mkdir()
    env["TMPDIR"] = str(tmp / "tmp")  # where the run's local copies go (no output_dir given)
    env.pop("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", None)  # the product's default: system metrics on (psutil)
    env["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "1"
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    client.create_experiment("e2e", artifact_location=(tmp / "artifacts").as_uri())
    params = [arg for k, v in {**TINY, "data_dir": str(mnist_dir)}.items() for arg in ("-P", f"{k}={v}")]
    proc = subprocess.run([sys.executable, "-m", "mlflow", "run", str(REPO), "--env-manager", "local",
                           "--experiment-name", "e2e", *params], env=env, capture_output=True, text=True,
                          timeout=900, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    (tmp / "output.txt").write_text(proc.stdout + proc.stderr)
    runs = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    assert len(runs) == 1
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    return client, runs[0], env


def test_run_finished_with_params_and_provenance(finished_run):
    client, run, _ = finished_run
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    p = run.data.params
    assert p["num_visible"] == "8" and p["device_used"] == "cpu"
    # a preset field `mlflow run` logged as not given ('') gets the value the seed preset gave it beside it
    assert p["dist_beta"] == "''" and p["dist_beta.resolved"] == "10.0" and p["smoothing.resolved"] == "exponential"
    assert "num_visible.resolved" not in p  # given with -P: logged as given, nothing beside it
    for key in ("mnist_source", "mnist_md5_train-images-idx3-ubyte", "version_torch", "version_mlflow",
                "version_optuna", "version_kaiwu_community", "git_commit", "git_dirty", "fid_samples"):
        assert key in p, key
    assert run.data.tags["mlflow.runName"] == "tiny-e2e"
    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}  # context -> dataset
    assert set(inputs) == {"training", "validation", "test"}
    assert {d.name for d in inputs.values()} == {"mnist-train", "mnist-validation", "mnist-test"}
    assert len({d.digest for d in inputs.values()}) == 3  # three different sets of images
    profiles = {context: json.loads(d.profile) for context, d in inputs.items()}
    assert profiles["validation"]["features_shape"][0] == TINY["validation_size"]
    assert profiles["training"]["features_shape"][0] == TINY["train_size"]
    assert p["validation_size"] == str(TINY["validation_size"]) and p["prior_kl_uniform_method"] == "exact"


def test_run_leaves_no_local_copies_behind(finished_run):
    """Without output_dir the run writes into a temporary directory and removes it: everything in it
    is logged (a 50-trial study would otherwise leave ~1.5 GB in /tmp)."""
    _, _, env = finished_run
    assert [p.name for p in Path(env["TMPDIR"]).iterdir() if p.name.startswith("qvae-run-")] == []


def test_every_metric_has_one_value_per_epoch(finished_run):
    client, run, _ = finished_run
    for name in PER_EPOCH:
        history = client.get_metric_history(run.info.run_id, name)
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), name
    for name in ("fid", "fid_64", "kid", "test_elbo", "test_log_z_stderr", "test_nll", "test_nll_stderr",
                 "test_nll_log_z_stderr", "latent_accuracy"):  # the MLproject's defaults: every score, on test
        assert name in run.data.metrics, name
        assert len(client.get_metric_history(run.info.run_id, name)) == 1, name  # the test split is scored once
    assert not {"val_fid", "val_nll", "val_latent_accuracy"} & set(run.data.metrics)  # a trial's scores, not a run's
    assert run.data.metrics["fid"] > 0
    m = run.data.metrics
    assert 0 <= m["class_entropy"] <= math.log(10) + 1e-9 and 0 < m["class_confidence"] <= 1
    assert m["test_elbo"] == pytest.approx(-m["test_cost"] - m["test_kl"])
    assert run.data.params["nll_samples"] == "1000" and run.data.params["probe_epochs"] == "100"


def test_the_run_says_where_its_time_went(finished_run):
    """time_<phase> for every phase the run had, inside phases adding up to at most the wall clock, the
    same table printed at the end, flops_utilisation a fraction, and MLflow's system metrics."""
    client, run, env = finished_run
    m = run.data.metrics
    for phase in PHASES:
        assert m[f"time_{phase}"] >= 0, phase
    inside = sum(m[f"time_{p}"] for p in PHASES)  # a CPU run draws its t-SNE inline: nothing beside
    assert "time_tsne_beside" not in m
    assert 0 < inside <= m["time_total"] and m["time_train"] > 0
    output = (Path(env["TMPDIR"]).parent / "output.txt").read_text()
    assert "where the time went" in output and "probe" in output
    for value in (h.value for h in client.get_metric_history(run.info.run_id, "flops_utilisation")):
        assert 0 < value < 1
    assert any(k.startswith("system/cpu_utilization") for k in m), sorted(m)


def test_artifacts_exist_and_images_decode(finished_run, tmp_path):
    import mlflow

    _, run, _ = finished_run
    local = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path)))
    for name in ARTIFACTS:
        assert (local / name).is_file(), name
    for picture in [*local.glob("*.png"), *local.glob("tsne_frames/*.png")]:
        with Image.open(picture) as image:
            image.verify()
    with Image.open(local / "tsne_evolution.gif") as gif:
        assert gif.is_animated and gif.n_frames == EPOCHS
    text = (local / "fid_results.txt").read_text()
    assert "Samples: 16 generated vs the first 16 test images (grey)" in text
    assert f"Model: the best-on-validation checkpoint, epoch {run.data.tags['best_epoch']} of {EPOCHS}" in text
    series = list((local / "images").glob("generated*step*"))  # the per-epoch image series
    assert len([p for p in series if p.suffix == ".png"]) >= EPOCHS


def test_the_logged_model_is_the_best_on_validation_checkpoint(finished_run, tmp_path):
    import mlflow
    import torch

    client, run, _ = finished_run
    best_epoch = int(run.data.tags["best_epoch"])
    val_elbo = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_elbo")}
    assert best_epoch == max(val_elbo, key=val_elbo.get)  # the highest validation ELBO chose it
    assert run.data.tags["qvae.checkpoint"] == "best-on-validation" and run.data.tags["qvae.scored_split"] == "test"
    best = torch.load(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints/best.pt",
                                                          dst_path=str(tmp_path)), weights_only=True)
    assert best["epoch"] == best_epoch
    logged = torch.load(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model/artifacts/weights.pt",
                                                            dst_path=str(tmp_path / "m")), weights_only=True)
    assert logged.keys() == best["model"].keys()
    assert all(torch.equal(logged[k], best["model"][k]) for k in logged)
    info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    logged_model = mlflow.get_logged_model(info.model_id)
    assert logged_model.tags["qvae.checkpoint"] == "best-on-validation"
    assert logged_model.tags["qvae.best_epoch"] == str(best_epoch)


def test_model_is_logged_with_signature_and_input_example(finished_run):
    import mlflow

    _, run, _ = finished_run
    uri = f"runs:/{run.info.run_id}/model"
    info = mlflow.models.get_model_info(uri)
    assert info.run_id == run.info.run_id
    assert info.signature.inputs.input_names() == ["seed"]
    assert [c.type.name for c in info.signature.inputs.inputs] == ["long"]
    (images,) = info.signature.outputs.inputs
    assert images.name == "images" and images.shape == (-1, 784) and images.type == np.dtype(np.float32)
    # num_images 0: one image per seed row; sweeps: the trained config's generate_sweeps
    assert {p.name: p.default for p in info.signature.params.params} == {"num_images": 0,
                                                                        "sweeps": TINY["generate_sweeps"]}
    assert info.saved_input_example_info["type"] == "dataframe"
    example = mlflow.models.Model.load(uri).load_input_example(uri)
    assert list(example.columns) == ["seed"] and example["seed"].tolist() == [0, 1, 2, 3]


LOAD_AND_GENERATE = """
import hashlib, sys, mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
images = model.predict(pd.DataFrame({"seed": [0, 1, 2, 5]}))
more = model.predict(pd.DataFrame({"seed": [3]}), params={"num_images": 6, "sweeps": 5})
print(images.shape, images.dtype, float(images.min()) >= 0, float(images.max()) <= 1, more.shape)
print(hashlib.sha256(images.tobytes()).hexdigest())
"""


def test_logged_model_generates_reproducibly_in_fresh_processes(finished_run):
    _, run, env = finished_run
    uri = f"runs:/{run.info.run_id}/model"
    outputs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", LOAD_AND_GENERATE, uri], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        outputs.append(proc.stdout.strip().splitlines()[-2:])
    assert outputs[0][0] == "(4, 784) float32 True True (6, 784)"
    assert outputs[0][1] == outputs[1][1]  # identical images for identical seeds across processes
