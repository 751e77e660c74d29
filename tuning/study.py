"""Running a study: storage, sampler, pruner, worker processes, the parent MLflow run.

One parent MLflow run per invocation holds the study's settings, plots and trial table; each
trial is a child run created with the parent's id, so workers in other processes (or on other
hosts) attach their trials to it. The study itself lives in an Optuna storage (a journal file by
default: safe for several processes on one machine) and resumes with `load_if_exists`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from qvae.config import Config, ConfigError, JobOptions
from qvae.data import load_mnist_for
from qvae.tracking import DEFAULT_REGISTERED_MODEL, log_new_params
from qvae.train import DivergenceError

from .objective import OBJECTIVES, Objective, check_objective
from .space import SearchSpace

log = logging.getLogger(__name__)
DEFAULT_JOURNAL = "optuna-journal.log"
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class StudySettings:
    study_name: str = "qvae-mnist"
    storage: str = ""  # an Optuna storage URL; "" = a journal file in the working directory
    optuna_sampler: str = "tpe"  # seeded with the config's seed (+ the worker's index)
    pruner: str = "median"
    n_trials: int = 20  # the study's total: a resumed study runs only the missing ones
    timeout: float = 0.0  # seconds per worker; 0 = no limit
    workers: int = 1
    objective: str = "fid"
    register_model: str = DEFAULT_REGISTERED_MODEL  # "" = do not register the best trial
    alias: str = "champion"
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", self.study_name):
            raise ConfigError(f"study_name must be 1..128 letters, digits, '_', '.', '-'; got {self.study_name!r}")
        for name, choices in (("optuna_sampler", SAMPLERS), ("pruner", PRUNERS), ("objective", OBJECTIVES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")
        if self.n_trials < 1:
            raise ConfigError(f"n_trials must be >= 1, got {self.n_trials}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.timeout < 0:
            raise ConfigError(f"timeout must be >= 0 seconds (0: none), got {self.timeout}")

    @property
    def storage_url(self) -> str:
        return self.storage or f"journal:{Path(DEFAULT_JOURNAL).resolve()}"


def redact(url: str) -> str:
    """A storage or tracking URL with any password replaced, safe to log."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def make_storage(url: str) -> optuna.storages.BaseStorage | str:
    """`journal:PATH` (or a bare *.log path) becomes a file journal; anything else goes to Optuna."""
    if url.startswith("journal:") or url.endswith(".log"):
        path = Path(url.removeprefix("journal:")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    return url


def make_sampler(settings: StudySettings, seed: int = 0, worker: int = 0) -> optuna.samplers.BaseSampler:
    seed = seed + worker  # distinct streams per worker, reproducible per worker
    if settings.optuna_sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, settings.n_trials // 4)))


def make_pruner(settings: StudySettings) -> optuna.pruners.BasePruner:
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


def open_study(settings: StudySettings, seed: int = 0, worker: int = 0) -> optuna.Study:
    return optuna.create_study(storage=make_storage(settings.storage_url), study_name=settings.study_name,
                               sampler=make_sampler(settings, seed, worker), pruner=make_pruner(settings),
                               direction="minimize", load_if_exists=True)


def remaining_trials(study: optuna.Study, n_trials: int) -> int:
    """How many trials a (possibly resumed) study still needs to hold n_trials finished ones."""
    return max(0, n_trials - sum(t.state in FINISHED_STATES for t in study.trials))


def split_trials(total: int, workers: int) -> list[int]:
    """`total` trials shared out as evenly as possible; exact, unlike a shared stop callback."""
    return [total // workers + (i < total % workers) for i in range(workers)]


@dataclass
class WorkerSpec:
    """Everything a worker process needs, passed as one JSON file."""

    settings: dict[str, Any]
    config: dict[str, Any]
    space: dict[str, Any]
    options: dict[str, Any]
    parent_run_id: str
    worker: int = 0
    n_trials: int = 0  # this worker's share of the study's missing trials

    def objective(self) -> tuple[StudySettings, Objective]:
        settings = StudySettings(**self.settings)
        config = Config.from_dict(self.config)
        data = load_mnist_for(config)
        options = JobOptions(**self.options)
        return settings, Objective(config, SearchSpace(**self.space), options, self.parent_run_id,
                                   settings.objective, data, settings.study_name)


def run_worker(spec: WorkerSpec) -> None:
    if spec.n_trials < 1:
        return
    settings, objective = spec.objective()
    open_study(settings, spec.config["seed"], spec.worker).optimize(objective, n_trials=spec.n_trials, timeout=settings.timeout or None,
                                               catch=(DivergenceError, ConfigError))


def run_study(settings: StudySettings, config: Config, space: SearchSpace, options: JobOptions) -> optuna.Study:
    """The coordinator: parent run, workers, then plots, the trial table and the champion."""
    from .registry import register_champion
    from .report import log_study_report

    settings.validate()
    space.validate()
    options.validate(config)
    check_objective(settings.objective, options)
    study = open_study(settings, config.seed)  # create the study once, before any worker starts
    with mlflow.start_run(run_name=options.run_name or f"study-{settings.study_name}") as parent:
        mlflow.set_tags({"qvae.entry_point": "tune", "optuna.study_name": settings.study_name})
        log_new_params({"study_name": settings.study_name, "storage_url": redact(settings.storage_url),
                           "optuna_sampler": settings.optuna_sampler, "pruner": settings.pruner, "seed": config.seed,
                           "n_trials": settings.n_trials, "workers": settings.workers,
                           "objective": settings.objective, "fid_samples": options.fid_samples,
                           **{f"space_{k}": v for k, v in space.to_dict().items()},
                           **{f"base_{k}": v for k, v in config.to_dict().items()}})
        spec = WorkerSpec(asdict(settings), config.to_dict(), space.to_dict(),
                          {**asdict(options), "extra_tags": {}}, parent.info.run_id)
        shares = split_trials(remaining_trials(study, settings.n_trials), settings.workers)
        if not any(shares):
            log.warning("study %s already holds %d finished trials: nothing to run", settings.study_name,
                        settings.n_trials)
        try:
            if settings.workers == 1:
                run_worker(dataclasses.replace(spec, n_trials=shares[0]))
            else:
                run_worker_processes(spec, shares)
        except KeyboardInterrupt:
            log.warning("interrupted: registering the best finished trial so far")
            mlflow.set_tag("optuna.interrupted", "true")
        finally:
            study = open_study(settings)
            log_study_report(study)
            if settings.register_model:
                register_champion(study, settings.register_model, settings.alias, settings.objective)
    return study


def run_worker_processes(spec: WorkerSpec, shares: list[int]) -> None:
    """One process per share of trials, all on the same study; waits for every one."""
    with tempfile.TemporaryDirectory(prefix="qvae-tune-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
        processes = []
        for worker, n_trials in enumerate(shares):
            if not n_trials:
                continue
            path = Path(tmp) / f"worker-{worker}.json"
            path.write_text(json.dumps({**asdict(spec), "worker": worker, "n_trials": n_trials}))
            processes.append(subprocess.Popen([sys.executable, "-m", "tuning", "worker", str(path)], env=env))
        try:
            codes = [p.wait() for p in processes]
        except KeyboardInterrupt:
            for p in processes:
                p.terminate()
            for p in processes:
                p.wait()
            raise
    failed = [i for i, code in enumerate(codes) if code != 0]
    if failed:
        log.warning("worker(s) %s exited with codes %s", failed, [codes[i] for i in failed])
