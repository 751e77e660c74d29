"""The objective of one trial: train a QVAE in an MLflow child run and return its validation score.

Every objective reads the validation split only (val_fid: FID against validation images, with
their own cached statistics; val_neg_elbo: the chosen epoch's validation -ELBO; val_nll: the
importance-weighted NLL of validation images): a trial never reads a test image. The study's
champion is scored on the test split once, after the study (tuning/champion.py).

Each epoch reports the validation negative ELBO to Optuna (`PRUNING_QUANTITY`), so a pruner can
stop a poor trial early; a pruned trial keeps its child run (marked pruned, not failed), and its
value in Optuna is that -ELBO, not the objective (trials.csv says which). Invalid trials (a config
that cannot be built, a diverging loss) fail with the reason recorded on the trial and the run,
and the study goes on.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import replace

import mlflow
import optuna

from qvae.config import Config, ConfigError, JobOptions
from qvae.data.mnist import MnistData
from qvae.tracking.job import run_main_job
from qvae.tracking.store import store_write
from qvae.train import DivergenceError, EpochReport, StopTraining, elbo_key
from tuning.space import SearchSpace

log = logging.getLogger(__name__)
OBJECTIVES = ("val_fid", "val_neg_elbo", "val_nll")
RETIRED_OBJECTIVES = {"fid": "val_fid", "test_nll": "val_nll"}  # they chose on the test images
PRUNING_QUANTITY = "val_neg_elbo"  # what every trial reports per epoch (what a pruned trial's value is)
RUN_ID_ATTR = "mlflow_run_id"
MODEL_URI_ATTR = "model_uri"
WORKER_ATTR = "worker"  # host:pid of the process running the trial (to fail it if that process dies)


def negative_elbo(metrics: dict[str, float]) -> float:
    """-ELBO on the validation set (nats): the exact one (RBM), the Q-ELBO bound (QBM), or the
    unnormalised one if log Z was not estimated (see qvae.train.elbo_key)."""
    return -metrics[elbo_key(metrics, "val_")]


def objective_value(objective: str, metrics: dict[str, float]) -> float:
    """The number a trial minimises, from its chosen (best-on-validation) checkpoint's metrics: the
    validation FID, the validation negative ELBO, or the validation NLL (for a quantum prior its own
    `val_nll` when the trial estimated it, nll_clamped_chains > 0, else the upper bound `val_nll_bound`)."""
    if objective == "val_fid":
        return metrics["val_fid"]
    if objective == "val_nll":
        return metrics["val_nll"] if "val_nll" in metrics else metrics["val_nll_bound"]
    return negative_elbo(metrics)


def check_objective(objective: str, options: JobOptions) -> None:
    """The objective exists, and FID or NLL have samples to compute."""
    if objective in RETIRED_OBJECTIVES:
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}: {objective!r} chose on the test "
                          f"images, which only the final scores read; use {RETIRED_OBJECTIVES[objective]}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if objective == "val_nll" and options.nll_samples < 1:
        raise ConfigError(f"objective=val_nll needs nll_samples >= 1 (importance samples per validation image), "
                          f"got {options.nll_samples}")
    if objective == "val_fid" and options.fid_samples < 2:
        raise ConfigError(f"objective=val_fid needs fid_samples >= 2, got {options.fid_samples}")


class PruningCallback:
    """Reports -val_elbo each epoch; stops training when the pruner says so."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.pruned_at: int | None = None

    def on_epoch_end(self, report: EpochReport) -> None:
        value = negative_elbo(report.metrics)
        if not math.isfinite(value):
            raise DivergenceError(f"epoch {report.epoch}: validation negative ELBO is {value}")
        self.trial.report(value, report.epoch)
        if self.trial.should_prune():
            self.pruned_at = report.epoch
            store_write(mlflow.set_tags, {"optuna.trial_state": "PRUNED",
                                          "optuna.pruned_at_epoch": str(report.epoch)})
            raise StopTraining


class Objective:
    """Callable for `study.optimize`: one trial = one MLflow child run of `parent_run_id`."""

    def __init__(self, base: Config, space: SearchSpace, options: JobOptions, parent_run_id: str,
                 objective: str = "val_fid", data: MnistData | None = None, study_name: str = "") -> None:
        check_objective(objective, options)
        self.base, self.space, self.options = base, space, options
        self.parent_run_id, self.objective, self.data, self.study_name = parent_run_id, objective, data, study_name

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        try:
            config = self.base.replace(**self.space.suggest(trial))
        except ConfigError as err:
            trial.set_user_attr("fail_reason", str(err))
            raise
        options = replace(self.options, run_name=f"trial-{trial.number}", register_model="",
                          extra_tags={"optuna.study_name": self.study_name, "optuna.trial_number": str(trial.number),
                                      "qvae.entry_point": "tune"})
        pruning = PruningCallback(trial)
        try:
            result = run_main_job(config, options, parent_run_id=self.parent_run_id, callbacks=[pruning],
                                  data=self.data, on_run_start=lambda run_id: trial.set_user_attr(RUN_ID_ATTR, run_id),
                                  score_split="validation")
        except (DivergenceError, ConfigError) as err:  # the trial fails with its reason; the study goes on
            self._record_failure(trial, str(err))
            raise
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: Optuna fails the trial; say why (its run ends KILLED)
            trial.set_user_attr("fail_reason", "interrupted (SIGINT or SIGTERM) before the trial finished")
            raise
        except Exception as err:  # anything else fails the trial too (and stops its worker): say why, where it shows
            self._record_failure_if_possible(trial, f"{type(err).__name__}: {err}")
            raise
        if result.stopped_early:
            raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_at}")
        trial.set_user_attr(MODEL_URI_ATTR, result.model_uri)
        value = objective_value(self.objective, result.metrics)
        if not math.isfinite(value):
            self._record_failure(trial, f"objective {self.objective} is {value}")
            raise DivergenceError(f"objective {self.objective} is {value}")
        client = mlflow.MlflowClient()
        store_write(client.set_tag, result.run_id, "optuna.trial_state", "COMPLETE")
        store_write(client.set_tag, result.run_id, "optuna.objective", self.objective)
        store_write(client.log_metric, result.run_id, "objective", value)
        return value

    @classmethod
    def _record_failure_if_possible(cls, trial: optuna.Trial, reason: str) -> None:
        """_record_failure when the stores take it: the error that failed the trial may be theirs,
        and it, not a second one, is what propagates."""
        try:
            cls._record_failure(trial, reason)
        except Exception as err:  # noqa: BLE001 (reported, then the original error goes on)
            log.warning("could not record why trial %d failed (%s): %s", trial.number, reason[:200], err)

    @staticmethod
    def _record_failure(trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("fail_reason", reason)
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            client = mlflow.MlflowClient()
            store_write(client.set_tag, run_id, "optuna.trial_state", "FAIL")
            store_write(client.set_tag, run_id, "fail_reason", reason[:5000])
