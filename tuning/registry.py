"""Registering the study's best model and moving the `champion` alias only when it is better.

A registered version carries tags naming its study, trial, params and objective value, so the
same trial is never registered twice, and the alias compares like with like: a worse study, or
one optimising another objective, never demotes the current champion.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import mlflow
import optuna
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from optuna.trial import TrialState

from qvae.tracking.store import store_write
from tuning.objective import MODEL_URI_ATTR, RUN_ID_ATTR

log = logging.getLogger(__name__)


@dataclass
class Registration:
    version: ModelVersion
    created: bool  # False: this trial was registered before; its version was reused
    alias_moved: bool
    previous_champion: str | None


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best completed trial with a logged model and a finite value (None: there is none)."""
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE and t.user_attrs.get(MODEL_URI_ATTR)
                and t.value is not None and math.isfinite(t.value)]
    if not complete:
        return None
    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    return min(complete, key=lambda t: t.value) if minimize else max(complete, key=lambda t: t.value)


def register_champion(study: optuna.Study, name: str, alias: str = "champion", objective: str = "val_fid",
                      client: MlflowClient | None = None) -> Registration | None:
    """Register the best completed trial's model; point `alias` at it if it beats the holder."""
    client = client or MlflowClient()
    best = best_trial(study)
    if best is None:
        log.warning("no completed trial in study %s: nothing to register", study.study_name)
        return None
    version, created = _version_for_trial(client, name, study.study_name, best, objective)
    previous = _current_holder(client, name, alias)
    moved = False
    if previous is None or _beats(best.value, previous, objective, study.direction):
        if previous is None or previous.version != version.version:
            store_write(client.set_registered_model_alias, name, alias, version.version)
            moved = True
    else:
        log.info("%s@%s stays at version %s (objective %s %s) over this study's best %.6g", name, alias,
                 previous.version, previous.tags.get("objective_name"), previous.tags.get("objective_value"),
                 best.value)
    return Registration(version, created, moved, None if previous is None else previous.version)


def _version_for_trial(client: MlflowClient, name: str, study_name: str, trial: optuna.trial.FrozenTrial,
                       objective: str) -> tuple[ModelVersion, bool]:
    try:
        store_write(client.create_registered_model, name,
                    description="QVAE MNIST generators registered by the tuning study")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    for version in client.search_model_versions(f"name='{name}'"):
        tags = version.tags
        if tags.get("study") == study_name and tags.get("trial_number") == str(trial.number):
            return version, False
    run_id = trial.user_attrs[RUN_ID_ATTR]
    tags = {"study": study_name, "trial_number": str(trial.number), "objective_name": objective,
            "objective_value": repr(float(trial.value)), "direction": "minimize", "run_id": run_id,
            **{f"param.{k}": str(v) for k, v in trial.params.items()}}
    version = store_write(mlflow.register_model, trial.user_attrs[MODEL_URI_ATTR], name, tags=tags)
    description = f"study {study_name}, trial {trial.number}, {objective} = {trial.value:.6g}"
    store_write(client.update_model_version, name, version.version, description=description)
    return client.get_model_version(name, version.version), True


def _current_holder(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _beats(value: float, holder: ModelVersion, objective: str, direction: optuna.study.StudyDirection) -> bool:
    """True when `value` is strictly better than the holder's on the same objective."""
    if holder.tags.get("objective_name") != objective:
        log.warning("champion version %s was chosen on %r, this study on %r: not comparable, alias kept",
                    holder.version, holder.tags.get("objective_name"), objective)
        return False
    try:
        held = float(holder.tags["objective_value"])
    except (KeyError, ValueError):
        return True  # a holder without a recorded objective cannot claim to be better
    return value < held if direction == optuna.study.StudyDirection.MINIMIZE else value > held
