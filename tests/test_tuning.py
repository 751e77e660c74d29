"""A small Optuna study end to end: child runs, pruning, the champion alias, loading it back."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from optuna.trial import TrialState

from qvae.config import Config, ConfigError, JobOptions
from qvae.timing import is_wall_clock
from tests.servers import MLFLOW_BUSY_TIMEOUT_S, hold_write_lock
from tests.waiting import GENEROUS_TIMEOUT_S, wait_until
from tuning.objective import RUN_ID_ATTR
from tuning.registry import register_champion
from tuning.space import SearchSpace
from tuning.study import StudySettings, open_study, redact, run_study

BASE = dict(epochs=3, batch_size=50, hidden_dim=64, latent_dim=16, num_visible=8, num_hidden=8,
            train_size=300, validation_size=200, test_size=200, sampler_chains=32, log_z_betas=20, log_z_chains=16,
            generate_sweeps=10, device="cpu")
SPACE = SearchSpace(latent_total=16, visible_min=4, visible_step=4, dist_beta_min=5, dist_beta_max=15,
                    kl_beta_min=1e-4, kl_beta_max=1e-2, lr_min=1e-5, lr_max=1e-2)
OPTIONS = JobOptions(fid_samples=0, tsne_interval=0, tsne_final_points=0, progress=False)
GOOD = {"num_visible": 8, "dist_beta": 10.0, "kl_beta": 1e-3, "lr": 5e-3}
BAD = {"num_visible": 8, "dist_beta": 10.0, "kl_beta": 1e-3, "lr": 1e-5}


@pytest.fixture(scope="module")
def store(tracking_store):
    return tracking_store


def settings(store: Path, name: str, **changes) -> StudySettings:
    values = dict(study_name=name, storage=f"journal:{store / 'journal.log'}", objective="val_neg_elbo",
                  register_model="qvae-mnist", n_trials=4, workers=2)
    return StudySettings(**{**values, **changes})


@pytest.fixture(scope="module")
def first_study(store, mnist_dir):
    config = Config(**BASE, data_dir=str(mnist_dir))
    s = settings(store, "study-a")
    study = open_study(s)
    study.enqueue_trial(GOOD)  # two solid starting points; TPE proposes the rest
    study.enqueue_trial({**GOOD, "num_visible": 4})
    return run_study(s, config, SPACE, OPTIONS), config


def parent_and_children(study_name: str):
    client = MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.`optuna.study_name` = '{study_name}'")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_every_trial_is_one_child_run_of_the_study_run(first_study):
    study, _ = first_study
    trials = [t for t in study.trials if t.state.is_finished()]
    assert len(trials) == 4
    parents, children = parent_and_children("study-a")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    by_run = {c.info.run_id: c for c in children}
    assert sorted(t.user_attrs[RUN_ID_ATTR] for t in trials) == sorted(by_run)
    for t in trials:
        child = by_run[t.user_attrs[RUN_ID_ATTR]]
        assert child.data.tags["optuna.trial_number"] == str(t.number)
    p = parent.data.params
    assert p["objective"] == "val_neg_elbo" and p["optuna_sampler"] == "tpe" and p["pruner"] == "median"
    assert p["space_kl_beta_max"] == "0.01"


def test_pruned_trials_are_recorded_as_pruned_not_failed(first_study, store):
    """One worker, so the order is fixed: two good trials, then one the median pruner must stop."""
    _, config = first_study
    s = settings(store, "study-pruning", n_trials=3, workers=1, register_model="")
    study = open_study(s)
    for params in (GOOD, {**GOOD, "num_visible": 4}, BAD):
        study.enqueue_trial(params)
    study = run_study(s, config, SPACE, OPTIONS)
    states = [t.state for t in sorted(study.trials, key=lambda t: t.number)]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    pruned = study.trials[-1]
    child = MlflowClient().get_run(pruned.user_attrs[RUN_ID_ATTR])
    assert child.info.status == "FINISHED"  # not FAILED: pruning is not a crash
    assert child.data.tags["optuna.trial_state"] == "PRUNED"
    assert int(child.data.tags["optuna.pruned_at_epoch"]) < BASE["epochs"]
    assert len(MlflowClient().get_metric_history(child.info.run_id, "val_elbo")) == int(
        child.data.tags["optuna.pruned_at_epoch"])
    parent_id = child.data.tags["mlflow.parentRunId"]
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent_id, artifact_path="trials.csv"))
    assert table["value_is"].tolist()[:2] == ["val_neg_elbo"] * 2  # what a pruned trial's value measures:
    pruned_at = child.data.tags["optuna.pruned_at_epoch"]
    assert table["value_is"].tolist()[2] == f"val_neg_elbo at epoch {pruned_at} (pruned)"


def test_parent_run_has_study_plots_and_trial_table(first_study, tmp_path):
    _, children = parent_and_children("study-a")
    parent_id = children[0].data.tags["mlflow.parentRunId"]
    local = Path(mlflow.artifacts.download_artifacts(run_id=parent_id, dst_path=str(tmp_path)))
    assert (local / "trials.csv").read_text().count("\n") == 5  # header + 4 trials
    for name in ("optimization_history.png", "param_importances.png", "parallel_coordinate.png"):
        assert (local / "study_plots" / name).stat().st_size > 1000, name


def test_champion_is_the_best_trial_and_is_not_registered_twice(first_study):
    study, _ = first_study
    client = MlflowClient()
    champion = client.get_model_version_by_alias("qvae-mnist", "champion")
    assert champion.tags["run_id"] == study.best_trial.user_attrs[RUN_ID_ATTR]
    assert float(champion.tags["objective_value"]) == pytest.approx(study.best_value)
    again = register_champion(study, "qvae-mnist", objective="val_neg_elbo")
    assert not again.created and again.version.version == champion.version
    # scored on the test split once, after the study: on its run, the parent run and the version
    run = client.get_run(champion.tags["run_id"])
    assert run.data.tags["qvae.test_scored"] == "true" and "test_elbo" in run.data.metrics
    assert float(champion.tags["test_elbo"]) == pytest.approx(run.data.metrics["test_elbo"], rel=1e-5)
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.metrics["champion_test_elbo"] == run.data.metrics["test_elbo"]
    assert study.metric_names == ["val_neg_elbo"]
    assert len(client.search_model_versions("name='qvae-mnist'")) == 1


def test_the_champion_is_registered_while_another_writer_holds_the_database(first_study, store):
    """A writer holds the store longer than MLflow waits for it: registration still lands."""
    study, _ = first_study
    holder = hold_write_lock(store / "mlflow.db", MLFLOW_BUSY_TIMEOUT_S + 5)
    registration = register_champion(study, "qvae-locked", "champion", "val_neg_elbo")
    holder.wait()
    assert registration.created and registration.alias_moved
    champion = MlflowClient().get_model_version_by_alias("qvae-locked", "champion")
    assert champion.tags["run_id"] == study.best_trial.user_attrs[RUN_ID_ATTR]


def test_a_worse_study_does_not_demote_the_champion(first_study, store):
    _, config = first_study
    before = MlflowClient().get_model_version_by_alias("qvae-mnist", "champion")
    s = settings(store, "study-b", n_trials=1, workers=1)
    open_study(s).enqueue_trial(BAD)
    worse = run_study(s, config, SPACE, OPTIONS)
    assert worse.best_value > float(before.tags["objective_value"])
    after = MlflowClient().get_model_version_by_alias("qvae-mnist", "champion")
    assert after.version == before.version
    assert len(MlflowClient().search_model_versions("name='qvae-mnist'")) == 2  # registered, not promoted


def test_champion_loads_and_generates_in_a_fresh_process(first_study):
    code = ("import mlflow, pandas as pd; m = mlflow.pyfunc.load_model('models:/qvae-mnist@champion'); "
            "x = m.predict(pd.DataFrame({'seed': [1, 2, 3]})); "
            "print(x.shape, float(x.min()) >= 0, float(x.max()) <= 1)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "(3, 784) True True"


def test_a_trial_that_fails_unexpectedly_says_why(store, small_data):
    """Not a divergence or a bad setting: any error fails the trial, and the study and its MLflow run
    say which (a trial that failed with no reason once left a CI failure unexplained)."""
    from qvae.tracking.store import tracked_run
    from tuning.objective import Objective

    narrow = dataclasses.replace(small_data, train_x=small_data.train_x[:, :783])  # the model wants 784 pixels
    experiment = MlflowClient().create_experiment("a-trial-fails-unexpectedly")
    study = optuna.create_study()
    with tracked_run(experiment_id=experiment) as parent:
        objective = Objective(Config(**BASE), SPACE, OPTIONS, parent.info.run_id, "val_neg_elbo", narrow)
        with pytest.raises(ValueError, match="expected input_dim=784"):
            study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "ValueError: data mean has 783 values, expected input_dim=784"
    run = MlflowClient().get_run(trial.user_attrs[RUN_ID_ATTR])
    assert run.data.tags["fail_reason"] == trial.user_attrs["fail_reason"]
    assert run.data.tags["optuna.trial_state"] == "FAIL" and run.info.status == "FAILED"


def test_bad_settings_are_refused_before_anything_runs(store):
    with pytest.raises(ConfigError, match="pruner must be one of median, hyperband, none"):
        StudySettings(pruner="asha").validate()
    with pytest.raises(ConfigError, match="visible_min must be in 1..8"):
        SearchSpace(latent_total=16, visible_min=9)
    with pytest.raises(ConfigError, match="kl_beta_min and kl_beta_max"):
        SearchSpace(kl_beta_min=0.0)


def test_storage_passwords_are_redacted():
    assert redact("postgresql://qvae:s3cret@db:5432/optuna") == "postgresql://qvae:***@db:5432/optuna"
    assert redact("journal:/tmp/j.log") == "journal:/tmp/j.log"


def test_search_space_suggests_valid_splits():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        changes = SPACE.suggest(trial)
        assert changes["num_visible"] + changes["num_hidden"] == 16
        assert 4 <= changes["num_visible"] <= 12
        Config(**{**BASE, **changes})
        study.tell(trial, 0.0)


def test_search_space_can_search_the_transverse_field():
    """gamma_max > 0 searches the QBM's Gamma; every trial then uses PIMC, valid at any Gamma >= 0."""
    space = SearchSpace(latent_total=16, visible_min=4, visible_step=4, gamma_min=0.0, gamma_max=2.0)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    gammas = []
    for _ in range(20):
        trial = study.ask()
        changes = space.suggest(trial)
        assert changes["sampler"] == "pimc" and 0.0 <= changes["gamma"] <= 2.0
        assert Config(**{**BASE, **changes}).gamma == changes["gamma"]
        gammas.append(changes["gamma"])
        study.tell(trial, 0.0)
    assert max(gammas) - min(gammas) > 1.0
    assert "gamma" not in SPACE.suggest(study.ask())
    with pytest.raises(ConfigError, match="gamma_min and gamma_max must satisfy 0 <= gamma_min <= gamma_max"):
        SearchSpace(gamma_min=1.0, gamma_max=0.5)


