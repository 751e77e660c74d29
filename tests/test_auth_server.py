"""The tracking server with MLflow's basic authentication, for real: one `mlflow server --app-name
basic-auth` process (SQLite backend, served artifacts, a random admin password, a separate worker
user, logins cached for a minute as the guide sets it) shared by the module. Anonymous and wrong
credentials are refused with HTTP 401, also right after a cached login and a password change; the
worker logs runs and artifacts; a real `qvae run` as the worker records its password nowhere."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tests.servers import (
    CREATE_USER,
    LEGACY_DEFAULT_ADMIN_PASSWORD,
    UPDATE_PASSWORD,
    BasicAuth,
    Credentials,
    answers,
    api,
    mlflow_server,
    secrets_found,
)
from tests.waiting import GENEROUS_TIMEOUT_S

TINY = ["--epochs", "1", "--train-size", "512", "--validation-size", "256", "--test-size", "256",
        "--batch-size", "64", "--hidden-dim", "32",
        "--latent-dim", "16", "--num-visible", "8", "--num-hidden", "8", "--sampler-chains", "32",
        "--log-z-betas", "20", "--log-z-chains", "16", "--generate-sweeps", "10", "--device", "cpu",
        "--fid-samples", "0", "--tsne-interval", "0", "--tsne-final-points", "0", "--no-progress"]
SEARCH_EXPERIMENTS = "/api/2.0/mlflow/experiments/search"


@dataclass(frozen=True)
class AuthServer:
    """A running authenticated server: its URL, its users, and the tmp dir holding everything it writes."""

    url: str
    auth: BasicAuth
    tmp: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """One authenticated `mlflow server` for the module, everything it writes in a pytest tmp dir."""
    tmp = tmp_path_factory.mktemp("auth-server")
    auth = BasicAuth.fresh(tmp / "auth")
    with mlflow_server(f"sqlite:///{tmp / 'mlflow.db'}", tmp / "served-artifacts", tmp / "server.log",
                       auth=auth) as url:
        yield AuthServer(url, auth, tmp)


@pytest.fixture
def as_worker(server: AuthServer, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """This process talks to the server as the worker user, credentials in the environment only."""
    for key, value in server.auth.worker.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    return MlflowClient(tracking_uri=server.url)


@pytest.mark.parametrize("path, body", [
    (SEARCH_EXPERIMENTS, {"max_results": 1}),
    ("/api/2.0/mlflow-artifacts/artifacts", None),  # the served artifacts
    (CREATE_USER, {"username": "intruder", "password": "intruder-password"}),
], ids=["search experiments", "list artifacts", "create a user"])
def test_anonymous_requests_are_refused(server: AuthServer, path: str, body: dict | None):
    status, answer = api(server.url, path, None, body)
    assert status == 401, answer
    assert answers(f"{server.url}/health")  # only the health probe stays open (the project checks reachability on it)


@pytest.mark.parametrize("who", ["worker, wrong password", "admin, MLflow's old default password", "unknown user"])
def test_wrong_credentials_are_refused(server: AuthServer, who: str):
    credentials = {"worker, wrong password": Credentials(server.auth.worker.username, "not-the-password-at-all"),
                   "admin, MLflow's old default password": Credentials(server.auth.admin.username,
                                                                       LEGACY_DEFAULT_ADMIN_PASSWORD),
                   "unknown user": Credentials("nobody", server.auth.worker.password)}[who]
    status, answer = api(server.url, SEARCH_EXPERIMENTS, credentials, {"max_results": 1})
    assert status == 401, answer


def test_the_login_cache_lets_no_wrong_or_changed_password_in(server: AuthServer):
    """The guide turns on MLflow's login cache (`auth_cache_ttl_seconds`). A cached login must not open the
    door to another password of the same user, and a password the admin changes is refused at once (by the
    server process that handled the change; the guide says so for the others)."""
    assert "auth_cache_ttl_seconds = 60" in server.auth.config_path.read_text()
    old = Credentials("rotated", "rotated-password-one")
    new = Credentials(old.username, "rotated-password-two")
    status, answer = api(server.url, CREATE_USER, server.auth.admin, {"username": old.username,
                                                                        "password": old.password})
    assert status == 200, answer
    for _ in range(2):  # the second login is served from the cache
        assert api(server.url, SEARCH_EXPERIMENTS, old, {"max_results": 1})[0] == 200
    assert api(server.url, SEARCH_EXPERIMENTS, new, {"max_results": 1})[0] == 401

    status, answer = api(server.url, UPDATE_PASSWORD, server.auth.admin,
                         {"username": old.username, "password": new.password}, method="PATCH")
    assert status == 200, answer
    assert api(server.url, SEARCH_EXPERIMENTS, old, {"max_results": 1})[0] == 401
    assert api(server.url, SEARCH_EXPERIMENTS, new, {"max_results": 1})[0] == 200


def test_the_admin_logs_in_with_its_own_password(server: AuthServer):
    assert LEGACY_DEFAULT_ADMIN_PASSWORD not in server.auth.config_path.read_text()
    status, answer = api(server.url, SEARCH_EXPERIMENTS, server.auth.admin, {"max_results": 1})
    assert status == 200, answer


def test_the_worker_is_not_an_admin(server: AuthServer):
    status, _ = api(server.url, SEARCH_EXPERIMENTS, server.auth.worker, {"max_results": 1})
    assert status == 200
    status, answer = api(server.url, CREATE_USER, server.auth.worker,
                         {"username": "worker-made", "password": "worker-made-password"})
    assert status == 403, answer


def test_the_worker_creates_a_run_and_logs_to_it(server: AuthServer, as_worker: MlflowClient, tmp_path: Path):
    client = as_worker
    experiment = client.create_experiment("auth-worker")
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "hidden_dim", "32")
    client.log_metric(run.info.run_id, "loss", 1.5, step=1)
    note = tmp_path / "note.txt"
    note.write_text("written by the worker")
    client.log_artifact(run.info.run_id, str(note))
    client.set_terminated(run.info.run_id)

    logged = client.get_run(run.info.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params == {"hidden_dim": "32"} and logged.data.metrics == {"loss": 1.5}
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    assert [f.read_text() for f in (server.tmp / "served-artifacts").rglob("note.txt")] == ["written by the worker"]
    # the Default experiment, where a study's runs go, is writable too (the grant create_worker made)
    client.set_terminated(client.create_run("0").info.run_id)


LOG_ONE_RUN = """
import mlflow
from qvae.tracking.store import prepare_store, tracked_run
prepare_store("auth-uri")
with tracked_run(run_name="from-uri"):
    mlflow.log_param("tracking_uri", mlflow.get_tracking_uri())
