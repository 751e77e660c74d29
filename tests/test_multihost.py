"""Multi-host mode for real: Optuna on PostgreSQL, MLflow through `mlflow server` on PostgreSQL with
served artifacts and basic authentication (the workers log in as a non-admin worker user, credentials
in their environment), three worker processes, one of them killed with SIGKILL in the middle of a trial.

Needs QVAE_TEST_POSTGRES_URL (`.ci/run` starts a throwaway cluster); skips with the reason otherwise.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.servers import BasicAuth, fresh_database, mlflow_server, postgres_admin_url, secrets_found
from tests.waiting import GENEROUS_TIMEOUT_S, wait_until
from tuning.objective import RUN_ID_ATTR, WORKER_ATTR
from tuning.study import counted_trials

pytestmark = pytest.mark.postgres

N_TRIALS = 4
TRIAL_FLAGS = ["--epochs", "2", "--batch-size", "64", "--hidden-dim", "32", "--latent-dim", "16",
               "--train-size", "512", "--validation-size", "256", "--test-size", "256",
               "--sampler-chains", "32", "--log-z-betas", "20",
               "--log-z-chains", "16", "--generate-sweeps", "10", "--device", "cpu", "--fid-samples", "0",
               "--visible-min", "4", "--visible-step", "4", "--dist-beta-min", "5", "--dist-beta-max", "15",
               "--kl-beta-min", "1e-4", "--kl-beta-max", "1e-2", "--no-progress"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Fresh Optuna and MLflow databases and an authenticated `mlflow server` on the latter (served
    artifacts; its users in SQLite in the tmp dir)."""
    admin = postgres_admin_url()
    tmp = tmp_path_factory.mktemp("multihost")
    auth = BasicAuth.fresh(tmp / "auth")
    with fresh_database(admin, "optuna") as optuna_db, fresh_database(admin, "mlflow") as mlflow_db:
        with mlflow_server(mlflow_db, tmp / "served-artifacts", tmp / "server.log", auth=auth) as url:
            yield dict(admin=admin, optuna_db=optuna_db, tracking=url, tmp=tmp, auth=auth)


def children_of(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def kill_a_worker_mid_trial(coordinator: subprocess.Popen, storage) -> int:
    """SIGKILL the worker process of a running trial that has reported its first epoch."""
    host = socket.gethostname()

    def a_worker_mid_trial() -> tuple[int, int] | None:
        try:
            trials = optuna.load_study(study_name="multihost", storage=storage).get_trials(
                deepcopy=False, states=(TrialState.RUNNING,))
        except KeyError:  # the coordinator has not created the study yet
            return None
        for trial in trials:
            owner = trial.user_attrs.get(WORKER_ATTR, "")
            if trial.intermediate_values and owner.startswith(f"{host}:"):
                pid = int(owner.rsplit(":", 1)[1])
                if pid in children_of(coordinator.pid):  # only a process this test started
                    return trial.number, pid
        return None

    number, pid = wait_until(a_worker_mid_trial, "a running trial to interrupt", process=coordinator, poll=0.3)
    os.kill(pid, signal.SIGKILL)
    return number


def test_three_workers_survive_a_killed_one(cluster, monkeypatch):
    tmp, admin, auth = cluster["tmp"], cluster["admin"], cluster["auth"]
    password = admin.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]  # PostgreSQL's, in the storage URL
    env = {**os.environ, "MLFLOW_TRACKING_URI": cluster["tracking"], **auth.worker.env(),
           "QVAE_OPTUNA_STORAGE": cluster["optuna_db"],
           "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_RUN_ID", None)
    started = time.time()
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "tuning", "--study-name", "multihost", "--n-trials", str(N_TRIALS), "--workers", "3",
         "--heartbeat-interval", "1", "--grace-period", "4", "--objective", "val_neg_elbo",
         "--register-model", "qvae-multihost", *TRIAL_FLAGS],
        env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    storage = optuna.storages.RDBStorage(cluster["optuna_db"])
    killed = kill_a_worker_mid_trial(coordinator, storage)
    output, _ = coordinator.communicate(timeout=GENEROUS_TIMEOUT_S)
    print(f"coordinator took {time.time() - started:.0f} s; its output (workers' included):\n{output}")
    assert coordinator.returncode == 0, output[-5000:]

    study = optuna.load_study(study_name="multihost", storage=storage)
    trials = study.trials
    # every trial is accounted for: finished, or failed with its copy queued and run
    assert not [t.number for t in trials if not t.state.is_finished()]
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert "died during the trial" in retries[0].user_attrs["retry_reason"]
    assert retries[0].params == trials[killed].params
    counted = counted_trials(study)
    assert len(counted) == N_TRIALS, [(t.number, t.state.name) for t in trials]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in counted), (
        [(t.number, t.state.name, t.user_attrs.get("fail_reason"), t.system_attrs.get("failed_trial")) for t in trials],
        output[-5000:])

    # one MLflow child run per trial (the killed one FAILED), no duplicates, all under one parent
    for key, value in auth.worker.env().items():  # this process reads as the worker too
        monkeypatch.setenv(key, value)
    client = MlflowClient(tracking_uri=cluster["tracking"])
    runs = client.search_runs(["0"])  # the Default experiment, where a study's runs go
    assert {r.info.user_id for r in runs} == {auth.worker.username}
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_id: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(parents) == 1 and len(children) == len(trials)
    assert sorted(t.user_attrs[RUN_ID_ATTR] for t in trials) == sorted(children)
    for t in trials:
        run = children[t.user_attrs[RUN_ID_ATTR]]
        assert run.data.tags["optuna.trial_number"] == str(t.number)
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        expected = "FAILED" if t.number == killed else "FINISHED"
        assert run.info.status == expected, (t.number, run.info.status)
    assert "died" in children[trials[killed].user_attrs[RUN_ID_ATTR]].data.tags["fail_reason"]

    # the champion is the best trial's model, and its artifacts went through the server
    champion = client.get_model_version_by_alias("qvae-multihost", "champion")
    assert champion.tags["run_id"] == study.best_trial.user_attrs[RUN_ID_ATTR]
    names = {a.path for a in client.list_artifacts(champion.tags["run_id"], "checkpoints")}
    assert "checkpoints/last.pt" in names
    assert list((tmp / "served-artifacts").rglob("last.pt")), "artifacts did not go to the served destination"

    # no password (PostgreSQL's in the storage URL, the tracking users') reaches MLflow or the logs
    assert parents[0].data.params["storage_url"].count("***") == 1
    folders = [Path(mlflow.artifacts.download_artifacts(**where, dst_path=str(tmp / "scan" / str(i)),
                                                        tracking_uri=cluster["tracking"]))
               for i, where in enumerate(({"run_id": parents[0].info.run_id}, {"run_id": champion.tags["run_id"]},
                                          {"artifact_uri": client.get_model_version_download_uri(
                                              "qvae-multihost", champion.version)}))]
    leaks = secrets_found([password, auth.worker.password, auth.admin.password], runs=runs,
                          logs={"coordinator": output}, folders=folders)
    assert not leaks, leaks