def test_search_space_can_search_the_objectives_importance_samples():
    """iw_samples_max > 0 draws the training objective's k from 1..max; the likelihood preset's k = 5 is inside."""
    space = SearchSpace(latent_total=16, visible_min=4, visible_step=4, iw_samples_max=8)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    drawn = set()
    for _ in range(40):
        trial = study.ask()
        k = space.suggest(trial)["iw_samples"]
        assert 1 <= k <= 8 and Config(**{**BASE, "iw_samples": k}).iw_samples == k
        drawn.add(k)
        study.tell(trial, 0.0)
    assert {1, 8} <= drawn and len(drawn) >= 5
    assert "iw_samples" not in SPACE.suggest(study.ask())
    with pytest.raises(ConfigError, match="iw_samples_max"):
        SearchSpace(iw_samples_max=-1)


def ctrl_c_as_in_a_terminal() -> None:
    """SIGINT's default disposition in the child, as in a terminal, even when this test runs as a
    background job of a non-interactive shell (which starts it with SIGINT ignored)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_still_registers_the_best_finished_trial(store, mnist_dir):
    """SIGINT in the middle of a study: the finished trials' best model still becomes champion."""
    import signal

    journal = store / "interrupted.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"], "PYTHONUNBUFFERED": "1"}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in BASE.items() if k not in ("num_visible", "num_hidden")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuning", "--study-name", "interrupted", "--storage", f"journal:{journal}",
         "--n-trials", "50", "--objective", "val_neg_elbo", "--register-model", "qvae-interrupted",
         "--fid-samples", "0", "--epochs", "6", "--data-dir", str(mnist_dir), "--no-progress",
         "--visible-min", "4", "--visible-step", "4", *[f for f in flags if not f.startswith("--epochs")]],
        env=env, cwd=store, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=ctrl_c_as_in_a_terminal)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))

    def a_trial_completed() -> bool:
        try:
            trials = optuna.load_study(study_name="interrupted", storage=storage).trials
        except KeyError:  # the study does not exist yet
            return False
        running = [t for t in trials if t.state == TrialState.RUNNING and RUN_ID_ATTR in t.user_attrs]
        return any(t.state == TrialState.COMPLETE for t in trials) and bool(running)

    wait_until(a_trial_completed, "a completed trial and the next one training", process=proc)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=GENEROUS_TIMEOUT_S)
    assert proc.returncode == 0, output[-3000:]
    study = optuna.load_study(study_name="interrupted", storage=storage)
    assert len(study.trials) < 50
    (stopped,) = [t for t in study.trials if t.state == TrialState.FAIL]  # the one running at the Ctrl-C
    assert stopped.user_attrs["fail_reason"].startswith("interrupted")
    assert MlflowClient().get_run(stopped.user_attrs[RUN_ID_ATTR]).info.status == "KILLED", output[-3000:]
    parent = MlflowClient().get_run(stopped.user_attrs[RUN_ID_ATTR]).data.tags["mlflow.parentRunId"]
    assert MlflowClient().get_run(parent).info.status == "KILLED", output[-3000:]  # the study was stopped
    champion = MlflowClient().get_model_version_by_alias("qvae-interrupted", "champion")
    assert champion.tags["run_id"] == study.best_trial.user_attrs[RUN_ID_ATTR]


