"""The MLflow side of robustness (part of the tracking layer, with tracking.py).

- First use: many processes starting at once on a fresh SQLite store create it once (under a
  file lock) and share it; an experiment created concurrently is looked up, not failed on.
- An unreachable tracking server fails fast, before any data is loaded or anything trained.
- Credentials in an http(s) tracking URI move to MLflow's username/password variables, so the
  password never shows in MLflow's messages, logs or the environment of child processes' URIs.
- Resume: a run killed mid-training continues from its last logged checkpoint, in the same run.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import mlflow
from filelock import FileLock
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from qvae.config import RESUME_MAY_DIFFER, Config, ConfigError, params_with_preset

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 10.0
CHECKPOINT_ARTIFACT = "checkpoints/last.pt"
T = TypeVar("T")


def redact(url: str) -> str:
    """A storage or tracking URL with any password replaced, safe to print or log."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


# ---------------------------------------------------------------- first use
@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (created if missing, with its folder) for the block's duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):  # waits as long as another process holds it
        yield


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    return None


def prepare_store(experiment_name: str = "") -> str | None:
    """Make the tracking store usable (created once, even with many processes starting together)
    and, given a name, the experiment set; returns the experiment id (None: the default)."""
    uri = hide_tracking_credentials()
    check_tracking_server(uri)
    db = _sqlite_path(uri)
    lock = file_lock(db.with_name(db.name + ".lock")) if db else contextlib.nullcontext()
    with lock:  # migrations of a fresh SQLite file must run in one process only
        MlflowClient().search_experiments(max_results=1)
        return set_experiment(experiment_name) if experiment_name else None


def hide_tracking_credentials() -> str:
    """Move `user:password@` out of an http(s) tracking URI into MLFLOW_TRACKING_USERNAME/PASSWORD
    (which MLflow sends as basic auth), so no message, log or child process sees the password;
    returns the tracking URI now in use."""
    uri = mlflow.get_tracking_uri()
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or parts.username is None:
        return uri
    os.environ["MLFLOW_TRACKING_USERNAME"] = urllib.parse.unquote(parts.username)
    os.environ["MLFLOW_TRACKING_PASSWORD"] = urllib.parse.unquote(parts.password or "")
    clean = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    os.environ["MLFLOW_TRACKING_URI"] = clean
    mlflow.set_tracking_uri(clean)
    return clean


RACE_MARKERS = ("already exists", "integrity", "unique constraint", "duplicate key", "uniqueviolation")
BUSY_MARKERS = ("database is locked", "database table is locked", "temporarily_unavailable")
WRITE_ATTEMPTS = 5  # MLflow itself waits 20 s (SQLite busy_timeout) inside each attempt
FIRST_BACKOFF_S = 0.5


def lost_creation_race(err: Exception) -> bool:
    """True when `err` says another process created the same table, experiment or study first."""
    text = f"{type(err).__name__}: {err}".lower()
    return any(marker in text for marker in RACE_MARKERS)


def store_busy(err: Exception) -> bool:
    """True when `err` says another writer holds the store (SQLite's "database is locked", which
    MLflow reports as TEMPORARILY_UNAVAILABLE): the same write can succeed a moment later."""
    text = f"{type(err).__name__}: {err} {getattr(err, 'error_code', '')}".lower()
    return any(marker in text for marker in BUSY_MARKERS)


