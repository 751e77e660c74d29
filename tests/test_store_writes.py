"""Writes to the tracking store against a real second writer on the same SQLite file.

A second process holds SQLite's write lock (BEGIN IMMEDIATE), as an interrupted trial, a worker
or another study would; MLflow gives up after its own 20 s busy timeout, store_write waits it out.
A Ctrl-C that arrives inside a write takes effect after it, so it can never leave the database
locked or a write half done.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from qvae.tracking.store import end_active_run, store_busy, store_write, tracked_run
from tests.servers import MLFLOW_BUSY_TIMEOUT_S, hold_write_lock, writable_now


@pytest.fixture(scope="module")
def db(tracking_store):
    return tracking_store / "mlflow.db"


def test_a_write_outlasts_a_lock_longer_than_mlflows_own_busy_timeout_and_ends_the_right_run(db, caplog):
    """The write is the end of a study's trial: a nested run. mlflow.end_run takes the run off the
    active-run stack before it writes, so a plain retry would end the parent and leave the trial
    RUNNING (as CI once saw after a Ctrl-C). The retry ends the trial; the parent goes on."""
    client = MlflowClient()
    with tracked_run(run_name="study") as parent:
        with caplog.at_level(logging.WARNING, logger="qvae.tracking.store"):
            with tracked_run(run_name="trial", nested=True) as trial:
                holder = hold_write_lock(db, MLFLOW_BUSY_TIMEOUT_S + 5)
        holder.wait()
        assert "store busy" in caplog.text  # MLflow's own attempt failed: the retry did the work
        assert client.get_run(trial.info.run_id).info.status == "FINISHED"
        assert client.get_run(parent.info.run_id).info.status == "RUNNING"
        assert mlflow.active_run().info.run_id == parent.info.run_id
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_a_run_someone_already_ended_is_left_as_it_is(db):
    """A study a person stopped ends its run KILLED itself; leaving the block must not overwrite that."""
    with tracked_run(run_name="study") as run:
        end_active_run(run.info.run_id, "KILLED")
        assert mlflow.active_run() is None
    assert MlflowClient().get_run(run.info.run_id).info.status == "KILLED"


@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler, even where the test runner was started with SIGINT ignored
    (a background job of a non-interactive shell, as CI may be)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_inside_a_write_takes_effect_after_the_write(db, ctrl_c_raises):
    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    holder = hold_write_lock(db, 3)
    writing = threading.Event()

    def interrupt_the_write() -> None:
        writing.wait()
        os.kill(os.getpid(), signal.SIGINT)

    def write() -> None:
        writing.set()  # the main thread handles the signal inside this call, blocked on the lock
        client.set_tag(run_id, "written", "before the interrupt")

    sender = threading.Thread(target=interrupt_the_write)
    sender.start()
    with pytest.raises(KeyboardInterrupt):
        store_write(write)
    sender.join()
    holder.wait()
    assert client.get_run(run_id).data.tags["written"] == "before the interrupt"
    assert writable_now(db)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_retries_are_bounded_and_only_for_a_busy_store():
    calls = []

    def always_busy() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError):
        store_write(always_busy, attempts=3)
    assert len(calls) == 3

    def refused() -> None:
        calls.append(1)
        raise MlflowException("RESOURCE_ALREADY_EXISTS: name taken")

    calls.clear()
    with pytest.raises(MlflowException):
        store_write(refused)
    assert len(calls) == 1  # not a busy store: no retry


def test_busy_is_recognised_as_mlflow_and_sqlite_report_it():
    assert store_busy(sqlite3.OperationalError("database is locked"))
    assert store_busy(MlflowException("(sqlite3.OperationalError) database is locked",
                                      error_code="TEMPORARILY_UNAVAILABLE"))
    assert not store_busy(MlflowException("RESOURCE_DOES_NOT_EXIST", error_code="RESOURCE_DOES_NOT_EXIST"))
    assert not store_busy(ValueError("bad value"))
