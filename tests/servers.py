"""Real servers for the tests: a PostgreSQL database per test, an `mlflow server` process.

PostgreSQL comes from `QVAE_TEST_POSTGRES_URL` (a superuser URL; `.ci/run` starts a throwaway
cluster with `.ci/postgres start`); tests that need it skip with the reason when it is unset or
unreachable.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log: Path, timeout: float = GENEROUS_TIMEOUT_S) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 (a free port) with served artifacts; yields its http URL."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    with open(log, "w") as out:
        proc = subprocess.Popen([str(bin_dir / "mlflow"), "server", "--backend-store-uri", backend_uri,
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
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


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