def test_val_nll_objective_needs_the_nll_and_uses_the_bound_for_a_quantum_prior():
    from tuning.objective import check_objective, objective_value

    with pytest.raises(ConfigError, match="objective=val_nll needs nll_samples >= 1"):
        check_objective("val_nll", JobOptions(nll_samples=0))
    check_objective("val_nll", JobOptions(nll_samples=10))
    assert objective_value("val_nll", {"val_nll": 99.0, "test_nll": 5.0, "fid": 5.0}) == 99.0
    assert objective_value("val_nll", {"val_nll_bound": 120.0}) == 120.0  # gamma > 0: only the bound exists
    assert objective_value("val_fid", {"val_fid": 40.0, "fid": 5.0}) == 40.0
    assert objective_value("val_neg_elbo", {"val_q_elbo": -130.0, "val_elbo_unnormalized": -20.0}) == 130.0


@pytest.mark.parametrize("retired,successor", [("fid", "val_fid"), ("test_nll", "val_nll")])
def test_objectives_that_chose_on_test_images_are_refused_with_their_successor(retired, successor):
    from tuning.objective import check_objective

    with pytest.raises(ConfigError, match=f"{retired!r} chose on the test images.*use {successor}"):
        check_objective(retired, JobOptions(nll_samples=10))