_deferring = False


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block take effect when it ends.

    A KeyboardInterrupt raised in the middle of an MLflow write to SQLite can leave a connection
    holding the database's write lock; every later write, the champion's registration included,
    then fails with "database is locked". Store writes are short, so deferring costs no
    responsiveness. Only the main thread receives signals; elsewhere this does nothing.
    """
    global _deferring
    if _deferring or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    if any(handler is None for handler in previous.values()):  # installed outside Python: leave it alone
        yield
        return
    received: list[int] = []
    for sig in previous:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(received):
            signal.raise_signal(sig)  # delivered now, to the handler that was in place before


def store_write(action: Callable[..., T], *args: Any, retry_if: Callable[[Exception], bool] = store_busy,
                attempts: int = WRITE_ATTEMPTS, **kwargs: Any) -> T:
    """`action(*args, **kwargs)`: one write to a tracking or study store, never cut by Ctrl-C
    (deferred_interrupts) and run again with a doubling pause (0.5, 1, 2, 4 s) while
    `retry_if(error)` says the store was only busy (or, for creations, another process won).
    Every write of the project goes through here."""
    for attempt in range(attempts):
        try:
            with deferred_interrupts():
                return action(*args, **kwargs)
        except Exception as err:
            if attempt == attempts - 1 or not retry_if(err):
                raise
            pause = FIRST_BACKOFF_S * 2 ** attempt
            log.warning("store busy or raced (%s); retrying %s in %.1f s",
                        str(err).splitlines()[0][:200], getattr(action, "__name__", "the write"), pause)
            time.sleep(pause)
    raise AssertionError("unreachable")


def creation_raced(err: Exception) -> bool:
    return lost_creation_race(err) or store_busy(err)


def log_input_once(dataset: Any, context: str) -> None:
    """`mlflow.log_input` on the active run, safe when runs in other processes log the same dataset
    at the same moment (a study's workers starting their trials): MLflow looks the dataset up, then
    inserts it, so all but one of them can hit its unique key (measured: 3 of 4 processes through a
    server on PostgreSQL). The retry finds it and only links it to this run."""
    store_write(mlflow.log_input, dataset, context=context, retry_if=creation_raced)


def flush_pending_writes() -> None:
    """Wait for MLflow's asynchronous logging queues (MLFLOW_ENABLE_ASYNC_LOGGING) to drain."""
    mlflow.flush_async_logging()
    mlflow.flush_artifact_async_logging()


@contextlib.contextmanager
def tracked_run(**start_kwargs: Any) -> Iterator[Any]:
    """`mlflow.start_run(**start_kwargs)` whose start and end are store writes (store_write).
    The run ends KILLED when a person stopped it (Ctrl-C), FAILED on an error, else FINISHED,
    and it has ended, its writes done, before the caller goes on (e.g. to register a model)."""
    run = store_write(mlflow.start_run, **{"log_system_metrics": system_metrics_wanted(), **start_kwargs})
    status = "FINISHED"
    try:
        yield run
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        end_active_run(run.info.run_id, status)


def end_active_run(run_id: str, status: str) -> None:
    """End run `run_id` with `status` if it is the fluent API's active run (else it has ended already).

    A store write that is safe to retry: `mlflow.end_run` takes the run off the active-run stack
    *before* it writes the status, so calling it again after the store refused that write would
    end the run below it (a study's parent run) and leave this one RUNNING for good. Only the
    write is repeated here.
    """
    active = mlflow.active_run()
    if active is None or active.info.run_id != run_id:
        return
    taken_off_the_stack = False

    def end() -> None:
        nonlocal taken_off_the_stack
        if not taken_off_the_stack:
            taken_off_the_stack = True
            mlflow.end_run(status)
            return
        MlflowClient().set_terminated(run_id, status)
        monitors = getattr(mlflow.tracking.fluent, "run_id_to_system_metrics_monitor", {})
        if run_id in monitors:  # what mlflow.end_run does after the write it could not make
            monitors.pop(run_id).finish()

    store_write(end)


SYSTEM_METRICS_ENV = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"


def system_metrics_wanted() -> bool | None:
    """MLflow's system metrics (CPU/GPU utilisation and memory, `system/*`) for every run when psutil
    is installed (pynvml, i.e. nvidia-ml-py, adds the GPU's): an idle GPU shows at once. Setting
    MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING decides instead (None: MLflow reads it)."""
    import importlib.util

    if os.environ.get(SYSTEM_METRICS_ENV) is not None:
        return None
    return True if importlib.util.find_spec("psutil") is not None else None


def set_experiment(name: str) -> str:
    """`mlflow.set_experiment`, tolerating another process creating the same experiment."""
    return store_write(lambda: mlflow.set_experiment(name).experiment_id, retry_if=creation_raced, attempts=6)


def check_tracking_server(uri: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """For an http(s) tracking URI, one quick request to its /health; ConfigError when it fails."""
    uri = uri or mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    parts = urllib.parse.urlsplit(uri)
    user = urllib.parse.unquote(parts.username) if parts.username else os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = (urllib.parse.unquote(parts.password or "") if parts.username
                else os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
    headers = {}
    if user:  # basic auth as MLflow sends it (urllib does not take credentials from the URL)
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])
    request = urllib.request.Request(urllib.parse.urlunsplit(parts).rstrip("/") + "/health", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as err:
        if err.code < 500:  # the server answers (e.g. 401/404 behind a proxy): reachable
            return
        reason = f"HTTP {err.code}"
    except (OSError, ValueError) as err:
        reason = str(getattr(err, "reason", err))
    raise ConfigError(f"tracking_uri {redact(uri)} (MLFLOW_TRACKING_URI) is unreachable: {reason}; "
                      f"accepted: a running MLflow server, a sqlite:/// or file store")


# ---------------------------------------------------------------- resume
def check_resume(run_id: str, config: Config) -> str:
    """The run to continue must exist, hold a checkpoint, and have been logged with this config
    (`Config.resume_mismatches`: all but epochs and device); returns the artifact path of its last checkpoint."""
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise ConfigError(f"resume must be the id of an existing MLflow run in {redact(mlflow.get_tracking_uri())}; "
                          f"no run {run_id!r} ({err.error_code})") from None
    names = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    if CHECKPOINT_ARTIFACT not in names:
        raise ConfigError(f"resume: run {run_id} has no {CHECKPOINT_ARTIFACT} artifact (it stopped before its "
                          f"first epoch ended); accepted: a run with at least one logged checkpoint")
    logged = params_with_preset(run.data.params)  # `mlflow run` logged "" for the fields its preset set
    differ = config.resume_mismatches(logged)
    if differ:
        detail = ", ".join(f"{k}: logged {logged.get(k)}, given {getattr(config, k)}" for k in differ)
        raise ConfigError(f"resume: the config must equal run {run_id}'s logged params except "
                          f"{', '.join(RESUME_MAY_DIFFER)}; {detail}")
    return CHECKPOINT_ARTIFACT


PREVIOUS_CHECKPOINT_ARTIFACT = "checkpoints/previous.pt"  # the epoch before, the fallback of a damaged last.pt


def download_checkpoint(run_id: str, directory: Path) -> Path:
    """The run's last checkpoint, downloaded with the previous epoch's beside it when the run has one
    (train.load_resumable falls back to it)."""
    directory.mkdir(parents=True, exist_ok=True)
    names = {a.path for a in MlflowClient().list_artifacts(run_id, "checkpoints")}
    if PREVIOUS_CHECKPOINT_ARTIFACT in names:
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=PREVIOUS_CHECKPOINT_ARTIFACT,
                                            dst_path=str(directory))
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CHECKPOINT_ARTIFACT,
                                                    dst_path=str(directory)))


def missing_metric_steps(run_id: str, history: list[dict[str, float]]) -> list[tuple[int, dict[str, float]]]:
    """Epochs of a checkpoint's history whose metrics the run lacks (killed between logging the
    checkpoint and its metrics): re-logging them leaves no gap and no duplicate step."""
    logged = {m.step for m in MlflowClient().get_metric_history(run_id, "loss")}
    return [(epoch, metrics) for epoch, metrics in enumerate(history, start=1) if epoch not in logged]


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"  # the MLflow UI's "Machine learning" view


def mark_model_training(experiment_id: str) -> None:
    """Tag the experiment as model training (`mlflow.experimentKind`), the kind MLflow records for
    runs, charts and artifacts rather than traces; a kind someone already chose is kept. MLflow 3.17's
    UI does not read the tag yet (mlflow/mlflow#24498): it opens on its GenAI view until the user picks
    "Model training" (tests/test_ui_browser.py pins that down, as an expected failure)."""
    client = MlflowClient()
    if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
        store_write(client.set_experiment_tag, experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
