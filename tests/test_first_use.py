"""First use under a crowd: six processes reach a fresh store at the same instant and must all
succeed, the store and experiment (or study) created once and then shared.

One crowd of processes goes through every store in turn (a fresh SQLite MLflow store with an
experiment, then fresh Optuna studies on a journal file, SQLite and PostgreSQL); before each
store they wait at a barrier, so all six hit it together.
"""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
from mlflow import MlflowClient

from tests.servers import POSTGRES_ENV, fresh_database, postgres_admin_url

PROCESSES = 6

CROWD = """
import sys, time
from pathlib import Path
import mlflow
from qvae.tracking.store import prepare_store
from tuning.study import StudySettings, open_study

me, barrier, stores = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]

def wait_for_all(stage):
    (barrier / f"{stage}.{me}").touch()
    while len(list(barrier.glob(f"{stage}.*"))) < %d:
        time.sleep(0.01)

wait_for_all("mlflow")
prepare_store("crowd")
with mlflow.start_run(run_name=f"p{me}"):
    mlflow.log_param("process", me)
for stage, url in enumerate(stores):
    wait_for_all(f"optuna{stage}")
    study = open_study(StudySettings(study_name="crowd", storage=url), worker=int(me))
    trial = study.ask()
    study.tell(trial, float(me))
print("ok")
""" % PROCESSES


def test_a_crowd_on_fresh_stores(tmp_path):
    import pytest

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    stores = [f"journal:{tmp_path / 'journal.log'}", f"sqlite:///{tmp_path / 'optuna.db'}"]
    with _postgres_or_none() as postgres:
        if postgres:
            stores.append(postgres)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
        env.pop("MLFLOW_RUN_ID", None)
        barrier = tmp_path / "barrier"
        barrier.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", CROWD, str(i), str(barrier), *stores], env=env,
                                  cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for i in range(PROCESSES)]
        outputs = [p.communicate(timeout=240)[0] for p in procs]
        failed = [(p.returncode, out[-2500:]) for p, out in zip(procs, outputs) if p.returncode != 0]
        assert not failed, failed

        client = MlflowClient(tracking_uri=uri)
        experiments = [e for e in client.search_experiments() if e.name == "crowd"]
        assert len(experiments) == 1
        runs = client.search_runs([experiments[0].experiment_id])
        assert sorted(r.data.params["process"] for r in runs) == [str(i) for i in range(PROCESSES)]
        for url in stores:
            _check_study(url)
    if not postgres:
        pytest.skip(f"MLflow, journal and SQLite checked; PostgreSQL skipped ({POSTGRES_ENV} unset or unreachable)")


LOCKER = """
import sys, time
from pathlib import Path
from qvae.tracking.store import file_lock

path, waiting = Path(sys.argv[1]), Path(sys.argv[2])
waiting.touch()
with file_lock(path):
    print(time.time())
"""


def test_file_lock_is_exclusive_across_processes_and_creates_its_folder(tmp_path):
    """A second process waits at `file_lock` until the first leaves its block."""
    import time

    from qvae.tracking.store import file_lock

    lock, waiting = tmp_path / "new" / "folder" / "store.db.lock", tmp_path / "waiting"
    with file_lock(lock):
        assert lock.parent.is_dir()
        child = subprocess.Popen([sys.executable, "-c", LOCKER, str(lock), str(waiting)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not waiting.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)  # the child is at the lock by now, or past it if the lock did not hold
        assert child.poll() is None, child.communicate()
        released = time.time()
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err[-2500:]
    assert float(out.strip().splitlines()[-1]) >= released
    with file_lock(lock):  # released by the child too: a third holder gets in at once
        pass


def _check_study(url: str) -> None:
    from tuning.study import make_storage

    assert [s.study_name for s in optuna.get_all_study_summaries(make_storage(url))] == ["crowd"], url
    study = optuna.load_study(study_name="crowd", storage=make_storage(url))
    assert sorted(t.value for t in study.trials) == [float(i) for i in range(PROCESSES)], url


class _postgres_or_none:
    """A fresh PostgreSQL database URL, or None when there is no server to test against."""

    def __enter__(self) -> str | None:
        import pytest

        try:
            admin = postgres_admin_url()
        except pytest.skip.Exception:
            self.db = None
            return None
        self.db = fresh_database(admin, "crowd")
        return self.db.__enter__()

    def __exit__(self, *exc) -> None:
        if self.db is not None:
            self.db.__exit__(*exc)