def test_a_study_never_reads_a_test_image_before_the_champions_final_scores(store, mnist_dir, monkeypatch):
    """The same study twice, once with every test image NaN: identical trial values (no trial, objective
    or pruner read a test image), and only the champion's final scores, after the study, differ."""
    import tuning.study
    from qvae.data.mnist import load_mnist_for

    config = Config(**{**BASE, "epochs": 2}, data_dir=str(mnist_dir))
    options = JobOptions(fid_samples=0, nll_samples=8, nll_images=50, nll_ais_chains=8, nll_ais_betas=10,
                         tsne_interval=1, tsne_points=20, tsne_final_points=20, progress=False)

    def poisoned(config):
        data = load_mnist_for(config)
        return dataclasses.replace(data, test_x=torch.full_like(data.test_x, float("nan")))

    studies = {}
    for name in ("honest-real", "honest-poisoned"):
        if name.endswith("poisoned"):
            monkeypatch.setattr(tuning.study, "load_mnist_for", poisoned)
        s = settings(store, name, objective="val_nll", n_trials=2, workers=1, register_model="", pruner="none")
        study = open_study(s)
        study.enqueue_trial(GOOD)
        study.enqueue_trial({**GOOD, "kl_beta": 1e-2})
        studies[name] = run_study(s, config, SPACE, options)
    real, poisoned_study = studies["honest-real"], studies["honest-poisoned"]
    assert [t.value for t in real.trials] == [t.value for t in poisoned_study.trials]  # bit for bit
    assert real.metric_names == ["val_nll"]
    client = MlflowClient()
    for honest, poisoned_trial in zip(real.trials, poisoned_study.trials):  # every logged number, not only the value
        a, b = (client.get_run(t.user_attrs[RUN_ID_ATTR]).data.metrics for t in (honest, poisoned_trial))
        untouched = lambda m: {k: v for k, v in m.items() if not k.startswith("test_") and not is_wall_clock(k)}  # noqa: E731
        assert untouched(a) == untouched(b)
    for study, finite in ((real, True), (poisoned_study, False)):
        for trial in study.trials:
            metrics = client.get_run(trial.user_attrs[RUN_ID_ATTR]).data.metrics
            assert metrics["val_nll"] == trial.value
            tested = sorted(k for k in metrics if k.startswith("test_"))
            if trial.number == study.best_trial.number:  # the champion: scored on test once, after the study
                assert "test_elbo" in tested and "test_nll" in tested
                assert math.isfinite(metrics["test_nll"]) is finite
            else:
                assert tested == []