LOG_THE_SAME_DATASETS = """
import sys
import mlflow, numpy as np
from mlflow.data.numpy_dataset import from_numpy
from qvae.tracking.store import log_input_once

tag, count = sys.argv[1], int(sys.argv[2])
datasets = [from_numpy(np.full((4, 784), i, dtype=np.uint8), name=f"{tag}-{i}") for i in range(count)]
with mlflow.start_run() as run:
    print("ready", flush=True)
    sys.stdin.readline()
    for dataset in datasets:
        log_input_once(dataset, "training")
print("run", run.info.run_id)
"""


def test_workers_logging_the_same_datasets_at_once_all_succeed(cluster, monkeypatch):
    """A study's workers start their trials together and log the same MNIST splits. MLflow looks a
    dataset up before it inserts it, so through a server on PostgreSQL all but one of them may hit its
    unique key (the likely cause of a trial CI once saw fail without a reason). Four processes log the
    same 12 new datasets at one moment: every one succeeds, and every run holds all 12."""
    auth, count = cluster["auth"], 12
    for key, value in auth.worker.env().items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(tracking_uri=cluster["tracking"])
    experiment = client.create_experiment(f"dataset-crowd-{os.getpid()}-{time.time_ns()}")
    env = {**os.environ, "MLFLOW_TRACKING_URI": cluster["tracking"], "MLFLOW_EXPERIMENT_ID": experiment,
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    processes = [subprocess.Popen([sys.executable, "-c", LOG_THE_SAME_DATASETS, f"crowd{experiment}", str(count)],
                                  env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
                 for _ in range(4)]
    for process in processes:  # each has imported mlflow and started its run
        wait_until(lambda: process.stdout.readline().strip() == "ready", "a process ready to log", process=process,
                   poll=0)
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    outputs = [p.communicate(timeout=GENEROUS_TIMEOUT_S)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), "\n".join(o[-3000:] for o in outputs)
    run_ids = [line.split()[1] for o in outputs for line in o.splitlines() if line.startswith("run ")]
    assert len(run_ids) == 4
    for run_id in run_ids:
        assert len(client.get_run(run_id).inputs.dataset_inputs) == count
