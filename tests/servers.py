"""Real servers for the tests: a PostgreSQL database per test, an `mlflow server` process (optionally
with MLflow's basic authentication), and the scan that proves credentials never reach MLflow or the logs.

PostgreSQL comes from `QVAE_TEST_POSTGRES_URL` (a superuser URL; `.ci/run` starts a throwaway
cluster with `.ci/postgres start`); tests that need it skip with the reason when it is unset or
unreachable.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import GENEROUS_TIMEOUT_S, wait_until

POSTGRES_ENV = "QVAE_TEST_POSTGRES_URL"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sqlalchemy_url(url: str) -> str:
    """`postgresql://` with the psycopg (3) driver named, whatever SQLAlchemy's default is."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url


def postgres_admin_url() -> str:
    """The superuser URL, or a pytest skip saying why there is none."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set (`eval \"$(.ci/postgres start)\"` starts a server; .ci/run does)")
    try:
        import psycopg
    except ImportError as err:
        pytest.skip(f"the PostgreSQL driver is missing: {err} (pip install -e '.[postgres]')")
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as err:
        pytest.skip(f"PostgreSQL at {POSTGRES_ENV} is unreachable: {str(err).strip()[:300]}")
    return url


@contextmanager
def fresh_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database (dropped afterwards); yields its SQLAlchemy URL."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    try:
        yield sqlalchemy_url(f"{base}/{name}")
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def answers(url: str) -> bool:
    """True when `url` answers HTTP 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# ---------------------------------------------------------------- basic authentication
LEGACY_DEFAULT_ADMIN_PASSWORD = "password1234"  # the publicly known admin password older MLflow versions shipped
CREATE_USER = "/api/2.0/mlflow/users/create"
UPDATE_PASSWORD = "/api/2.0/mlflow/users/update-password"  # PATCH
GRANT_PERMISSION = "/api/3.0/mlflow/users/permissions/grant"
DEFAULT_EXPERIMENT = "0"


@dataclass(frozen=True)
class Credentials:
    """A user of an authenticated tracking server."""

    username: str
    password: str

    def env(self) -> dict[str, str]:
        """How a client process gets them: MLflow sends these variables as HTTP basic auth, so they never
        appear in a URI, a command line or a run param."""
        return {"MLFLOW_TRACKING_USERNAME": self.username, "MLFLOW_TRACKING_PASSWORD": self.password}

    def header(self) -> dict[str, str]:
        """The HTTP basic-auth header, for raw REST calls (`api`)."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def new_password() -> str:
    """A random password, long enough for MLflow's policy (at least 12 characters)."""
    return f"pw-{secrets.token_urlsafe(18)}"


@dataclass(frozen=True)
class BasicAuth:
    """`mlflow server --app-name basic-auth` as the guide sets it up: an auth config with a random
    admin password (never MLflow's old default), its user database (SQLite) in `folder`, and a
    separate, non-admin worker user that may write runs into the Default experiment."""

    folder: Path
    admin: Credentials
    worker: Credentials
    default_permission: str = "READ"
    # as the guide sets it (docs/operations.md): a login is checked against its hash once a minute, not on every
    # request (each check made a request take about 1.3 s on a 2-core machine); 0 is MLflow's default, no cache
    auth_cache_ttl_seconds: int = 60

    @classmethod
    def fresh(cls, folder: Path) -> BasicAuth:
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder, Credentials("admin", new_password()), Credentials("qvae-worker", new_password()))

    @property
    def config_path(self) -> Path:
        return self.folder / "basic_auth.ini"

    def write_config(self) -> Path:
        """The auth config (MLFLOW_AUTH_CONFIG_PATH), readable by its owner only: it holds the admin password."""
        assert self.admin.password != LEGACY_DEFAULT_ADMIN_PASSWORD
        self.config_path.write_text(
            "[mlflow]\n"
            f"default_permission = {self.default_permission}\n"
            f"database_uri = sqlite:///{self.folder / 'basic_auth.db'}\n"
            f"admin_username = {self.admin.username}\n"
            f"admin_password = {self.admin.password}\n"
            f"auth_cache_ttl_seconds = {self.auth_cache_ttl_seconds}\n")
        self.config_path.chmod(0o600)
        return self.config_path

    def server_env(self) -> dict[str, str]:
        """What `mlflow server --app-name basic-auth` needs: the config, and a secret key for CSRF."""
        return {"MLFLOW_AUTH_CONFIG_PATH": str(self.write_config()),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}

    def create_worker(self, url: str) -> None:
        """As admin, through the auth REST API: the worker user, and EDIT on the Default experiment
        (where a study's runs go); the experiments and models the worker creates are its own (MANAGE)."""
        status, body = api(url, CREATE_USER, self.admin,
                           {"username": self.worker.username, "password": self.worker.password})
        assert status == 200, (status, body)
        status, body = api(url, GRANT_PERMISSION, self.admin,
                           {"username": self.worker.username, "resource_type": "experiment",
                            "resource_id": DEFAULT_EXPERIMENT, "permission": "EDIT"})
        assert status == 200, (status, body)


