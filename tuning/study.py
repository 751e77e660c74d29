"""Running a study: storage, sampler, pruner, worker processes, the parent MLflow run.

One parent MLflow run per invocation holds the study's settings, plots and trial table; each
trial is a child run created with the parent's id, so workers in other processes (or on other
hosts) attach their trials to it. The study itself lives in an Optuna storage (a journal file by
default: safe for several processes on one machine; PostgreSQL for several hosts) and resumes with
`load_if_exists`.

Faults: on an RDB storage every running trial sends a heartbeat; a trial whose worker died (its
heartbeat older than `grace_period`) is failed by the next worker that starts a trial, its MLflow
run is marked FAILED, and a copy of it is queued to run again. The coordinator does the same at
once for the trials of its own workers that exited mid-trial, then runs whatever is missing.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, fail_stale_trials
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from qvae.config import Config, ConfigError, JobOptions
from qvae.data.mnist import load_mnist_for
from qvae.settings import check_fields, setting
from qvae.tracking.job import DEFAULT_REGISTERED_MODEL, log_new_params
from qvae.tracking.store import (
    creation_raced,
    end_active_run,
    file_lock,
    flush_pending_writes,
    mark_model_training,
    prepare_store,
    redact,
    store_write,
    tracked_run,
)
from qvae.train import DivergenceError
from tuning.objective import OBJECTIVES, RUN_ID_ATTR, WORKER_ATTR, Objective, check_objective
from tuning.space import SearchSpace, check_base_config

log = logging.getLogger(__name__)
DEFAULT_JOURNAL = "optuna-journal.log"
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
STORAGE_ENV = "QVAE_OPTUNA_STORAGE"  # the storage URL when `storage` is empty (keeps passwords off the command line)
try:  # Optuna >= 4.9 renamed the callback; the old name still works until 6.0
    from optuna.storages import RetryHeartbeatStaleTrialCallback as _RetryStale
except ImportError:  # pragma: no cover - older Optuna
    from optuna.storages import RetryFailedTrialCallback as _RetryStale


# Each trial's job: cheaper than the main job (FID on 1000 samples, no t-SNE pictures); its other
# options are the JobOptions defaults. A trial takes no naming or resume options from the command
# line (the study names, registers and resumes): those flags are left out.
TRIAL_DEFAULTS = {"fid_samples": 1000, "tsne_interval": 0, "tsne_final_points": 0}
TRIAL_FIXED = ("register_model", "experiment_name", "output_dir", "resume")


@dataclass
class StudySettings:
    """The study: where it lives, how it samples and prunes, how many trials, what it registers."""

    study_name: str = setting("qvae-mnist", "the Optuna study (a resumed study keeps its trials)",
                              pattern=r"[A-Za-z0-9_.-]{1,128}", pattern_text="1..128 letters, digits, '_', '.', '-'")
    storage: str = setting("", f"an Optuna storage URL (\"\": ${STORAGE_ENV}, else the journal file "
                           f"{DEFAULT_JOURNAL}); never a password under `mlflow run`")
    optuna_sampler: str = setting("tpe", "seeded with the config's seed (+ the worker's index)", choices=SAMPLERS)
    pruner: str = setting("median", "stops poor trials early on their per-epoch validation -ELBO", choices=PRUNERS)
    n_trials: int = setting(20, "the study's total: a resumed study runs only the missing ones", low=1)
    timeout: float = setting(0.0, "seconds per worker", low=0.0, note="0: no limit")
    workers: int = setting(1, "worker processes on this machine", low=1)
    objective: str = setting("val_fid", "what a trial minimises, on validation images (val_nll needs nll_samples >= 1)",
                             choices=OBJECTIVES)
    register_model: str = setting(DEFAULT_REGISTERED_MODEL, "register the best trial's model under this name "
                                  "(\"\": do not)")
    alias: str = setting("champion", "the registered model's alias for the best trial")
    heartbeat_interval: int = setting(60, "seconds between a running trial's heartbeats (RDB storages)", low=0,
                                      note="0: off")
    grace_period: int = setting(0, "seconds without a heartbeat before a trial counts as dead", low=0,
                                note="0: 2 x heartbeat_interval")
    max_retry: int = setting(3, "how often a dead worker's trial is queued again", low=0)
    extra: dict[str, Any] = setting({}, "free-form settings kept with the study")

    def validate(self) -> None:
        """Every declared range, then the rules between fields."""
        check_fields(self)
        if self.grace_period and self.heartbeat_interval and self.grace_period <= self.heartbeat_interval:
            raise ConfigError(f"grace_period must be > heartbeat_interval ({self.heartbeat_interval} s) or 0 "
                              f"(2 x heartbeat_interval), got {self.grace_period}")
        if has_password(self.storage) and os.environ.get("MLFLOW_RUN_ID"):
            raise ConfigError(
                f"storage must not carry a password under `mlflow run` (it logs -P storage verbatim as a run "
                f"param, here {redact(self.storage)}): set {STORAGE_ENV}=postgresql://user:password@host/db "
                f"(or PGPASSWORD / ~/.pgpass) and pass -P storage= empty or without the password. The run "
                f"{os.environ['MLFLOW_RUN_ID']} now holds it: delete the run (`mlflow gc`) and change the password")

    @property
    def storage_url(self) -> str:
        """`storage`, else $QVAE_OPTUNA_STORAGE, else the journal file in the working directory."""
        return self.storage or os.environ.get(STORAGE_ENV) or f"journal:{Path(DEFAULT_JOURNAL).resolve()}"


def has_password(url: str) -> bool:
    return redact(url) != url


def make_storage(url: str, settings: StudySettings | None = None) -> optuna.storages.BaseStorage | str:
    """`journal:PATH` (or a bare *.log path) becomes a file journal; an SQLAlchemy URL an RDB
    storage with heartbeats (a dead worker's trial is failed and queued again); anything else
    goes to Optuna as it is."""
    if url.startswith("journal:") or url.endswith(".log"):
        path = Path(url.removeprefix("journal:")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if re.match(r"^[a-z0-9+]+://", url) and not url.startswith(("grpc://", "redis://")):
        settings = settings or StudySettings()
        heartbeat = {}
        if settings.heartbeat_interval:
            heartbeat = dict(heartbeat_interval=settings.heartbeat_interval,
                             grace_period=settings.grace_period or None,
                             heartbeat_stale_trial_callback=DeadWorkerCallback(settings.max_retry))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=_engine_kwargs(url), **heartbeat)
    return url


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}  # several processes on one file: wait for the lock
    return {"pool_pre_ping": True}  # a server restart or a dropped connection is not a failed trial


class DeadWorkerCallback:
    """A trial whose worker died: its MLflow run becomes FAILED, and a copy of the trial (same
    params, none of the dead run's attributes) is queued, at most `max_retry` times per trial."""

    def __init__(self, max_retry: int | None = 3) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = _RetryStale(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reason = dead_worker_reason(trial)
        log.warning("trial %d failed: %s; queued again", trial.number, reason)
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            client = mlflow.MlflowClient()
            store_write(client.set_tag, run_id, "optuna.trial_state", "FAIL")
            store_write(client.set_tag, run_id, "fail_reason", reason)
            store_write(client.set_terminated, run_id, status="FAILED")
        fresh = copy.deepcopy(trial)
        fresh.user_attrs = {"retry_of": trial.number, "retry_reason": reason}  # the failed trial is frozen
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry(study, fresh)


def dead_worker_reason(trial: FrozenTrial) -> str:
    return f"worker {trial.user_attrs.get(WORKER_ATTR, '(unknown)')} died during the trial"


def retried(study: optuna.Study) -> set[int]:
    """Numbers of the failed trials that were queued again (their copy stands in for them)."""
    return {n for t in study.trials for n in t.system_attrs.get("retry_history", [])}


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Finished trials that count towards n_trials: a failed trial that was retried does not."""
    again = retried(study)
    return [t for t in study.trials if t.state in FINISHED_STATES
            and not (t.state == TrialState.FAIL and t.number in again)]


def fail_orphaned_trials(study: optuna.Study, storage: BaseStorage, pids: list[int], host: str | None = None,
                         max_retry: int | None = 3) -> list[int]:
    """Fail (and retry) the running trials held by worker processes `pids` of `host`, now dead.
    `storage` is the study's (as `open_study_and_storage` returns it)."""
    host = host or socket.gethostname()
    owners = {f"{host}:{pid}" for pid in pids}
    # RDBStorage is Optuna's one public storage with heartbeats (its BaseHeartbeat base class is private)
    heartbeat = isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None
    callback = (heartbeat and storage.get_heartbeat_stale_trial_callback()) or DeadWorkerCallback(max_retry)
    study_id = storage.get_study_id_from_name(study.study_name)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR) not in owners:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", dead_worker_reason(trial))
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker's heartbeat check got there first
        callback(study, storage.get_trial(trial_id))
        failed.append(trial.number)
    if heartbeat:
        fail_stale_trials(study)  # a worker that died before naming itself, or on another host
    return failed


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
    """Create the study or load it: safe when many processes (or hosts) start at once."""
    return open_study_and_storage(settings, seed, worker)[0]


def open_study_and_storage(settings: StudySettings, seed: int = 0,
                           worker: int = 0) -> tuple[optuna.Study, BaseStorage | str]:
    """`open_study`, and the storage it made (`make_storage`) for direct use, e.g. to fail trials."""
    url = settings.storage_url
    db = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None

    def create() -> tuple[optuna.Study, BaseStorage | str]:
        with file_lock(db.with_name(db.name + ".lock")) if db else contextlib.nullcontext():
            storage = make_storage(url, settings)
            study = optuna.create_study(storage=storage, study_name=settings.study_name,
                                        sampler=make_sampler(settings, seed, worker), pruner=make_pruner(settings),
                                        direction="minimize", load_if_exists=True)
            if study.metric_names != [settings.objective]:  # what dashboards show instead of "Objective 0"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names([settings.objective])
            return study, storage

    # another process may create the tables or the study between check and insert
    return store_write(create, retry_if=lambda err: isinstance(err, optuna.exceptions.DuplicatedStudyError)
                       or creation_raced(err), attempts=6)


def remaining_trials(study: optuna.Study, n_trials: int) -> int:
    """How many trials a (possibly resumed) study still needs to hold n_trials finished ones."""
    return max(0, n_trials - len(counted_trials(study)))


class StopWhenDone:
    """Stops a worker once the study holds n_trials counted trials (several hosts share one study)."""

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if remaining_trials(study, self.n_trials) == 0:
            study.stop()


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
    study = open_study(settings, spec.config["seed"], spec.worker)
    study.optimize(objective, n_trials=spec.n_trials, timeout=settings.timeout or None,
                   catch=(DivergenceError, ConfigError), callbacks=[StopWhenDone(settings.n_trials)])


def run_study(settings: StudySettings, config: Config, space: SearchSpace, options: JobOptions) -> optuna.Study:
    """The coordinator: parent run, workers, then plots, the trial table and the champion."""
    from tuning.registry import register_champion
    from tuning.report import log_study_report

    settings.validate()
    space.validate()
    check_base_config(config)
    options.validate(config, "validation")  # what the trials score
    options.validate(config, "test")  # the champion, once
    check_objective(settings.objective, options)
    prepare_store()  # the tracking store exists (or its server answers) before any worker starts
    study, storage = open_study_and_storage(settings, config.seed)  # created once, before any worker starts
    with tracked_run(run_name=options.run_name or f"study-{settings.study_name}") as parent:
        store_write(mlflow.set_tags, {"qvae.entry_point": "tune", "optuna.study_name": settings.study_name})
        mark_model_training(parent.info.experiment_id)
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
        interrupted = False
        try:
            if settings.workers == 1:
                run_worker(dataclasses.replace(spec, n_trials=shares[0]))
            else:
                dead = run_worker_processes(spec, shares)
                if dead:  # their running trials were failed and queued again: run what is missing
                    if isinstance(storage, BaseStorage):  # read afresh: the workers wrote to it
                        fail_orphaned_trials(study, storage, dead, max_retry=settings.max_retry)
                    missing = remaining_trials(study, settings.n_trials)
                    log.warning("worker process(es) %s died; running the %d missing trial(s) here", dead, missing)
                    run_worker(dataclasses.replace(spec, n_trials=missing))
        except KeyboardInterrupt:  # the interrupted trial's run has ended (KILLED) on its way out
            log.warning("interrupted: registering the best finished trial so far")
            interrupted = True
            store_write(mlflow.MlflowClient().set_tag, parent.info.run_id, "optuna.interrupted", "true")
        finally:
            flush_pending_writes()
            study = open_study(settings)
            log_study_report(study, settings.objective)
            test_scores = {} if interrupted else champion_test_scores(study, config, options)
            if settings.register_model:
                registration = register_champion(study, settings.register_model, settings.alias, settings.objective)
                if registration is not None and test_scores:
                    tag_version_with_scores(registration, test_scores)
        if interrupted:
            end_active_run(parent.info.run_id, "KILLED")  # a person stopped the study
    return study


def champion_test_scores(study: optuna.Study, config: Config, options: JobOptions) -> dict[str, float]:
    """The best trial's test scores (computed once; see tuning/champion.py), also logged on the
    study's parent run as `champion_*`. Skipped after an interrupt: a person asked to stop."""
    from tuning.champion import score_champion

    scores = score_champion(study, load_mnist_for(config), options.score_settings(), seed=config.seed,
                            progress=options.progress)
    if scores:
        store_write(mlflow.log_metrics, {f"champion_{k}": v for k, v in scores.items()})
    return scores


def tag_version_with_scores(registration: Any, scores: dict[str, float]) -> None:
    client = mlflow.MlflowClient()
    version = registration.version
    for name, value in sorted(scores.items()):
        store_write(client.set_model_version_tag, version.name, version.version, name, f"{value:.6g}")


def run_worker_processes(spec: WorkerSpec, shares: list[int]) -> list[int]:
    """One process per share of trials, all on the same study; waits for every one and returns
    the pids of those that did not exit cleanly (killed, crashed)."""
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
    return [processes[i].pid for i in failed]
