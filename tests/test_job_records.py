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
    assert sorted(i.dataset.name for i in inputs) == ["mnist-evaluation", "mnist-training"]
    assert all(str(small_data.source.raw_dir) in i.dataset.source for i in inputs)


def test_the_experiment_opens_on_model_training_not_genai(tracking_store):
    client = MlflowClient()
    fresh = client.create_experiment("kind-unset")
    mark_model_training(fresh)
    assert client.get_experiment(fresh).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    chosen = client.create_experiment("kind-chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    mark_model_training(chosen)
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"  # a choice is kept