"""


def test_a_tracking_uri_carrying_the_credentials_logs_in(server: AuthServer, as_worker: MlflowClient):
    """`http://user:password@host` (the guide allows it) authenticates for real: the project moves the
    credentials into MLflow's variables before anything runs, so no param or message shows the password."""
    worker = server.auth.worker
    env = {k: v for k, v in os.environ.items() if k not in worker.env() and k != "MLFLOW_RUN_ID"}
    env["MLFLOW_TRACKING_URI"] = server.url.replace("http://", f"http://{worker.username}:{worker.password}@")
    proc = subprocess.run([sys.executable, "-c", LOG_ONE_RUN], env=env, capture_output=True, text=True,
                          timeout=GENEROUS_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = as_worker.search_runs([as_worker.get_experiment_by_name("auth-uri").experiment_id])
    assert run.info.user_id == worker.username and run.data.params["tracking_uri"] == server.url
    assert not secrets_found([worker.password], runs=[run], logs={"stdout": proc.stdout, "stderr": proc.stderr})


def test_a_real_run_as_the_worker_records_no_password(server: AuthServer, as_worker: MlflowClient, mnist_dir: Path,
                                                      tmp_path: Path):
    """`qvae run` with the worker's credentials in its environment: it trains, logs and registers its
    model through the authenticated server, and neither password shows in a param, a tag, a metric
    name, an artifact (run and model files) or the process's output."""
    auth = server.auth
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")}
    env.update({"MLFLOW_TRACKING_URI": server.url, **auth.worker.env(), "MLFLOW_DISABLE_TELEMETRY": "true",
                "QVAE_CACHE_DIR": str(tmp_path / "cache"), "TMPDIR": str(tmp_path),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    proc = subprocess.run([sys.executable, "-m", "qvae", "run", "--data-dir", str(mnist_dir), *TINY,
                           "--experiment-name", "auth-run", "--register-model", "qvae-auth"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=GENEROUS_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-5000:]

    client = as_worker
    experiment = client.get_experiment_by_name("auth-run")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and "loss" in run.data.metrics
    assert run.info.user_id == auth.worker.username  # recorded as the worker's run
    version = client.get_registered_model("qvae-auth").latest_versions[0]
    assert version.run_id == run.info.run_id
    downloads = tmp_path / "scan"
    folders = [Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(downloads / "run")))]
    for i, model in enumerate(client.search_logged_models([experiment.experiment_id])):
        folders.append(Path(mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location,
                                                                dst_path=str(downloads / f"model-{i}"))))
    assert len(folders) > 1, "the run logged no model"
    logs = {"stdout": proc.stdout, "stderr": proc.stderr}
    assert secrets_found([run.info.run_id], runs=[run], folders=folders), "the scan sees nothing it should"
    leaks = secrets_found([auth.worker.password, auth.admin.password], runs=[run], logs=logs, folders=folders)
    assert not leaks, leaks