def api(url: str, path: str, who: Credentials | None, body: dict[str, Any] | None = None,
        method: str | None = None) -> tuple[int, Any]:
    """One REST call (`method`; default POST with a JSON body, else GET) as `who` (None: anonymous);
    (HTTP status, parsed body)."""
    headers = {"Content-Type": "application/json", **(who.header() if who else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}{path}", data=data, headers=headers,
                                     method=method or ("POST" if data else "GET"))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log: Path, timeout: float = GENEROUS_TIMEOUT_S, *,
                  auth: BasicAuth | None = None, env: dict[str, str] | None = None) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 (a free port) with served artifacts; yields its http URL.

    Its temporary files (MLflow leaves a lock file per database there) go to a folder beside `log`.
    With `auth` it runs MLflow's basic authentication (`--app-name basic-auth`), and the worker user
    exists before the URL is yielded; clients then pass `auth.worker.env()` (or `auth.admin`).
    `env`: more environment variables for the server process."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    scratch = log.with_name(f"{log.stem}-tmp")
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "TMPDIR": str(scratch), **(auth.server_env() if auth else {}), **(env or {})}
    app = ["--app-name", "basic-auth"] if auth else []
    with open(log, "w") as out:
        proc = subprocess.Popen([str(bin_dir / "mlflow"), "server", *app, "--backend-store-uri", backend_uri,
                                 "--serve-artifacts", "--artifacts-destination", artifacts.as_uri(),
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until(lambda: answers(f"{url}/health"), "mlflow server's /health", process=proc, timeout=timeout,
                       poll=0.5)
        except AssertionError as err:
            raise RuntimeError(f"{err}\n{log.read_text()[-3000:]}") from None
        if auth:
            auth.create_worker(url)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


# ---------------------------------------------------------------- credentials never recorded
def secrets_found(secret_values: Sequence[str], *, runs: Iterable[Any] = (), logs: dict[str, str] | None = None,
                  folders: Iterable[Path] = ()) -> list[str]:
    """Where any of `secret_values` shows up: a run's params, tags or metric names (keys and values),
    a process's output in `logs` (name -> text), or any file under `folders` (downloaded artifacts,
    read as bytes so pickles and checkpoints count). Empty when nowhere; each hit names its place."""
    assert all(secret_values), "an empty secret would match everywhere"
    found = []
    for run in runs:
        recorded = repr(sorted(run.data.params.items())) + repr(sorted(run.data.tags.items())) + repr(
            sorted(run.data.metrics))
        found += [f"run {run.info.run_id}: params, tags or metric names" for s in secret_values if s in recorded]
    for name, text in (logs or {}).items():
        found += [f"log {name}" for s in secret_values if s in text]
    for folder in folders:
        files = [f for f in Path(folder).rglob("*") if f.is_file()]
        assert files, f"nothing to scan under {folder}"
        for f in files:
            content = f.read_bytes()
            found += [str(f) for s in secret_values if s.encode() in content]
    return found


# ---------------------------------------------------------------- a second SQLite writer
HOLD = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
db.execute("BEGIN IMMEDIATE")  # the write lock, as a writer in the middle of a transaction holds it
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
db.rollback()
"""
MLFLOW_BUSY_TIMEOUT_S = 20  # the PRAGMA busy_timeout MLflow sets on every SQLite session


def hold_write_lock(db, seconds: float) -> subprocess.Popen:
    """Another process that holds the database's write lock for `seconds`, from when this returns."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def writable_now(db) -> bool:
    connection = sqlite3.connect(db, timeout=0)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.rollback()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()
