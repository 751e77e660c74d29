"""What the main job records about its data and its experiment, in process on a real SQLite store."""

from __future__ import annotations

import warnings

import mlflow
from mlflow import MlflowClient

from qvae.tracking.job import log_dataset
from qvae.tracking.store import EXPERIMENT_KIND_TAG, MODEL_TRAINING, mark_model_training


def test_the_mnist_splits_are_logged_as_datasets_without_ambiguity(tracking_store, small_data):
    with mlflow.start_run() as run, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log_dataset(small_data)
    assert not [w for w in caught if "interpreted in multiple ways" in str(w.message)]
    inputs = MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    assert sorted(i.dataset.name for i in inputs) == ["mnist-test", "mnist-train", "mnist-validation"]
    assert {i.dataset.name: i.tags[0].value for i in inputs} == {  # the context is the split's role
        "mnist-train": "training", "mnist-validation": "validation", "mnist-test": "test"}
    assert all(str(small_data.source.raw_dir) in i.dataset.source for i in inputs)


def test_the_experiment_opens_on_model_training_not_genai(tracking_store):
    client = MlflowClient()
    fresh = client.create_experiment("kind-unset")
    mark_model_training(fresh)
    assert client.get_experiment(fresh).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    chosen = client.create_experiment("kind-chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    mark_model_training(chosen)
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"  # a choice is kept


def test_a_resumed_run_gets_back_its_frames_and_draws_one_its_kill_cut_off(tracking_store, small_data, tmp_path):
    """Epoch 1's frame was logged; the kill came between epoch 2's checkpoint and its frame."""
    from qvae.config import Config, JobOptions
    from qvae.models.build import build_model
    from qvae.tracking.job import MlflowEpochLogger

    options = JobOptions(tsne_interval=1, tsne_points=40)
    model = build_model(Config(hidden_dim=32, latent_dim=8, num_visible=4, num_hidden=4))
    with mlflow.start_run() as run:
        MlflowEpochLogger(small_data, options, tmp_path / "first", seed=0).tsne_frame(model, 1)
        resumed = MlflowEpochLogger(small_data, options, tmp_path / "resumed", seed=0)
        resumed.restore_frames(run.info.run_id, 2, model)
    assert [f.name for f in resumed.frames] == ["epoch_001.png", "epoch_002.png"]
    logged = [a.path for a in MlflowClient().list_artifacts(run.info.run_id, "tsne_frames")]
    assert logged == ["tsne_frames/epoch_001.png", "tsne_frames/epoch_002.png"]
